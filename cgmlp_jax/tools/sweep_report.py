"""Reports design sweeps: accuracy against cost per point, the Pareto front, how well a screen did.

    python -m cgmlp_jax.tools.sweep_report runs/search/cifar10 runs/search/cifar100 --out docs/search

reads each sweep root's ``sweep.json`` (written by ``cgmlp_jax.tools.sweep``; without one, every
subdirectory holding a ``metrics.jsonl`` is a point) and the points' run records (``config.json``,
``metrics.jsonl``, ``summary.json``: what a results page commits; no checkpoints needed), and writes
under ``--out`` ``report.md`` (a table per dataset, the screen's prediction) and
``pareto_DATASET.png``: validation top-1 against training GFLOPs per image and against training
wall minutes, the Pareto front marked. Runs of one design with different seeds (in any of the
roots) are one point of the front, at their mean.
"""
import dataclasses
import functools
import json
import os
import statistics

import scipy.stats
from absl import flags
from matplotlib.figure import Figure

from cgmlp_jax import cli
from cgmlp_jax.models import registry
from cgmlp_jax.tools import report, runlog, sweep
from cgmlp_jax.train import restore

TRAIN_FLOPS_FACTOR = 3  # training FLOPs per image = forward + backward (~2x forward)
NA = "n/a"
NOTES = f"""Top-1: best validation top-1 (%) over the run's epochs. Training GFLOPs/img = \
{TRAIN_FLOPS_FACTOR} x XLA's forward count (forward + backward ~ 2 x forward, a multiply-add = 2 \
FLOPs; XLA's count of the whole train step is 2.3-2.7 x forward for these models, BENCHMARKS.md). \
Minutes: the training wall time the trainer recorded (the sum over starts, validation included), \
on the machine that ran the point. Screen: validation top-1 after the screen's epochs, under the \
full schedule ("kept": continued to the full budget). Pareto: no other full-budget point of the \
dataset has at least the top-1 at no more cost (GFLOPs: training GFLOPs/img; min: wall minutes); \
the seeds of one design (the same network and recipe) count as one point, at their mean top-1 \
and cost, and are marked together."""
# Config fields that do not make a design: the seed, the screen's stop, where the data is and how
# the run logs, checkpoints and spreads over devices (model and model_kw enter as the network they
# build, so a variant and the same network by overrides are one design).
NOT_DESIGN = ("seed", "stop_after_epochs", "model", "model_kw", "data_dir", "download", "input",
              "memory_limit_gb", "eval_batch_size", "log_every_steps", "max_steps_ahead",
              "checkpoint_every_steps", "keep_checkpoints", "distributed", "cpu_devices",
              "on_config_change", "on_bad_checkpoint")


@dataclasses.dataclass
class Row:
  number: int
  root: str
  name: str
  differs: str
  dataset: str
  params: int | None
  train_gflops: float | None
  epochs: int  # epochs with a validation result
  num_epochs: int | None
  complete: bool  # trained to its num_epochs (or stopped early), summary.json written
  minutes: float | None  # at the last epoch
  top1: float | None  # best validation top-1
  screen_top1: float | None
  kept: bool | None  # continued after the screen; None: no screen
  design: str = ""  # equal for runs of the same network and recipe (seeds of one design)
  pareto: tuple[str, ...] = ()  # cost axes on whose front it lies


def pareto_front(points: list[tuple[float, float]]) -> list[bool]:
  """For (cost, value) pairs: whether each is on the front, i.e. no other pair has at most its
  cost and at least its value, one of them strictly (equal pairs are both on it)."""
  return [not any(c2 <= c and v2 >= v and (c2 < c or v2 > v) for c2, v2 in points)
          for c, v in points]


def spearman(x: list[float], y: list[float]) -> float | None:
  """Spearman's rank correlation (ties: average ranks); None for fewer than 3 pairs or a
  constant side."""
  if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
    return None
  return float(scipy.stats.spearmanr(x, y).statistic)


@functools.lru_cache(maxsize=None)
def _network(model: str, model_kw_json: str) -> str:
  """The network's fields (the variant with its overrides applied), as canonical JSON."""
  m = restore.build_model({"model": model, "model_kw": json.loads(model_kw_json)}, 10)
  return json.dumps({f: getattr(m, f) for f in registry.FIELDS if f != "num_classes"},
                    sort_keys=True, default=str)


def design(config: dict) -> str:
  """A key equal for runs of one design: the same network and recipe, whatever the seed."""
  kw = json.dumps(config.get("model_kw") or {}, sort_keys=True)
  recipe = {k: v for k, v in config.items() if k not in NOT_DESIGN}
  return json.dumps([_network(config["model"], kw), recipe], sort_keys=True, default=str)


