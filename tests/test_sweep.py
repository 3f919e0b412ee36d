"""Tests for cgmlp_jax.tools.sweep and cgmlp_jax.tools.sweep_report: point names, the commands (and that they
parse to the points' configs), skip / resume / screening with a fake runner writing run records,
``stop_after_epochs`` in one tiny run, the Pareto front, and the report on those records."""
import json
import re
import shlex

import pytest
from absl import flags
from matplotlib import image as mpimg
from ml_collections import config_flags

from cgmlp_jax import cli, models
from cgmlp_jax.tools import sweep, sweep_points, sweep_report
from cgmlp_jax.errors import ConfigError
from cgmlp_jax.train import config as config_lib
from configs import search_winner
from tiny_run import final_params, run, tiny_config

TINY_SEARCH = """
import ml_collections
from cgmlp_jax.tools.sweep_points import grid
from cgmlp_jax.train.config import base_config, parse_arg

def get_config(arg=None):
  args = parse_arg(arg, dataset="cifar10", epochs=4)
  c = base_config()
  c.model, c.dataset, c.num_epochs = "test_cgmlp", args.dataset, args.epochs
  c.model_kw = ml_collections.ConfigDict({"conv_layers": ((8, 3, 2),), "d_ffn": 32})
  return c

def get_sweep(arg=None):
  parse_arg(arg, dataset="cifar10", epochs=4)
  return POINTS
"""
# A fake run's validation top-1 after epoch e of a point: rising to the point's final value.
FINAL_TOP1 = {"base": 0.60, "depth3": 0.70, "dm24": 0.50, "conv8x3x2-16x3x1": 0.65}
SCREEN_TOP1 = {"base": 0.30, "depth3": 0.35, "dm24": 0.20, "conv8x3x2-16x3x1": 0.33}


def _search_file(tmp_path, points, name="search.py"):
  path = tmp_path / name
  path.write_text(TINY_SEARCH.replace("POINTS", repr(points)))
  return str(path)


def _top1(name, epoch, num_epochs):
  """The fake learning curve: SCREEN_TOP1 after epoch 1, FINAL_TOP1 at the end."""
  screen, final = SCREEN_TOP1.get(name, 0.4), FINAL_TOP1.get(name, 0.6)
  return screen + (final - screen) * (epoch - 1) / max(num_epochs - 1, 1)


class FakeRunner:
  """Stands in for ``launch.py``: records the command and writes the run records a run to its
  ``stop_after_epochs`` (or ``num_epochs``) would write."""

  def __init__(self, spec, status=0):
    self.points = {p.name: p for p in sweep_points.points(spec)}
    self.calls, self.status = [], status

  def __call__(self, argv):
    self.calls.append(argv)
    if self.status:
      return self.status
    args = dict(a[2:].split("=", 1) for a in argv if a.startswith("--"))
    workdir = args["workdir"]
    write_run(workdir, self.points[workdir.rsplit("/", 1)[-1]].config,
              int(args.get("config.stop_after_epochs", 0)))
    return 0


def write_run(workdir, config, stop_after=0):
  """config.json, metrics.jsonl and summary.json of a run of ``config`` (10 steps an epoch, a
  minute an epoch per 10 k parameters... here simply depth minutes an epoch)."""
  import os  # noqa: PLC0415
  os.makedirs(workdir, exist_ok=True)
  name, total = os.path.basename(workdir), config.num_epochs
  epochs = stop_after or total
  lines, history = [], []
  for e in range(1, epochs + 1):
    top1 = _top1(name, e, total)
    lines += [{"step": 10 * e, "split": "train", "loss": 1.0, "top1": top1, "top5": 1.0,
               "images_per_sec": 100.0},
              {"step": 10 * e, "split": "val", "loss": 1.0, "top1": top1, "top5": 1.0}]
    history.append({"epoch": e, "step": 10 * e, "wall_time_s": 60.0 * e * config.model_kw.get(
        "depth", 2), "val_top1": top1})
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort())
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(x) + "\n" for x in lines)
  with open(os.path.join(workdir, "summary.json"), "w") as f:
    json.dump({"step": 10 * epochs, "epochs": float(epochs), "history": history,
               "best": {"stopped": False}}, f)


POINTS = [{}, {"model_kw.depth": 3}, {"model_kw.d_model": 24},
          {"model_kw.conv_layers": ((8, 3, 2), (16, 3, 1))}]


