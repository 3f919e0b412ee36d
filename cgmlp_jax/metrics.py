"""Where metrics go: console, TensorBoard (clu) and ``workdir/metrics.jsonl``; process 0 only.

Each JSONL line is ``{"step": int, "split": "train"|"val"|"test", <metric>: float, ...}``, the
format ``cgmlp_jax.tools.report`` reads.
"""
import json
from typing import Mapping

import jax
from clu import metric_writers
from etils import epath


class MetricsLogger:
  def __init__(self, workdir: str | epath.PathLike):
    self.enabled = jax.process_index() == 0
    workdir = epath.Path(workdir)
    self._writer = metric_writers.create_default_writer(
        str(workdir / "tensorboard"), just_logging=not self.enabled, asynchronous=True)
    self._jsonl = (workdir / "metrics.jsonl").open("a") if self.enabled else None

  def write(self, step: int, split: str, values: Mapping[str, float]) -> None:
    values = {k: float(v) for k, v in values.items()}
    self._writer.write_scalars(step, {f"{split}/{k}": v for k, v in values.items()})
    if self._jsonl:
      self._jsonl.write(json.dumps({"step": step, "split": split, **values}) + "\n")
      self._jsonl.flush()

  def info(self, message: str) -> None:
    if self.enabled:
      print(message, flush=True)

  def close(self) -> None:
    self._writer.flush()
    self._writer.close()
    if self._jsonl:
      self._jsonl.close()
