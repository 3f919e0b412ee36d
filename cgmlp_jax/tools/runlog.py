"""One training run's history read from its workdir, whether the run has finished or is going.

Runs are compared while they train, so nothing here needs ``summary.json`` (written only at the
end). Per-epoch values come from ``metrics.jsonl``: validation lines are written at epoch ends,
each with a train line at the same step whose top-1 is the mean over the logging window ending
there. Wall-clock times are not in ``metrics.jsonl``; they come from the epoch history of
``summary.json``, or while the run is going from the history the newest checkpoint carries, and
are None when neither exists.

Lines are keyed by (split, step), later lines winning: a run resumed from a checkpoint logs the
steps after it again, and the resumed values are the ones that led to the current state.
"""
import dataclasses
import json
import math
import os
import sys
from typing import Any

from cgmlp_jax.train import restore


@dataclasses.dataclass
class Epoch:
  epoch: int
  step: int
  val: dict[str, float]  # loss, top1, top5; empty without a validation set
  train: dict[str, float]  # the epoch's train means; empty if missing
  wall_time_s: float | None  # training time so far, as the trainer recorded it


@dataclasses.dataclass
class RunLog:
  name: str
  workdir: str
  config: dict[str, Any]
  finished: bool
  steps_per_epoch: int | None  # None when no epoch has ended yet
  epochs: list[Epoch]
  train: list[dict[str, float]]  # every train line, in step order
  images_per_sec: list[float]  # every train window that does not include compilation
  test: dict[str, float] | None


def _read_jsonl(path: str) -> list[dict[str, Any]]:
  """The records of a metrics.jsonl; a partial last line (no newline: a trainer is writing it, or
  was cut off while writing it) is skipped with a warning, any other bad line is an error naming
  its line number."""
  with open(path) as f:
    text = f.read()
  lines = text.split("\n")
  records = []
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:  # after the last newline
        print(f"warning: {path}:{i + 1} is a partial line (being written, or cut off by a "
              f"crash); skipped.", file=sys.stderr, flush=True)
        break
      raise ValueError(f"{path}:{i + 1} is not a JSON object: {e}") from None
    if not isinstance(record, dict):
      raise ValueError(f"{path}:{i + 1} is not a JSON object: {line[:80]}")
    records.append(record)
  return records


def _read_json(path: str) -> Any:
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def _history(workdir: str, summary: dict | None) -> list[dict[str, Any]]:
  if summary is not None:
    return summary.get("history", [])
  steps = restore.checkpoint_steps(os.path.join(workdir, "checkpoints"))
  if not steps:
    return []
  try:
    return restore.read_progress(os.path.join(workdir, "checkpoints", str(steps[-1])))["history"]
  except (OSError, ValueError, KeyError):  # deleted by rotation while being read, or foreign
    return []


def _steps_per_epoch(history: list[dict], val_steps: list[int]) -> int | None:
  for record in history:
    if record.get("epoch"):
      return record["step"] // record["epoch"]
  # Validation runs at every epoch end: steps k * steps_per_epoch, so their gcd is one epoch.
  return math.gcd(*val_steps) if val_steps else None


def _window_mean(train: dict[int, dict], start: int, end: int) -> dict[str, float]:
  """The train lines of steps ``start+1 .. end`` combined into the epoch's means: each line is the
  mean over the steps since the previous line, so each is weighted by that many steps (the epoch's
  last window is often short). Other values (lr, images/s) are the last line's."""
  steps = sorted(s for s in train if start < s <= end)
  if not steps:
    return {}
  weights = [b - a for a, b in zip([start] + steps, steps)]
  means = {k: sum(w * train[s][k] for w, s in zip(weights, steps)) / sum(weights)
           for k in ("loss", "top1", "top5") if all(k in train[s] for s in steps)}
  return {**train[steps[-1]], **means}


def read(workdir: str) -> RunLog:
  """Reads ``workdir``; ValueError naming the path if it is not a training workdir."""
  metrics_path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.isdir(workdir):
    raise ValueError(f"Workdir {workdir} does not exist.")
  if not os.path.isfile(metrics_path):
    raise ValueError(f"{workdir} is not a training workdir: it has no metrics.jsonl "
                     f"(expected {metrics_path}, written by cgmlp_jax.train).")
  config = _read_json(os.path.join(workdir, "config.json")) or {}
  summary = _read_json(os.path.join(workdir, "summary.json"))

  by_split: dict[str, dict[int, dict]] = {"train": {}, "val": {}, "test": {}}
  images_per_sec, last_train_step = [], None
  for record in _read_jsonl(metrics_path):
    split, step = record.get("split"), record.get("step")
    if split not in by_split or not isinstance(step, int):
      raise ValueError(f"{metrics_path}: unexpected line {record} (needs an int 'step' and a "
                       f"'split' in {sorted(by_split)}).")
    values = {k: v for k, v in record.items() if k not in ("split", "step")}
    by_split[split][step] = values
    if split == "train":
      # The first window after a (re)start includes compilation: the first line, or a step not
      # beyond the last one seen (a resume logs those steps again).
      if last_train_step is not None and step > last_train_step and "images_per_sec" in values:
        images_per_sec.append(values["images_per_sec"])
      last_train_step = step if last_train_step is None else max(step, last_train_step)

  history = _history(workdir, summary)
  wall_times = {r["step"]: r.get("wall_time_s") for r in history}
  # Whole-epoch train means, where the trainer recorded them; else the logged windows' mean.
  epoch_train = {r["step"]: {k[len("train_"):]: v for k, v in r.items() if k.startswith("train_")}
                 for r in history}
  spe = _steps_per_epoch(history, sorted(by_split["val"]))
  epochs = [Epoch(epoch=step // spe, step=step, val=by_split["val"].get(step, {}),
                  train=epoch_train.get(step) or _window_mean(by_split["train"], step - spe, step),
                  wall_time_s=wall_times.get(step))
            for step in sorted(set(by_split["val"]) | set(wall_times))] if spe else []
  test = summary.get("test") if summary else None
  if test is None and by_split["test"]:
    test = by_split["test"][max(by_split["test"])]
  return RunLog(
      name=os.path.basename(os.path.normpath(workdir)), workdir=workdir, config=config,
      finished=summary is not None, steps_per_epoch=spe, epochs=epochs,
      train=[dict(step=s, **v) for s, v in sorted(by_split["train"].items())],
      images_per_sec=images_per_sec, test=test)
