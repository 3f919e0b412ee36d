"""Compares training runs: a markdown table and learning curves from their workdirs.

    python -m cgmlp_jax.tools.report runs/gmlp_small runs/cgmlp_2conv_small --out reports/cifar10

writes ``report.md`` (one row per run), ``val_top1.png`` and ``loss.png`` under ``--out`` and
prints the markdown. Runs may still be training (``cgmlp_jax.tools.runlog`` reads them) and are marked
as such. Parameter counts and forward GFLOPs are computed from the registry model the run's
config names, so they describe the architecture that ran rather than a number copied by hand.
"""
import dataclasses
import functools
import json
import os
import statistics
import time

from absl import flags
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cgmlp_jax import cli
from cgmlp_jax.models import summary as model_summary
from cgmlp_jax.tools import anchor as anchor_lib, runlog
from cgmlp_jax.train import restore
from cgmlp_jax.train.early_stopping import EarlyStopping

THRESHOLDS = (0.70, 0.80, 0.85)  # validation top-1 levels whose time to reach is tabulated
KNOWN_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
REFERENCE_NUM_CLASSES = 1000  # the registry's reference head, when nothing gives the class count
NA, NEVER = "n/a", "–"


def columns(thresholds=THRESHOLDS) -> tuple[str, ...]:
  return ("run", "model", "classes", "params", "GFLOPs/img", "best val top-1 (epoch)",
          "final train top-1", "train−val gap (pp)", "test top-1 / top-5", "images/s",
          "wall time (min)") + tuple(f"min to {100 * t:.0f}%" for t in thresholds)


COLUMNS = columns()
NOTES = """Top-1 in %. The gap is the last epoch's train top-1 (its mean over the epoch, under \
training augmentation and dropout) minus its validation top-1, in percentage points. images/s \
is the median over train logging windows, leaving out those that include compilation. Times are \
the training wall-clock minutes the trainer recorded at the first epoch end reaching the level; \
"–": not reached, "n/a": not known."""


def num_classes(run: runlog.RunLog) -> tuple[int, bool]:
  """The run's class count and whether it is known (else the 1000-class reference head)."""
  dataset = str(run.config.get("dataset", "")).split(":")[0]
  if dataset in KNOWN_NUM_CLASSES:
    return KNOWN_NUM_CLASSES[dataset], True
  try:
    shapes = restore.param_shapes(restore.find_checkpoint(run.workdir))
    return shapes["head"]["kernel"].shape[-1], True  # (d_model, num_classes)
  except (FileNotFoundError, ValueError, KeyError):
    pass
  if "num_classes" in run.config:
    return int(run.config["num_classes"]), True
  return REFERENCE_NUM_CLASSES, False


@functools.lru_cache(maxsize=None)
def _cost(model: str, model_kw_json: str, classes: int) -> tuple[int, float]:
  """(parameters, forward GFLOPs per image); keyed by JSON since configs hold lists."""
  m = restore.build_model({"model": model, "model_kw": json.loads(model_kw_json)}, classes)
  return model_summary.count_params(m), model_summary.forward_gflops(m)


def _pct(x: float | None) -> str:
  return NA if x is None else f"{100 * x:.2f}"


def _minutes_to(run: runlog.RunLog, level: float) -> str:
  for e in run.epochs:
    if e.val.get("top1", 0.0) >= level:
      return NA if e.wall_time_s is None else f"{e.wall_time_s / 60:.1f}"
  return NEVER


def _last(run: runlog.RunLog, split: str, key: str = "top1") -> float | None:
  values = [getattr(e, split)[key] for e in run.epochs if key in getattr(e, split)]
  return values[-1] if values else None


def _last_write(workdir: str) -> str:
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return "no metrics.jsonl"
  return "metrics last written " + time.strftime("%Y-%m-%d %H:%M UTC",
                                                 time.gmtime(os.path.getmtime(path)))


def row(run: runlog.RunLog, notes: list[str], thresholds=THRESHOLDS) -> list[str]:
  """The run's table cells (``columns(thresholds)``); appends footnotes to ``notes``."""
  name = run.name
  if not run.finished:
    last = run.epochs[-1].epoch if run.epochs else 0
    name += (f" (unfinished: epoch {last}/{run.config.get('num_epochs', '?')}, no summary.json; "
             f"{_last_write(run.workdir)}: running, stopped or crashed)")
  model = run.config.get("model", NA)
  kw = run.config.get("model_kw") or {}
  model_cell = model + (f" ({', '.join(f'{k}={v}' for k, v in kw.items())})" if kw else "")
  classes, known = num_classes(run)
  try:
    params, gflops = _cost(model, json.dumps(kw, sort_keys=True), classes)
    cost = [f"{params:,}", f"{gflops:.3g}"]
  except (ValueError, TypeError, KeyError) as e:
    cost = [NA, NA]
    notes.append(f"{run.name}: cannot build model {model!r} ({e}).")
  if not known:
    notes.append(f"{run.name}: class count unknown; params and GFLOPs are for a "
                 f"{REFERENCE_NUM_CLASSES}-class head.")
  with_val = [e for e in run.epochs if "top1" in e.val]
  best = max(with_val, key=lambda e: e.val["top1"], default=None)
  train_top1 = _last(run, "train")
  if train_top1 is None and run.train:
    train_top1 = run.train[-1].get("top1")
  both = [e for e in run.epochs if "top1" in e.val and "top1" in e.train]
  gap = f"{100 * (both[-1].train['top1'] - both[-1].val['top1']):+.2f}" if both else NA
  test = NA if not run.test else f"{_pct(run.test.get('top1'))} / {_pct(run.test.get('top5'))}"
  rate = f"{statistics.median(run.images_per_sec):,.0f}" if run.images_per_sec else NA
  wall = [e.wall_time_s for e in run.epochs if e.wall_time_s is not None]
  return [name, model_cell, str(classes) if known else f"{classes}?", *cost,
          f"{_pct(best.val['top1'])} ({best.epoch})" if best else NA, _pct(train_top1), gap, test,
          rate, f"{wall[-1] / 60:.1f}" if wall else NA,
          *(_minutes_to(run, t) for t in thresholds)]


