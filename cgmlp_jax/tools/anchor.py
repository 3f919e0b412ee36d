"""A published per-epoch training log (an "anchor") held against recorded runs.

    python -m cgmlp_jax.tools.report RUN --out DIR --anchor ../shared/anchors/keras_gmlp_cifar100_2021.tsv

The anchor is a TSV or CSV file with a header row: ``epoch``, ``val_top1`` and, where published,
``val_loss``, ``train_top1``, ``train_loss`` and a learning-rate column (any name starting with
``lr``). Accuracies may be fractions or percents. ``comparison`` tables, for each run against the
anchor: validation top-1 as a trailing 5-epoch moving average (epochs e-4..e; one epoch's figure on
5,000 validation images moves by ~0.7 points from sampling alone), validation loss, and the
difference of the training top-1 averages at epochs 10, 20, ...; the mean absolute per-epoch
top-1 difference; the mean signed training top-1 difference beside the validation one (a run
that learns like the anchor but scores differently on its own validation set shows a
validation difference without a training one); the last five epochs' mean top-1; and the
epochs after which the learning rate dropped. ``plot`` overlays the curves.
"""
import csv
import dataclasses
import os
import statistics

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cgmlp_jax.tools import runlog

WINDOW = 5  # epochs in the moving average
MARKS = (10, 20, 30, 40, 50, 60)  # epochs tabulated (those both curves reach)


@dataclasses.dataclass(frozen=True)
class Anchor:
  name: str
  path: str
  columns: dict[str, dict[int, float]]  # column -> {epoch: value}; accuracies as fractions


def read(path: str) -> Anchor:
  """Reads a published log; ValueError naming the file and what is missing."""
  if not os.path.isfile(path):
    raise ValueError(f"Anchor log {path} does not exist.")
  with open(path, newline="") as f:
    text = f.read()
  delimiter = "\t" if path.endswith(".tsv") or "\t" in text.splitlines()[0] else ","
  rows = list(csv.DictReader(text.splitlines(), delimiter=delimiter))
  if not rows or "epoch" not in rows[0] or "val_top1" not in rows[0]:
    raise ValueError(f"Anchor log {path} needs a header with 'epoch' and 'val_top1' columns "
                     f"(got {list(rows[0]) if rows else 'no rows'}).")
  columns: dict[str, dict[int, float]] = {}
  for line, row in enumerate(rows, start=2):
    try:
      epoch = int(row["epoch"])
      for key, value in row.items():
        if key != "epoch" and value not in (None, ""):
          columns.setdefault(key, {})[epoch] = float(value)
    except ValueError:
      raise ValueError(f"{path}:{line}: not a number in {row}.") from None
  for key, values in columns.items():
    if "top" in key and max(values.values()) > 1.0:  # percents
      columns[key] = {e: v / 100.0 for e, v in values.items()}
  return Anchor(name=os.path.splitext(os.path.basename(path))[0], path=path, columns=columns)


def _lr_column(columns: dict[str, dict[int, float]]) -> dict[int, float]:
  return next((v for k, v in columns.items() if k.startswith("lr")), {})