def test_point_names_are_short_safe_and_deterministic():
  assert sweep_points.point_name({}) == "base"
  assert sweep_points.point_name({"model_kw.depth": 6, "model_kw.axes": "alternate"}) == \
      "axes-alternate_depth6"
  assert sweep_points.point_name({"model_kw.axes": "alternate", "model_kw.depth": 6}) == \
      "axes-alternate_depth6"  # the order of the dict does not matter
  assert sweep_points.point_name({"model_kw.conv_layers": ((64, 3, 2), (128, 3, 1)),
                           "model_kw.patch_size": 2}) == "conv64x3x2-128x3x1_patch2"
  assert sweep_points.point_name({"model_kw.conv_layers": ()}) == "conv-none"
  assert sweep_points.point_name({"optimizer.learning_rate": 2e-3, "model_kw.drop_path_rate": 0.0}) == \
      "sd0_lr0.002"  # sorted by field
  assert sweep_points.point_name({"model_kw.axes": ("token", "channel")}) == "axes-token-channel"
  assert sweep_points.point_name({"augment.mean": (0.5, 0.5, 0.5)}) == "mean0.5x0.5x0.5"
  long = sweep_points.point_name({f"model_kw.f{i}": "x" * 20 for i in range(8)})
  assert len(long) <= sweep_points.MAX_NAME and long == sweep_points.point_name(
      {f"model_kw.f{i}": "x" * 20 for i in range(8)})
  assert sweep_points.point_name({"dataset": "a b/c"}) == "dataset-a-b-c"


def test_points_leave_out_what_equals_the_base_and_refuse_mistakes(tmp_path):
  spec = _search_file(tmp_path, [{}, {"model_kw.depth": 2, "model_kw.d_model": 24},
                                 {"model_kw.conv_layers": [[8, 3, 2]], "num_epochs": 5}])
  pts = sweep_points.points(spec + ":epochs=4")
  # depth 2 is test_cgmlp's own depth, the listed conv stem the base's: not differences.
  assert [p.name for p in pts] == ["base", "dm24", "ep5"]
  assert pts[1].overrides == {"model_kw.d_model": 24} and pts[1].config.model_kw.d_model == 24
  assert pts[2].config.num_epochs == 5 and pts[0].config.num_epochs == 4
  assert pts[1].differs == "model_kw.d_model=24" and pts[0].differs == "(the base)"
  for points, message in (
      ([{"model_kw.dept": 3}], r"Unknown model field 'model_kw.dept'. Did you mean "
                               r"'model_kw.depth'\?"),
      ([{"optimizer.lerning_rate": 1.0}], r"Did you mean 'optimizer.learning_rate'\?"),
      ([{"optimiser.learning_rate": 1.0}], r"Unknown config field 'optimiser'"),
      ([{"model_kw.patch_size": 3}], r"Sweep point 0 .*patch"),
      ([{"model_kw.depth": 3}, {"model_kw.depth": 3, "model_kw.d_ffn": 32}],
       r"Sweep points 0 and 1 are the same point \('depth3'"),
      ([], r"no points")):
    with pytest.raises(ConfigError, match=message):
      sweep_points.points(_search_file(tmp_path, points))


def _parse_command(argv):
  """The config ``launch.py`` would train with for ``argv`` (``python launch.py ...``)."""
  kept, model_overrides = cli.preflight(argv[1:])
  values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=kept)
  flags.DEFINE_string("workdir", None, "", flag_values=values)
  values(kept)
  cli.apply_model_overrides(values.config, model_overrides)
  return values.config, values.workdir


@pytest.mark.parametrize("arg,count", [("dataset=cifar100", 23), ("space=combine", 6),
                                       ("space=grid,sample=6,seed=1", 6)])