def table(runs: list[runlog.RunLog], notes: list[str], thresholds=THRESHOLDS) -> str:
  header = columns(thresholds)
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(row(run, notes, thresholds)) + " |" for run in runs]
  return "\n".join(lines)


def _finish(fig: Figure, ax, path: str, ylabel: str, title: str, plotted: bool) -> None:
  ax.set(xlabel="epoch", ylabel=ylabel, title=title)
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.grid(alpha=0.3)
  if plotted:
    ax.legend(fontsize="small")
  else:
    ax.text(0.5, 0.5, "no epoch has ended yet", ha="center", transform=ax.transAxes)
  fig.savefig(path, dpi=120)


def plot_top1(runs: list[runlog.RunLog], path: str) -> None:
  """Validation top-1 per epoch (solid) and train top-1 at epoch ends (dashed), one colour a run."""
  fig = Figure(figsize=(8, 5), layout="constrained")
  ax = fig.subplots()
  plotted = False
  for i, run in enumerate(runs):
    for split, style in (("val", "-o"), ("train", "--")):
      points = [(e.epoch, 100 * getattr(e, split)["top1"])
                for e in run.epochs if "top1" in getattr(e, split)]
      if points:
        ax.plot(*zip(*points), style, color=f"C{i}", markersize=3, label=f"{run.name} {split}")
        plotted = True
  _finish(fig, ax, path, "top-1 accuracy (%)",
          "Validation top-1 (solid) and train top-1 at epoch end (dashed)", plotted)


def plot_loss(runs: list[runlog.RunLog], path: str) -> None:
  """Validation loss per epoch (solid) and every logged train-window loss (dashed)."""
  fig = Figure(figsize=(8, 5), layout="constrained")
  ax = fig.subplots()
  plotted = False
  for i, run in enumerate(runs):
    if not run.steps_per_epoch:
      continue
    val = [(e.epoch, e.val["loss"]) for e in run.epochs if "loss" in e.val]
    train = [(r["step"] / run.steps_per_epoch, r["loss"]) for r in run.train if "loss" in r]
    for points, style, split in ((val, "-o", "val"), (train, "--", "train")):
      if points:
        ax.plot(*zip(*points), style, color=f"C{i}", markersize=3, label=f"{run.name} {split}")
        plotted = True
  _finish(fig, ax, path, "loss", "Validation loss (solid) and train loss (dashed)", plotted)


def plot_gap(runs: list[runlog.RunLog], path: str) -> None:
  """Generalisation gap per epoch, one colour a run: train minus validation top-1 (left) and
  validation minus train loss (right); above zero, the model does better on what it trained on."""
  fig = Figure(figsize=(12, 4.8), layout="constrained")
  axes = fig.subplots(1, 2)
  plotted = False
  for i, run in enumerate(runs):
    both = [e for e in run.epochs
            if all(k in e.val and k in e.train for k in ("top1", "loss"))]
    if both:
      epochs = [e.epoch for e in both]
      axes[0].plot(epochs, [100 * (e.train["top1"] - e.val["top1"]) for e in both], "-o",
                   color=f"C{i}", markersize=3, label=run.name)
      axes[1].plot(epochs, [e.val["loss"] - e.train["loss"] for e in both], "-o",
                   color=f"C{i}", markersize=3, label=run.name)
      plotted = True
  for ax in axes:
    ax.axhline(0.0, color="black", linewidth=0.8)
  fig.suptitle("Generalisation gap (train metrics: the epoch's mean under augmentation and "
               "dropout; train loss includes label smoothing, if any)", fontsize="medium")
  axes[0].set(xlabel="epoch", ylabel="train − validation top-1 (pp)")
  axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
  axes[0].grid(alpha=0.3)
  _finish(fig, axes[1], path, "validation − train loss", "", plotted)


