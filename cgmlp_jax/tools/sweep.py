"""A sweep of config overrides, run as ordinary training runs in sibling workdirs, with screening.

    python -m cgmlp_jax.tools.sweep --config=configs/search.py:dataset=cifar10 --root=runs/search/cifar10
    python -m cgmlp_jax.tools.sweep --config=... --root=... --screen_epochs=3 --keep=4
    python -m cgmlp_jax.tools.sweep --config=... --root=... [--screen_epochs=3 --keep=4] --print_commands

The config file's ``get_config(ARGS)`` is the base recipe and its ``get_sweep(ARGS)`` the points:
dicts of dotted config field -> value (``{"model_kw.depth": 6, "optimizer.learning_rate": 2e-3}``;
``sweep_points.grid`` and ``sample`` build them). A point trains with
``python launch.py --config=FILE:ARGS --workdir=ROOT/NAME --config.FIELD=VALUE ...``, NAME being
what differs from the base (``depth6_axes-alternate``; ``base`` for the base itself).

* Here the points run one after another, each a fresh ``launch.py`` process. A point whose
  ``summary.json`` says it trained its ``num_epochs`` (or stopped early) is skipped; any other
  resumes from its newest checkpoint, as ``launch.py`` does, so running the sweep again after an
  interruption (Ctrl-C or SIGTERM reach the running point, which saves a checkpoint) goes on where
  it stopped.
* ``--print_commands`` runs nothing and prints the commands still to run, one a line, for a
  cluster (a SLURM array job runs line ``$SLURM_ARRAY_TASK_ID``, a TPU pod one per worker).
* ``--screen_epochs=S --keep=K`` spends little on bad designs: every point first trains S epochs
  under its full schedule (``stop_after_epochs``: the cosine still spans ``num_epochs``, so the
  learning rate is the full run's), the points are ranked by validation top-1 after those S epochs,
  and the best K continue in the same workdir to the full budget, resuming from the epoch-S
  checkpoint as if never stopped. With ``--print_commands`` the first call prints the screening
  commands; once they have finished, the next call prints the K continuations.

``ROOT/sweep.json`` records the sweep (config, points, their overrides and commands, the screen
settings, each point's screen top-1 and rank among the points screened so far, and, once all are
screened, whether it was kept); ``python -m cgmlp_jax.tools.sweep_report ROOT --out DIR`` reports the
points, and how well the screen predicted the full runs, from it and the workdirs' run records.
"""
import json
import os
import signal
import subprocess
import sys
from typing import Callable

from absl import flags

from cgmlp_jax import cli
from cgmlp_jax.errors import ConfigError, UserError
from cgmlp_jax.tools.sweep_points import Point, command, points, shell

STATE_FILE = "sweep.json"
LAUNCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch.py")
# --- A point's progress, from its workdir ------------------------------------------------------

def _summary(workdir: str) -> dict | None:
  path = os.path.join(workdir, "summary.json")
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None  # being written: not finished


def trained_epochs(workdir: str) -> tuple[float, bool]:
  """(epochs the last finished start trained, whether it stopped early), from ``summary.json``;
  (0, False) without one."""
  summary = _summary(workdir)
  if summary is None:
    return 0.0, False
  return float(summary.get("epochs", 0.0)), bool(summary.get("best", {}).get("stopped", False))


def reached(workdir: str, epochs: int) -> bool:
  """Whether the run in ``workdir`` has trained ``epochs`` epochs (or stopped early)."""
  done, stopped = trained_epochs(workdir)
  return stopped or done >= epochs


def screen_result(workdir: str, epochs: int) -> dict[str, float] | None:
  """Validation top-1 and training minutes at the end of epoch ``epochs`` (or of the last epoch,
  for a run that stopped or ended before it), once the run has reached it; else None."""
  summary = _summary(workdir)
  if summary is None or not reached(workdir, epochs):
    return None
  history = [r for r in summary.get("history", [])
             if r.get("epoch", 0) <= epochs and "val_top1" in r]
  if not history:
    return None
  last = max(history, key=lambda r: r["epoch"])
  return {"top1": last["val_top1"], "epoch": last["epoch"],
          "minutes": (last.get("wall_time_s") or 0.0) / 60}


def rank(results: dict[str, dict | None]) -> list[str]:
  """Point names with a screen result, best validation top-1 first (ties: by name)."""
  return sorted((n for n, r in results.items() if r), key=lambda n: (-results[n]["top1"], n))


# --- The sweep ---------------------------------------------------------------------------------

def run_point(argv: list[str]) -> int:
  """Runs ``argv`` (a ``python launch.py`` command) as a child process and returns its exit
  status; SIGTERM sent to the sweep is passed on, Ctrl-C reaches the child from the terminal."""
  argv = [sys.executable, LAUNCH if os.path.isfile(LAUNCH) else argv[1], *argv[2:]]
  process = subprocess.Popen(argv)
  previous = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signum))
  try:
    while True:
      try:
        return process.wait()
      except KeyboardInterrupt:  # the child got the SIGINT too: let it save and stop
        continue
  finally:
    signal.signal(signal.SIGTERM, previous)


def _write_state(root: str, state: dict) -> None:
  os.makedirs(root, exist_ok=True)
  path = os.path.join(root, STATE_FILE)
  with open(path + ".tmp", "w") as f:
    json.dump(state, f, indent=2)
  os.replace(path + ".tmp", path)