def test_the_search_commands_parse_to_the_points_configs(arg, count):
  spec = f"configs/search.py:{arg}"
  pts = sweep_points.points(spec)
  assert [p.name for p in pts] == [p.name for p in sweep_points.points(spec)]  # deterministic
  assert len({p.name for p in pts}) == len(pts)
  assert len(pts) == count
  for p in pts:
    assert re.fullmatch(r"[A-Za-z0-9._+-]+", p.name), p.name
    for stop in (0, 3):
      argv = sweep_points.command(spec, "runs/search", p, stop)
      assert argv[:2] == ["python", "launch.py"]
      config, workdir = _parse_command(argv)
      assert workdir == f"runs/search/{p.name}"
      expected = json.loads(p.config.to_json_best_effort())
      expected["stop_after_epochs"] = stop
      assert json.loads(config.to_json_best_effort()) == expected, p.name
      config_lib.validate(config)


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_the_winner_config_is_the_search_point_it_names(dataset):
  """configs/search_winner.py's variant is the network of the search's winning point, and the
  rest of its config is that point's: so its runs stand beside the search's."""
  point = next(p for p in sweep_points.points(f"configs/search.py:dataset={dataset},space=combine")
               if p.name == "norm-batch_ffn512")
  winner = search_winner.get_config(f"dataset={dataset}")
  config_lib.validate(winner)
  assert winner.model == "cgmlp_2conv_bn_small" and not winner.model_kw

  def network(config):
    model = config_lib.build_model(config, num_classes=100)
    return {f: getattr(model, f) for f in models.registry.FIELDS}

  def recipe(config):
    return {k: v for k, v in json.loads(config.to_json_best_effort()).items()
            if k not in ("model", "model_kw")}

  assert network(winner) == network(point.config)
  assert recipe(winner) == recipe(point.config)


def test_finished_points_are_skipped_and_unfinished_ones_rerun(tmp_path, capsys):
  spec, root = _search_file(tmp_path, POINTS), tmp_path / "runs"
  pts = {p.name: p for p in sweep_points.points(spec)}
  write_run(str(root / "base"), pts["base"].config)  # finished: skipped
  (root / "depth3").mkdir()
  (root / "depth3" / "metrics.jsonl").write_text("")  # started, no summary.json: resumed
  write_run(str(root / "dm24"), pts["dm24"].config, stop_after=1)  # a screen: goes on
  runner = FakeRunner(spec)
  assert sweep.sweep(spec, str(root), runner=runner) == 0
  assert [a[3] for a in runner.calls] == [f"--workdir={root}/{n}" for n in
                                          ("depth3", "dm24", "conv8x3x2-16x3x1")]
  assert runner.calls[2] == ["python", "launch.py", f"--config={spec}",
                             f"--workdir={root}/conv8x3x2-16x3x1",
                             "--config.model_kw.conv_layers=((8,3,2),(16,3,1))"]
  again = FakeRunner(spec)
  assert sweep.sweep(spec, str(root), runner=again) == 0 and again.calls == []
  # --print_commands: nothing left to print; the points and their commands are in sweep.json.
  assert sweep.sweep(spec, str(root), print_commands=True) == 0
  assert capsys.readouterr().out == ""
  state = json.loads((root / "sweep.json").read_text())
  assert [p["name"] for p in state["points"]] == list(pts)
  assert state["points"][1]["command"] == sweep_points.shell(sweep_points.command(spec, str(root), pts["depth3"]))


def test_a_failed_point_is_retried_and_a_stopped_one_ends_the_sweep(tmp_path):
  spec, root = _search_file(tmp_path, POINTS), str(tmp_path / "runs")
  failing = FakeRunner(spec, status=1)
  assert sweep.sweep(spec, root, runner=failing) == 1 and len(failing.calls) == 4
  stopped = FakeRunner(spec, status=143)  # SIGTERM: saved a checkpoint; the sweep stops too
  assert sweep.sweep(spec, root, runner=stopped) == 143 and len(stopped.calls) == 1


