"""Training: config schema, optimiser, state, steps, checkpoints and the loop."""
from cgmlp_jax.train.loop import train_and_evaluate

__all__ = ["train_and_evaluate"]
