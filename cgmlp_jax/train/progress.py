"""A run's record between steps, saved beside the state in every checkpoint so that a resumed run
continues it exactly: the per-epoch history, early stopping, the current epoch's train-metric sums
so far (a resumed run reports the same per-epoch train metrics as an uninterrupted one), and the
training time of earlier starts."""
import collections
import time
from typing import Any

import ml_collections

from cgmlp_jax.train.early_stopping import EarlyStopping


class Progress:

  def __init__(self, config: ml_collections.ConfigDict, saved: dict[str, Any] | None = None):
    saved = saved or {}
    self.history: list[dict[str, Any]] = saved.get("history", [])
    self.stopper = EarlyStopping(**config.early_stopping.to_dict(),
                                 **saved.get("early_stopping", {}))
    self.epoch_sums = collections.Counter(saved.get("train_sums", {}))  # this epoch's, so far
    self._earlier_s = saved.get("wall_time_s", 0.0)
    self._start = time.perf_counter()

  def elapsed(self) -> float:
    """Training seconds, earlier starts included."""
    return self._earlier_s + time.perf_counter() - self._start

  def add_window(self, sums: dict[str, float]) -> None:
    self.epoch_sums.update(sums)

  def end_epoch(self, record: dict[str, Any]) -> None:
    self.history.append(record)
    self.epoch_sums = collections.Counter()

  def saved(self, step: int, steps_per_epoch: int,
            unread: dict[str, float] | None = None) -> dict[str, Any]:
    """What a checkpoint at ``step`` stores; mid-epoch, the epoch's train sums so far include the
    ``unread`` sums of the current logging window."""
    sums = self.epoch_sums + collections.Counter(unread or {})
    return {"history": self.history, "early_stopping": self.stopper.state_dict(),
            "epoch": step // steps_per_epoch, "step_in_epoch": step % steps_per_epoch,
            "wall_time_s": self.elapsed(),
            "train_sums": ({k: float(v) for k, v in sums.items()}
                           if step % steps_per_epoch else {})}