def test_screening_ranks_the_points_and_continues_the_best(tmp_path, capsys):
  spec, root = _search_file(tmp_path, POINTS), tmp_path / "runs"
  # On a cluster: first the screening commands, then (once they ran) the continuations.
  assert sweep.sweep(spec, str(root), screen_epochs=1, keep=2, print_commands=True) == 0
  printed = capsys.readouterr().out.splitlines()
  assert len(printed) == 4 and all(line.endswith(" --config.stop_after_epochs=1")
                                   for line in printed)
  runner = FakeRunner(spec)
  for line in printed[:2]:
    runner(shlex.split(line))  # as a shell on the cluster would
  # Half screened: the other two screens are printed again, the finished ones stay recorded.
  assert sweep.sweep(spec, str(root), screen_epochs=1, keep=2, print_commands=True) == 0
  assert capsys.readouterr().out.splitlines() == printed[2:]
  state = {p["name"]: p for p in json.loads((root / "sweep.json").read_text())["points"]}
  assert {n: (p["screen_top1"], p["screen_rank"], p["kept"]) for n, p in state.items()} == {
      "base": (0.30, 2, False), "depth3": (0.35, 1, False), "dm24": (None, None, False),
      "conv8x3x2-16x3x1": (None, None, False)}
  for line in printed[2:]:
    runner(shlex.split(line))
  assert sweep.sweep(spec, str(root), screen_epochs=1, keep=2, print_commands=True) == 0
  printed = capsys.readouterr().out.splitlines()
  assert printed == [sweep_points.shell(sweep_points.command(spec, str(root), p)) for p in sweep_points.points(spec)
                     if p.name in ("depth3", "conv8x3x2-16x3x1")]

  # Here: the same in one call, into a fresh root; a second call has nothing left to do.
  root = tmp_path / "here"
  runner = FakeRunner(spec)
  assert sweep.sweep(spec, str(root), screen_epochs=1, keep=2, runner=runner) == 0
  stops = [a[-1] == "--config.stop_after_epochs=1" for a in runner.calls]
  assert stops == [True] * 4 + [False] * 2
  assert [a[3].rsplit("/", 1)[-1] for a in runner.calls[4:]] == ["depth3", "conv8x3x2-16x3x1"]
  state = {p["name"]: p for p in json.loads((root / "sweep.json").read_text())["points"]}
  assert {n: (p["screen_top1"], p["screen_rank"], p["kept"]) for n, p in state.items()} == {
      "base": (0.30, 3, False), "depth3": (0.35, 1, True), "dm24": (0.20, 4, False),
      "conv8x3x2-16x3x1": (0.33, 2, True)}
  again = FakeRunner(spec)
  assert sweep.sweep(spec, str(root), screen_epochs=1, keep=2, runner=again) == 0
  assert again.calls == []
  with pytest.raises(ConfigError, match="--keep"):
    sweep.sweep(spec, str(root), screen_epochs=1, runner=again)
  with pytest.raises(ConfigError, match="not below"):
    sweep.sweep(spec, str(root), screen_epochs=4, keep=1, runner=again)


def test_the_cli_reports_a_mistake_in_one_line(tmp_path, capsys):
  spec = _search_file(tmp_path, [{"model_kw.dept": 3}])
  with pytest.raises(SystemExit) as exit_info:
    sweep.main([f"--config={spec}", f"--root={tmp_path}/runs", "--print_commands"])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.startswith(
      "error: Sweep point 0 ({'model_kw.dept': 3}): Unknown model field 'model_kw.dept'. Did you "
      "mean 'model_kw.depth'?")


def test_stop_after_epochs_keeps_the_schedule_and_the_continued_run_matches(straight_run,
                                                                            tmp_path):
  """A screening run (1 of 2 epochs) continued without the field equals the uninterrupted run."""
  workdir = tmp_path / "screened"
  summary = run(tiny_config(stop_after_epochs=1), workdir)
  assert summary["epochs"] == 1 and [r["epoch"] for r in summary["history"]] == [1]
  assert sweep.reached(str(workdir), 1) and not sweep.reached(str(workdir), 2)
  summary = run(tiny_config(), workdir)
  assert summary["epochs"] == 2
  expected = json.loads((straight_run.workdir / "summary.json").read_text())
  for got, want in zip(summary["history"], expected["history"]):
    assert {k: v for k, v in got.items() if k != "wall_time_s"} == pytest.approx(
        {k: v for k, v in want.items() if k != "wall_time_s"})
  import jax  # noqa: PLC0415
  import numpy as np  # noqa: PLC0415
  jax.tree.map(np.testing.assert_array_equal, final_params(workdir),
               final_params(straight_run.workdir))
  with pytest.raises(ConfigError, match="stop_after_epochs must be >= 0"):
    config_lib.validate(tiny_config(stop_after_epochs=-1))


def test_pareto_front_and_rank_correlation():
  points = [(1.0, 0.5), (2.0, 0.7), (2.0, 0.6), (3.0, 0.7), (0.5, 0.4), (4.0, 0.9), (1.0, 0.5),
            (0.5, 0.3)]
  assert sweep_report.pareto_front(points) == [True, True, False, False, True, True, True, False]
  assert sweep_report.pareto_front([]) == []
  assert sweep_report.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
  assert sweep_report.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
  assert sweep_report.spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)
  assert sweep_report.spearman([1, 2], [1, 2]) is None
  assert sweep_report.spearman([1, 1, 1], [1, 2, 3]) is None


