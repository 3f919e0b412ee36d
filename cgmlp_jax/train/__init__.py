"""Training: config schema, optimiser, state, steps, checkpoints and the loop.

``train_and_evaluate`` is loaded on first use (PEP 562), so that tools importing one piece of
``cgmlp_jax.train`` (``init_from``, ``config``) do not load the loop: only ``launch.py``, tests and
notebooks reach it (ARCHITECTURE.md).
"""
from cgmlp_jax.train.checkpoint import CheckpointError
from cgmlp_jax.train.interrupts import Interrupted
from cgmlp_jax.train.workdir import WorkdirError

__all__ = ["CheckpointError", "Interrupted", "WorkdirError", "train_and_evaluate"]


def __getattr__(name):
  if name == "train_and_evaluate":
    from cgmlp_jax.train.loop import train_and_evaluate  # noqa: PLC0415
    return train_and_evaluate
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