def run_columns(run: runlog.RunLog) -> dict[str, dict[int, float]]:
  """The run's per-epoch ``val_top1``, ``val_loss``, ``train_top1`` and ``lr`` (the rate of the
  epoch's last logged window)."""
  columns: dict[str, dict[int, float]] = {}
  for e in run.epochs:
    for split in ("val", "train"):
      for key in ("top1", "loss"):
        if key in getattr(e, split):
          columns.setdefault(f"{split}_{key}", {})[e.epoch] = getattr(e, split)[key]
  if run.steps_per_epoch:
    for record in run.train:
      if "lr" in record:
        epoch = -(-record["step"] // run.steps_per_epoch)  # the epoch the step belongs to
        columns.setdefault("lr", {})[epoch] = record["lr"]
  return columns


def moving_average(values: dict[int, float], epoch: int, window: int = WINDOW) -> float | None:
  """Mean of epochs ``epoch - window + 1 .. epoch``; None unless all are recorded."""
  span = [values.get(e) for e in range(epoch - window + 1, epoch + 1)]
  return None if None in span or epoch < window else statistics.fmean(span)


def drops(lr: dict[int, float]) -> list[int]:
  """The epochs after which the learning rate went down."""
  return [e for e in sorted(lr) if e + 1 in lr and lr[e + 1] < lr[e] * (1 - 1e-6)]


def _difference(ours: dict[int, float], theirs: dict[int, float], epoch: int) -> str:
  """The difference of the two trailing moving averages at ``epoch``, in points."""
  ma, ma_ref = moving_average(ours, epoch), moving_average(theirs, epoch)
  return "n/a" if ma is None or ma_ref is None else f"{100 * (ma - ma_ref):+.2f}"


def _pp(x: float | None) -> str:
  return "n/a" if x is None else f"{100 * x:.2f}"


def comparison(run: runlog.RunLog, anchor: Anchor) -> str:
  """Markdown: the run against the anchor (module docstring)."""
  ours, theirs = run_columns(run), anchor.columns
  top1, ref = ours.get("val_top1", {}), theirs["val_top1"]
  loss, ref_loss = ours.get("val_loss", {}), theirs.get("val_loss", {})
  train, ref_train = ours.get("train_top1", {}), theirs.get("train_top1", {})
  lines = [f"**{run.name} against {anchor.name}** (validation top-1 in %, trailing "
           f"{WINDOW}-epoch mean; loss of the epoch itself)", "",
           "| epoch | run top-1 | anchor top-1 | difference (pp) | run loss | anchor loss "
           "| train top-1 difference (pp) |",
           "|---|---|---|---|---|---|---|"]
  for epoch in MARKS:
    if epoch in top1 and epoch in ref:
      ma, ma_ref = moving_average(top1, epoch), moving_average(ref, epoch)
      lines.append(f"| {epoch} | {_pp(ma)} | {_pp(ma_ref)} | {_difference(top1, ref, epoch)} | "
                   f"{loss.get(epoch, float('nan')):.4f} | {ref_loss.get(epoch, float('nan')):.4f} "
                   f"| {_difference(train, ref_train, epoch)} |")
  common = sorted(set(top1) & set(ref))
  lines.append("")
  if common:
    mad = statistics.fmean(abs(top1[e] - ref[e]) for e in common)
    lines.append(f"- Mean absolute per-epoch difference of validation top-1 over epochs "
                 f"{common[0]}-{common[-1]}: {100 * mad:.2f} pp (mean signed "
                 f"{100 * statistics.fmean(top1[e] - ref[e] for e in common):+.2f}).")
  both = [e for e in common if e in train and e in ref_train]
  if both:
    lines.append(f"- Training top-1 (each epoch's mean, under augmentation and dropout) over epochs "
                 f"{both[0]}-{both[-1]}: mean signed difference "
                 f"{100 * statistics.fmean(train[e] - ref_train[e] for e in both):+.2f} pp, "
                 f"against {100 * statistics.fmean(top1[e] - ref[e] for e in both):+.2f} pp in "
                 f"validation top-1 over the same epochs.")
  last = max(ref)
  if all(e in top1 for e in range(last - WINDOW + 1, last + 1)):
    lines.append(f"- Last {WINDOW} of the anchor's {last} epochs, mean validation top-1: run "
                 f"{_pp(moving_average(top1, last))} %, anchor {_pp(moving_average(ref, last))} %.")
  else:
    lines.append(f"- The run has no epochs {last - WINDOW + 1}-{last} (it stopped earlier or is "
                 f"still running).")
  lines.append(f"- Learning rate lowered after epochs: run {drops(ours.get('lr', {})) or 'none'}, "
               f"anchor {drops(_lr_column(theirs)) or 'none'}.")
  return "\n".join(lines)


def plot(runs: list[runlog.RunLog], anchor: Anchor, path: str) -> None:
  """Validation top-1 (left) and loss (right) per epoch: each run against the anchor (black)."""
  fig = Figure(figsize=(12, 4.8), layout="constrained")
  axes = fig.subplots(1, 2)
  for ax, key, label in ((axes[0], "val_top1", "validation top-1 (%)"),
                         (axes[1], "val_loss", "validation loss")):
    scale = 100.0 if "top1" in key else 1.0
    series = [(anchor.name, anchor.columns.get(key, {}), "k--")]
    series += [(run.name, run_columns(run).get(key, {}), f"C{i}-") for i, run in enumerate(runs)]
    for name, values, style in series:
      if values:
        epochs = sorted(values)
        ax.plot(epochs, [scale * values[e] for e in epochs], style, marker="o", markersize=2.5,
                label=name)
    ax.set(xlabel="epoch", ylabel=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
  fig.suptitle(f"Runs against the published log {anchor.name}", fontsize="medium")
  fig.savefig(path, dpi=120)