def _replay(run: runlog.RunLog, metric: str, mode: str, patience: int) -> str:
  """Where early stopping on validation ``metric`` would have ended the recorded run."""
  rule = EarlyStopping(metric=metric, mode=mode, patience=patience)
  seen = [e for e in run.epochs if metric in e.val]
  for e in seen:
    rule.update(e.val[metric], e.epoch)
    if rule.stopped:
      best = max((x.val.get("top1", 0.0) for x in seen if x.epoch <= e.epoch))
      return f"epoch {e.epoch} (best {rule.best_step}; top-1 {_pct(best)})"
  return f"not by epoch {seen[-1].epoch} (best {rule.best_step})" if seen else NA


def stopping_replay(runs: list[runlog.RunLog], patience: int) -> str:
  """A markdown table: the epoch at which early stopping on validation loss, and on validation
  top-1, with ``patience``, would have ended each recorded run, and the best top-1 by then.

  Exact for runs whose training does not depend on the stopping metric (early stopping only
  decides when to stop; e.g. ``configs/paper.py``, whose plateau schedule watches validation loss
  whatever the stopping metric), up to the epochs each run recorded."""
  lines = [f"| run | stops on val loss (patience {patience}) | stops on val top-1 "
           f"(patience {patience}) |", "|---|---|---|"]
  lines += [f"| {run.name} | {_replay(run, 'loss', 'min', patience)} | "
            f"{_replay(run, 'top1', 'max', patience)} |" for run in runs]
  return "\n".join(lines)


def build_report(workdirs: list[str], out_dir: str, thresholds=THRESHOLDS,
                 replay_patience: int = 0, anchor: str = "") -> str:
  """Writes ``report.md``, ``val_top1.png``, ``loss.png``, ``gap.png`` to ``out_dir``; returns the
  markdown. ``thresholds``: the validation top-1 levels whose minutes to reach are tabulated;
  ``replay_patience`` > 0 adds ``stopping_replay``'s table; ``anchor``: a published per-epoch log
  to compare each run with (tools/anchor.py; adds its tables and ``anchor.png``)."""
  if not workdirs:
    raise ValueError("No workdirs given.")
  published = anchor_lib.read(anchor) if anchor else None
  runs = [runlog.read(w) for w in workdirs]  # all errors before any output
  names = [run.name for run in runs]
  if len(set(names)) < len(names):  # e.g. two seeds' ".../gmlp": name them by their parent too
    runs = [dataclasses.replace(run, name="/".join(os.path.normpath(run.workdir).split(os.sep)[-2:]))
            for run in runs]
  os.makedirs(out_dir, exist_ok=True)
  notes = []
  markdown = ["# Training runs", "", table(runs, notes, thresholds), "", NOTES, ""]
  markdown += [f"* {note}" for note in notes] + ([""] if notes else [])
  if replay_patience > 0:
    markdown += ["Early stopping replayed on the records (best = the epoch of the best value):",
                 "", stopping_replay(runs, replay_patience), ""]
  if published:
    markdown += [f"## Against the published log `{published.path}`", ""]
    markdown += [anchor_lib.comparison(run, published) + "\n" for run in runs]
    markdown += ["![against the published log](anchor.png)", ""]
  markdown += ["![validation top-1](val_top1.png)", "", "![loss](loss.png)", "",
               "![generalisation gap](gap.png)", ""]
  markdown = "\n".join(markdown)
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write(markdown)
  plot_top1(runs, os.path.join(out_dir, "val_top1.png"))
  plot_loss(runs, os.path.join(out_dir, "loss.png"))
  plot_gap(runs, os.path.join(out_dir, "gap.png"))
  if published:
    anchor_lib.plot(runs, published, os.path.join(out_dir, "anchor.png"))
  return markdown


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string("out", None, "Directory for report.md and the plots (required).",
                      required=True, flag_values=values)
  flags.DEFINE_string("thresholds", ",".join(str(t) for t in THRESHOLDS),
                      "Validation top-1 levels for the 'min to' columns, e.g. 0.4,0.5,0.6 for "
                      "CIFAR-100.", flag_values=values)
  flags.DEFINE_integer("replay_patience", 0, "> 0: also table where early stopping on validation "
                       "loss and on validation top-1, with this patience, would have ended each "
                       "run.", flag_values=values)
  flags.DEFINE_string("anchor", "", "A published per-epoch log (TSV/CSV with epoch, val_top1[, "
                      "val_loss, lr...]) to table and plot each run against.", flag_values=values)


def main(argv: list[str] | None = None) -> None:
  args, workdirs = cli.parse_flags(argv, define_flags, "python -m cgmlp_jax.tools.report", __doc__,
                                   ("WORKDIR", "a training workdir, finished or running"))
  try:
    thresholds = tuple(float(t) for t in args.thresholds.split(","))
    if not all(0 < t <= 1 for t in thresholds):
      raise ValueError(f"--thresholds must be fractions in (0, 1]; got {args.thresholds}.")
    print(build_report(workdirs, args.out, thresholds, args.replay_patience, args.anchor))
  except ValueError as e:
    cli.fail(" ".join(str(e).split()))


if __name__ == "__main__":
  main()