def _sweep_state(root: str) -> dict | None:
  path = os.path.join(root, sweep.STATE_FILE)
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_root(root: str, first_number: int = 1) -> tuple[list[Row], dict | None, list[str]]:
  """The root's points that have run records, its sweep state, and notes (points not started)."""
  state, notes = _sweep_state(root), []
  if state:
    entries = state["points"]
  else:
    entries = [{"name": n} for n in sorted(os.listdir(root))
               if os.path.isfile(os.path.join(root, n, "metrics.jsonl"))]
  if not entries:
    raise ValueError(f"{root} holds no sweep: no {sweep.STATE_FILE} and no workdir with a "
                     f"metrics.jsonl.")
  screen_epochs = (state or {}).get("screen_epochs") or 0
  rows, waiting = [], []
  for entry in entries:
    workdir = os.path.join(root, entry["name"])
    if not os.path.isfile(os.path.join(workdir, "metrics.jsonl")):
      waiting.append(entry["name"])
      continue
    run = runlog.read(workdir)
    classes, _ = report.num_classes(run)
    kw = run.config.get("model_kw") or {}
    try:
      params, forward = report._cost(run.config["model"], json.dumps(kw, sort_keys=True), classes)
      key = design(run.config)
    except (ValueError, TypeError, KeyError) as e:
      params, forward, key = None, None, f"{root}/{entry['name']}"
      notes.append(f"{entry['name']}: cannot build its model ({e}).")
    num_epochs = run.config.get("num_epochs")
    with_val = [e for e in run.epochs if "top1" in e.val]
    walls = [e.wall_time_s for e in run.epochs if e.wall_time_s is not None]
    screen = sweep.screen_result(workdir, screen_epochs) if screen_epochs else None
    rows.append(Row(
        number=first_number + len(rows), root=root, name=entry["name"],
        differs=entry.get("differs", entry["name"]),
        dataset=str(run.config.get("dataset", "?")).split(":")[0], params=params,
        train_gflops=None if forward is None else TRAIN_FLOPS_FACTOR * forward,
        epochs=len(with_val), num_epochs=num_epochs,
        complete=bool(num_epochs) and sweep.reached(workdir, num_epochs),
        minutes=walls[-1] / 60 if walls else None,
        top1=max((e.val["top1"] for e in with_val), default=None),
        screen_top1=screen["top1"] if screen else None,
        kept=entry.get("kept") if screen_epochs else None, design=key))
  if waiting:
    notes.append(f"{root}: not started yet: {', '.join(waiting)}.")
  return rows, state, notes


def mark_pareto(rows: list[Row]) -> None:
  """Sets ``pareto`` of the complete rows, per dataset and cost axis; the seeds of a design are
  one point (mean cost, mean top-1), so they neither push each other off the front nor split."""
  for dataset in {r.dataset for r in rows}:
    for axis, cost in (("GFLOPs", "train_gflops"), ("min", "minutes")):
      designs: dict[str, list[Row]] = {}
      for r in rows:
        if (r.dataset == dataset and r.complete and r.top1 is not None and
            getattr(r, cost) is not None):
          designs.setdefault(r.design, []).append(r)
      seeds = list(designs.values())
      front = pareto_front([(statistics.fmean(getattr(r, cost) for r in runs),
                             statistics.fmean(r.top1 for r in runs)) for runs in seeds])
      for runs, on in zip(seeds, front):
        if on:
          for r in runs:
            r.pareto += (axis,)


def screen_prediction(rows: list[Row], state: dict | None) -> str | None:
  """How well the screen's top-1 ranked the points that went on to the full budget."""
  if not state or not state.get("screen_epochs"):
    return None
  s, root = state["screen_epochs"], rows[0].root if rows else state.get("root", "?")
  screened = [r for r in rows if r.screen_top1 is not None]
  both = [r for r in screened if r.complete and r.top1 is not None and
          (r.num_epochs or 0) > s]
  text = (f"`{root}`: screen of {s} epochs, {len(screened)} points screened, best "
          f"{state.get('keep')} continued; {len(both)} finished the full budget.")
  if not both:
    return text
  rho = spearman([r.screen_top1 for r in both], [r.top1 for r in both])
  best_final = max(both, key=lambda r: r.top1)
  screen_order = sorted(screened, key=lambda r: (-r.screen_top1, r.name))
  text += (f" Spearman rank correlation of screen and final top-1 over them: "
           f"{'n/a (fewer than 3, or ties)' if rho is None else f'{rho:+.2f}'}. The best final "
           f"point ({best_final.name}, {100 * best_final.top1:.2f} %) was "
           f"{screen_order.index(best_final) + 1} of {len(screened)} in the screen.")
  if len(both) < len(screened):
    text += (" Only the screen's best went on, so the correlation is over a top slice (a "
             "narrower spread than over all points).")
  return text


def _pct(x: float | None) -> str:
  return NA if x is None else f"{100 * x:.2f}"


