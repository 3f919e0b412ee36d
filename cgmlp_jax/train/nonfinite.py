"""Non-finite train steps, as the loop reads them from the train metrics every log window.

A non-finite step never reaches the state (``step.py``). Unless ``skip_nonfinite_steps``, the first
one stops the run, naming it. When they are skipped, a run whose last ``skip_nonfinite_limit`` steps
were all skipped stops too: it no longer trains (a non-finite learning rate, parameters from which
every step overflows), and would otherwise "succeed" with checkpoints, a ``best/`` and a summary
that all hold the state from before the first skip.
"""
from etils import epath

from cgmlp_jax.errors import UserError


class NonFiniteError(UserError, FloatingPointError):
  """Training stopped on non-finite steps; the checkpoints hold the last good state."""


class NonfiniteSteps:
  """Takes the non-finite counters out of each window's metric sums, and stops the run on them."""

  def __init__(self, skip: bool, limit: int, start_step: int):
    self.skip, self.limit = skip, limit
    self.last_finite = start_step  # before the start: unknown, so counted as finite

  def read(self, sums: dict[str, float], step: int, latest_checkpoint: int | None,
           workdir: epath.Path) -> dict[str, float]:
    """``sums`` without the counters (``skipped_steps`` added if any were skipped); raises
    ``NonFiniteError`` when the run is to stop. ``step``: the last step the sums include."""
    skipped, first = int(sums.pop("nonfinite")), int(sums.pop("first_nonfinite_step"))
    self.last_finite = max(self.last_finite, int(sums.pop("last_finite_step")))
    if skipped and not self.skip:
      raise NonFiniteError(
          f"Non-finite loss or gradients at step {first} ({skipped} such step(s) up to step "
          f"{step}). Nothing was saved after it: the latest checkpoint (step {latest_checkpoint}) "
          f"in {workdir} holds the last good state. Lower optimizer.learning_rate, keep "
          f"optimizer.grad_clip_norm > 0, or set --config.skip_nonfinite_steps=True to skip such "
          f"steps.")
    if self.skip and step - self.last_finite >= self.limit:
      raise NonFiniteError(
          f"The last {step - self.last_finite} steps (to step {step}) were all non-finite and "
          f"skipped: the run no longer trains. Its checkpoints (the latest: step "
          f"{latest_checkpoint}, in {workdir}) hold the state of step {self.last_finite}. Lower "
          f"optimizer.learning_rate or keep optimizer.grad_clip_norm > 0, or raise "
          f"--config.skip_nonfinite_limit={self.limit}.")
    return {**sums, "skipped_steps": float(skipped)} if skipped else sums
