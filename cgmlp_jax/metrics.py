"""Where metrics go: console, TensorBoard (clu) and ``workdir/metrics.jsonl``; process 0 only.

Each JSONL line is ``{"step": int, "split": "train"|"val"|"test", <metric>: float, ...}``, the
format ``cgmlp_jax.tools.report`` reads. A line cut by a crash or a full disk is set aside when the next
start opens the file (``set_aside_partial_line``), so nothing is appended onto it.
"""
import json
import os
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
    if self.enabled:
      set_aside_partial_line(workdir / "metrics.jsonl")
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


def set_aside_partial_line(path: epath.Path) -> epath.Path | None:
  """Ends ``path`` after its last complete line before anything is appended; returns the side
  file the cut line was moved to, if any.

  A crash or a full disk can cut the last line short. Appending onto it would join it to the next
  record: one unreadable line in the middle of the file, and the next record lost with it. A cut
  line that is a whole JSON record (only its newline missing) gets its newline instead.
  """
  if not path.exists():
    return None
  data = path.read_bytes()
  if not data or data.endswith(b"\n"):
    return None
  complete, tail = data[:data.rfind(b"\n") + 1], data[data.rfind(b"\n") + 1:]
  try:
    json.loads(tail)
  except ValueError:
    pass
  else:
    with path.open("a") as f:
      f.write("\n")
    return None
  n = 1
  while (side := path.with_name(f"{path.name}.partial-{n}")).exists():
    n += 1
  side.write_bytes(tail)
  if "://" in str(path):
    path.write_bytes(complete)
  else:
    os.truncate(path, len(complete))
  print(f"{path} ended in a partial line (a crash while writing it); it is kept in {side.name} "
        f"and the file goes on after the last complete line.", flush=True)
  return side