def table(rows: list[Row]) -> str:
  columns = ("#", "point", "what differs", "params", "train GFLOPs/img", "epochs",
             "wall min", "screen top-1", "top-1", "Pareto")
  lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
  order = sorted(rows, key=lambda r: (not r.complete, -(r.top1 or 0.0), r.number))
  several_roots = len({r.root for r in rows}) > 1
  for r in order:
    epochs = f"{r.epochs}/{r.num_epochs or '?'}" + ("" if r.complete else " (partial)")
    lines.append("| " + " | ".join([
        str(r.number), f"{os.path.basename(os.path.normpath(r.root))}/{r.name}" if several_roots
        else r.name, r.differs.replace("|", "\\|"),
        NA if r.params is None else f"{r.params:,}",
        NA if r.train_gflops is None else f"{r.train_gflops:.3g}", epochs,
        NA if r.minutes is None else f"{r.minutes:.1f}",
        _pct(r.screen_top1) + (" (kept)" if r.kept else ""),
        f"**{_pct(r.top1)}**" if r.pareto else _pct(r.top1),
        ", ".join(r.pareto) or "–"]) + " |")
  return "\n".join(lines)


def plot(rows: list[Row], dataset: str, path: str) -> None:
  """Top-1 against training GFLOPs/img (left) and wall minutes (right): full-budget points filled,
  partial ones (screened only, or unfinished) hollow, the Pareto front as a red staircase."""
  fig = Figure(figsize=(12, 5), layout="constrained")
  for ax, axis, cost, label in zip(fig.subplots(1, 2), ("GFLOPs", "min"),
                                   ("train_gflops", "minutes"),
                                   ("training GFLOPs per image (3 x forward)",
                                    "training wall minutes")):
    shown = [r for r in rows if r.top1 is not None and getattr(r, cost) is not None]
    for complete, style in ((True, dict(color="C0", label="full budget")),
                            (False, dict(facecolors="none", edgecolors="grey",
                                         label="partial (screen only or unfinished)"))):
      pts = [r for r in shown if r.complete == complete]
      if pts:
        ax.scatter([getattr(r, cost) for r in pts], [100 * r.top1 for r in pts], s=30, **style)
    front = sorted((r for r in shown if axis in r.pareto), key=lambda r: getattr(r, cost))
    if front:
      ax.plot([getattr(r, cost) for r in front], [100 * r.top1 for r in front], "-o",
              drawstyle="steps-post", color="C3", markerfacecolor="none", markersize=10,
              label="Pareto front (best top-1 at no more cost)")
    for r in shown:
      ax.annotate(str(r.number), (getattr(r, cost), 100 * r.top1), textcoords="offset points",
                  xytext=(4, 3), fontsize=7)
    ax.set(xlabel=label, ylabel="validation top-1 (%)")
    ax.grid(alpha=0.3)
    if shown:
      ax.legend(fontsize="small", loc="lower right")
    else:
      ax.text(0.5, 0.5, "no point has a validation result yet", ha="center",
              transform=ax.transAxes)
  fig.suptitle(f"{dataset}: validation top-1 against cost (numbers: the table's #)")
  fig.savefig(path, dpi=120)


def build_report(roots: list[str], out_dir: str) -> str:
  """Writes ``report.md`` and one ``pareto_DATASET.png`` per dataset; returns the markdown."""
  if not roots:
    raise ValueError("No sweep roots given.")
  rows, states, notes = [], [], []
  for root in roots:  # every error before any output
    if not os.path.isdir(root):
      raise ValueError(f"Sweep root {root} does not exist.")
    root_rows, state, root_notes = read_root(root, first_number=len(rows) + 1)
    rows += root_rows
    states.append((root_rows, state))
    notes += root_notes
  mark_pareto(rows)
  os.makedirs(out_dir, exist_ok=True)
  markdown = ["# Design search", ""]
  for dataset in sorted({r.dataset for r in rows}):
    image = f"pareto_{dataset}.png"
    plot([r for r in rows if r.dataset == dataset], dataset, os.path.join(out_dir, image))
    markdown += [f"## {dataset}", "", table([r for r in rows if r.dataset == dataset]), "",
                 f"![{dataset}: top-1 against cost]({image})", ""]
  predictions = [p for p in (screen_prediction(r, s) for r, s in states) if p]
  if predictions:
    markdown += ["## How well the screen predicted the full runs", ""]
    markdown += [f"* {p}" for p in predictions] + [""]
  markdown += [NOTES, ""] + [f"* {note}" for note in notes] + ([""] if notes else [])
  markdown = "\n".join(markdown)
  with open(os.path.join(out_dir, "report.md"), "w") as f:
    f.write(markdown)
  return markdown


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string("out", None, "Directory for report.md and the plots (required).",
                      required=True, flag_values=values)


def main(argv: list[str] | None = None) -> None:
  args, roots = cli.parse_flags(argv, define_flags, "python -m cgmlp_jax.tools.sweep_report",
                                __doc__, ("ROOT", "a sweep root (cgmlp_jax.tools.sweep --root)"))
  try:
    print(build_report(roots, args.out))
  except ValueError as e:
    cli.fail(" ".join(str(e).split()))


if __name__ == "__main__":
  main()