def test_the_seeds_of_a_design_are_one_pareto_point():
  """Two seeds of one design neither push each other off the front nor stand apart on it: the
  design sits at their mean. A variant and the same network built by overrides are one design."""
  point = next(p for p in sweep_points.points("configs/search.py:dataset=cifar10,space=combine")
               if p.name == "norm-batch_ffn512")
  as_point = json.loads(point.config.to_json_best_effort())
  as_variant = json.loads(search_winner.get_config("dataset=cifar10").to_json_best_effort())
  assert sweep_report.design(as_point) == sweep_report.design(
      {**as_variant, "seed": 1, "data_dir": "/elsewhere/tfds", "cpu_devices": 0})
  assert sweep_report.design(as_point) != sweep_report.design({**as_point, "num_epochs": 30})

  def row(number, design, gflops, minutes, top1):
    return sweep_report.Row(number, "root", str(number), "", "cifar10", 1, gflops, 15, 15, True,
                            minutes, top1, None, None, design=design)

  # Design a: seeds at 42 and 40 min (mean 41, top-1 0.80); b: one run at 41 min, 0.79.
  rows = [row(1, "a", 0.39, 42.0, 0.806), row(2, "a", 0.39, 40.0, 0.794),
          row(3, "b", 0.26, 41.0, 0.79)]
  sweep_report.mark_pareto(rows)
  assert [r.pareto for r in rows] == [("GFLOPs", "min"), ("GFLOPs", "min"), ("GFLOPs",)]


def test_the_report_tables_and_plots_each_dataset_from_the_run_records(tmp_path):
  roots = []
  for dataset, points in (("cifar10", POINTS), ("cifar100", POINTS[:2])):
    spec = _search_file(tmp_path, points, f"search_{dataset}.py") + f":dataset={dataset}"
    roots.append(str(tmp_path / dataset))
    assert sweep.sweep(spec, roots[-1], screen_epochs=1, keep=3, runner=FakeRunner(spec)) == 0
  # A point that has not started yet, and a plain directory of runs (no sweep.json).
  state = json.loads((tmp_path / "cifar100" / "sweep.json").read_text())
  state["points"].append({"name": "later", "differs": "x"})
  (tmp_path / "cifar100" / "sweep.json").write_text(json.dumps(state))
  plain = tmp_path / "plain"
  write_run(str(plain / "depth3"), sweep_points.points(spec)[1].config)

  out = tmp_path / "report"
  markdown = sweep_report.build_report(roots + [str(plain)], str(out))
  assert (out / "report.md").read_text() == markdown
  for dataset in ("cifar10", "cifar100"):
    assert mpimg.imread(out / f"pareto_{dataset}.png").shape[-1] in (3, 4)
    assert f"## {dataset}" in markdown
  cells = [line.split(" | ") for line in markdown.splitlines() if re.match(r"\| \d+ \|", line)]
  rows = {row[1]: row for row in cells if row[0] in ("| 1", "| 2", "| 3", "| 4")}  # cifar10
  # The continued three are full-budget; dm24 was screened only.
  base, depth3, dm24, conv = rows["base"], rows["depth3"], rows["dm24"], rows["conv8x3x2-16x3x1"]
  assert depth3[2] == "model_kw.depth=3" and depth3[5] == "4/4" and depth3[7] == "35.00 (kept)"
  assert depth3[6] == "12.0" and float(depth3[4]) > float(base[4])
  assert depth3[8] == "**70.00**" and depth3[9] == "GFLOPs, min |"
  assert dm24[5] == "1/4 (partial)" and dm24[7] == dm24[8] == "20.00" and dm24[9] == "– |"
  # The base is the cheapest in FLOPs; in minutes, conv... has more top-1 in as many. (In FLOPs,
  # XLA counts conv... above depth3, whose top-1 is higher: off that front.)
  assert base[6] == conv[6] == "8.0" and base[9] == "GFLOPs |" and conv[9] == "min |"
  assert [row[1] for row in cells if row[0] in ("| 6", "| 7")] == ["cifar100/depth3",
                                                                   "plain/depth3"]
  assert "`" + roots[0] + "`: screen of 1 epochs, 4 points screened, best 3 continued; 3 " \
      "finished the full budget. Spearman rank correlation of screen and final top-1 over them: " \
      "+1.00. The best final point (depth3, 70.00 %) was 1 of 4 in the screen." in markdown
  assert "not started yet: later." in markdown
  with pytest.raises(ValueError, match="holds no sweep"):
    sweep_report.build_report([str(out)], str(tmp_path / "again"))
