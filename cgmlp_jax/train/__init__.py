"""Training: config schema, optimiser, state, steps, checkpoints and the loop."""
from cgmlp_jax.train.checkpoint import CheckpointError
from cgmlp_jax.train.interrupts import Interrupted
from cgmlp_jax.train.loop import train_and_evaluate
from cgmlp_jax.train.workdir import WorkdirError

__all__ = ["CheckpointError", "Interrupted", "WorkdirError", "train_and_evaluate"]
