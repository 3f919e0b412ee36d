"""SIGTERM / SIGINT (preemption, Ctrl-C) as a request the loop honours between two steps.

The handler only sets a flag, so a step in flight completes and the loop saves a checkpoint before
exiting; a second Ctrl-C aborts at once (``errors.Aborted``: one line naming the last checkpoint,
exit status 130, where it used to be a KeyboardInterrupt's traceback). In a multi-process run every
process must stop at the same step (checkpoint saves are collective), so there the flag is agreed
on by an all-gather, which is a host sync: it happens only every ``sync_every`` steps (the loop
passes its logging interval).
"""
import signal
import threading

import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from cgmlp_jax.train import restore
from cgmlp_jax.errors import Aborted

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
  """Training stopped on a signal after saving a checkpoint; running again resumes from it."""

  def __init__(self, signum: int, message: str):
    super().__init__(message)
    self.signum = signum


class StopRequests:
  """Context manager: while active, SIGTERM/SIGINT set ``signum`` instead of killing the process."""

  def __init__(self, process_count: int = 1, sync_every: int = 1,
               checkpoints: epath.Path | None = None):
    """``checkpoints``: the directory whose newest checkpoint an abort names."""
    self.signum: int | None = None
    self._process_count, self._sync_every = process_count, sync_every
    self._checkpoints = checkpoints
    self._previous = {}

  def _aborted_message(self) -> str:
    steps = restore.checkpoint_steps(self._checkpoints) if self._checkpoints else []
    last = (f"the last checkpoint is step {steps[-1]} in {self._checkpoints}; run the same "
            f"command to resume from it" if steps else "there is no checkpoint yet")
    return f"Aborted without saving; {last}."

  def _handle(self, signum, frame):
    if signum == signal.SIGINT and self.signum == signal.SIGINT:
      # Second Ctrl-C: the user does not want to wait for the save.
      raise Aborted(self._aborted_message)
    self.signum = signum
    print(f"Received {signal.Signals(signum).name}: stopping after this step, once a checkpoint "
          f"is saved (Ctrl-C again to abort without saving).", flush=True)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # signals only reach the main one
      for signum in SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def requested(self, step: int) -> int | None:
    """The signal to stop on after ``step``, or None; the same answer on every process."""
    if self._process_count == 1:
      return self.signum
    if step % self._sync_every:
      return None
    signums = multihost_utils.process_allgather(np.int32(self.signum or 0))
    return int(np.max(signums)) or None