def _state(spec, root, pts, screen_epochs, keep, results, kept) -> dict:
  ranking = rank(results) if screen_epochs else []
  return {
      "config": spec, "root": root, "screen_epochs": screen_epochs, "keep": keep,
      "points": [{
          "name": p.name, "differs": p.differs, "overrides": p.overrides,
          "num_epochs": p.config.num_epochs,
          "command": shell(command(spec, root, p)),
          **({"screen_command": shell(command(spec, root, p, screen_epochs)),
              "screen_top1": (results.get(p.name) or {}).get("top1"),
              "screen_minutes": (results.get(p.name) or {}).get("minutes"),
              "screen_rank": ranking.index(p.name) + 1 if p.name in ranking else None,
              "kept": p.name in kept} if screen_epochs else {}),
      } for p in pts]}


def sweep(spec: str, root: str, screen_epochs: int = 0, keep: int = 0,
          print_commands: bool = False, runner: Callable[[list[str]], int] = run_point,
          out=None, log=None) -> int:
  """Runs (or prints the commands of) what is left of the sweep; returns an exit status: 0 when
  nothing failed, else the first failing point's (a stopped point's 128 + signal ends the sweep)."""
  out, log = out or sys.stdout, log or sys.stderr
  pts = points(spec)
  if screen_epochs and not 0 < keep:
    raise ConfigError("--screen_epochs needs --keep=K > 0: how many points continue to the full "
                      "budget.")
  for p in pts:
    if screen_epochs >= p.config.num_epochs:
      raise ConfigError(f"--screen_epochs={screen_epochs} is not below point {p.name}'s "
                        f"num_epochs={p.config.num_epochs}: nothing to screen.")
  workdir = {p.name: os.path.join(root, p.name) for p in pts}
  say = lambda text: print(f"[sweep] {text}", file=log, flush=True)  # noqa: E731
  failed = []

  def do(todo: list[Point], stop_after: int, what: str) -> bool:
    """Runs or prints ``todo``; False if the sweep has to stop (a point was stopped)."""
    if print_commands:
      for p in todo:
        print(shell(command(spec, root, p, stop_after)), file=out, flush=True)
      return True
    for i, p in enumerate(todo, 1):
      argv = command(spec, root, p, stop_after)
      say(f"{what} {i}/{len(todo)}: {p.name} ({p.differs})\n  {shell(argv)}")
      status = runner(argv)
      if status < 0 or status in (128 + signal.SIGINT, 128 + signal.SIGTERM):
        say(f"{p.name} was stopped (exit status {status}); run the sweep again to resume.")
        failed.append((p.name, status))
        return False
      if status:
        say(f"{p.name} failed (exit status {status}); going on with the other points.")
        failed.append((p.name, status))
    return True

  def screened() -> dict[str, dict | None]:
    return {p.name: screen_result(workdir[p.name], screen_epochs) for p in pts}

  results, kept = {}, []
  full = pts
  if screen_epochs:
    todo = [p for p in pts if not reached(workdir[p.name], screen_epochs)]
    say(f"screen: {len(pts) - len(todo)} of {len(pts)} points have trained {screen_epochs} "
        f"epochs; {len(todo)} to go.")
    # The screens finished so far stay recorded while the others run (or are printed).
    _write_state(root, _state(spec, root, pts, screen_epochs, keep, screened(), []))
    if not do(todo, screen_epochs, f"screen ({screen_epochs} epochs)"):
      return failed[-1][1]
    results = screened()
    if print_commands and todo:
      say(f"{len(todo)} screening run(s) printed; run this again once they have finished for "
          f"the {keep} continuations.")
      return 0
    ranking = rank(results)
    kept = ranking[:keep]
    say(f"screen ranking (validation top-1 after {screen_epochs} epochs): " + ", ".join(
        f"{n} {100 * results[n]['top1']:.2f}" for n in ranking))
    missing = [p.name for p in pts if not results[p.name]]
    if missing:
      say(f"no screen result for {missing} (failed); ranked without them.")
    full = [p for p in pts if p.name in kept]
  _write_state(root, _state(spec, root, pts, screen_epochs, keep, results, kept))
  todo = [p for p in full if not reached(workdir[p.name], p.config.num_epochs)]
  say(f"full budget: {len(full) - len(todo)} of {len(full)} points finished; {len(todo)} to go.")
  if not do(todo, 0, "full run"):
    return failed[-1][1]
  if failed:
    say(f"failed points: {failed}; run the sweep again to retry them.")
    return failed[0][1]
  if not print_commands:
    say(f"done; report: python -m cgmlp_jax.tools.sweep_report {root} --out {root}/report")
  return 0


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string("config", None, "FILE[:ARGS] with get_config and get_sweep (required).",
                      required=True, flag_values=values)
  flags.DEFINE_string("root", None, "Directory of the points' workdirs (required).", required=True,
                      flag_values=values)
  flags.DEFINE_boolean("print_commands", False, "Print the commands still to run instead of "
                       "running them.", flag_values=values)
  flags.DEFINE_integer("screen_epochs", 0, "Train every point this many epochs first (0: no "
                       "screening).", flag_values=values)
  flags.DEFINE_integer("keep", 0, "With --screen_epochs: how many of the best continue to the "
                       "full budget.", flag_values=values)


def main(argv: list[str] | None = None) -> None:
  args, _ = cli.parse_flags(argv, define_flags, "python -m cgmlp_jax.tools.sweep", __doc__)
  try:
    sys.exit(sweep(args.config, args.root, args.screen_epochs, args.keep, args.print_commands))
  except UserError as e:
    cli.fail(" ".join(str(e).split()))


if __name__ == "__main__":
  main()
