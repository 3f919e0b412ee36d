"""Tests for cgmlp_jax.tools.report (and runlog): hand-written workdirs, one finished and one still
running (resumed once, its last line half written), go into the expected table and plots."""
import json
import re
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from matplotlib import image as mpimg

from cgmlp_jax import models
from cgmlp_jax.tools import report, runlog

STEPS_PER_EPOCH = 10
CONFIG = {"model": "test_cgmlp", "model_kw": {}, "dtype": "float32", "dataset": "cifar10",
          "batch_size": 8, "num_epochs": 3, "log_every_steps": 4}


def _train(step, top1, rate):
  return {"step": step, "split": "train", "loss": 2.5 * (1 - top1), "top1": top1, "top5": 1.0,
          "lr": 1e-3, "images_per_sec": rate}


def _eval(step, top1, split="val"):
  return {"step": step, "split": split, "loss": 2.5 * (1 - top1), "top1": top1, "top5": 0.99}


def _write(workdir, config, lines, tail=""):
  workdir.mkdir()
  (workdir / "config.json").write_text(json.dumps(config))
  (workdir / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + tail)


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("runs")
  finished = [_train(4, 0.3, 10.0), _train(8, 0.4, 1000.0), _train(10, 0.5, 1100.0),
              _eval(10, 0.72), _train(14, 0.6, 1200.0), _train(18, 0.7, 1300.0),
              _train(20, 0.85, 900.0), _eval(20, 0.83), _train(24, 0.9, 1000.0),
              _train(28, 0.92, 1000.0), _train(30, 0.95, 1000.0), _eval(30, 0.81),
              _eval(30, 0.82, split="test")]
  _write(root / "finished", CONFIG, finished)
  history = [{"epoch": e, "step": e * STEPS_PER_EPOCH, "wall_time_s": 60.0 * e,
              "val_top1": v} for e, v in ((1, 0.72), (2, 0.83), (3, 0.81))]
  (root / "finished" / "summary.json").write_text(json.dumps({
      "step": 30, "epochs": 3.0, "history": history,
      "best": {"best": 0.83, "best_step": 20, "bad_epochs": 1, "stopped": False},
      "test": {"loss": 0.9, "top1": 0.82, "top5": 0.99}}))

  # Crashed after step 8, resumed from a step-6 checkpoint: step 8 is logged again, and that
  # window includes compilation. The last line is being written.
  running = [_train(4, 0.2, 10.0), _train(8, 0.3, 2000.0), _train(8, 0.35, 20.0),
             _train(10, 0.4, 500.0), _eval(10, 0.65), _train(14, 0.5, 600.0),
             _train(18, 0.6, 700.0), _train(20, 0.74, 800.0), _eval(20, 0.71),
             _train(24, 0.8, 900.0)]
  _write(root / "running", {**CONFIG, "dataset": "my_ds"}, running, tail='{"step": 28, "spl')
  # Its newest checkpoint: the head gives the class count, the progress the wall times.
  model = models.get("test_cgmlp", num_classes=10)
  shapes = jax.eval_shape(model.init, jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))
  state = {"step": np.int32(20), "params": jax.tree.map(lambda s: np.zeros(s.shape, s.dtype),
                                                        shapes["params"])}
  progress = {"history": [{"epoch": 1, "step": 10, "wall_time_s": 30.0},
                          {"epoch": 2, "step": 20, "wall_time_s": 61.2, "train_top1": 0.78}]}
  with ocp.CheckpointManager(root / "running" / "checkpoints",
                             item_names=("state", "progress")) as manager:
    manager.save(20, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             progress=ocp.args.JsonSave(progress)))
    manager.wait_until_finished()
  return root


@pytest.fixture(scope="module")
def built(workdirs, tmp_path_factory):
  out = tmp_path_factory.mktemp("report")
  markdown = report.build_report([str(workdirs / "finished"), str(workdirs / "running")], str(out))
  return markdown, out


def _rows(markdown):
  lines = [line for line in markdown.splitlines() if line.startswith("| ")]
  header = [c.strip() for c in lines[0].strip("|").split("|")]
  assert tuple(header) == report.COLUMNS
  return [dict(zip(header, (c.strip() for c in line.strip("|").split("|")))) for line in lines[1:]]


def test_runlog_of_running_workdir(workdirs):
  run = runlog.read(str(workdirs / "running"))
  assert not run.finished and run.steps_per_epoch == STEPS_PER_EPOCH
  assert [(e.epoch, e.step, e.wall_time_s) for e in run.epochs] == [(1, 10, 30.0), (2, 20, 61.2)]
  # Without the trainer's epoch mean, the logged windows' mean weighted by their steps: 4 steps at
  # 0.2, 4 at 0.35 (the resumed run's line), 2 at 0.4.
  assert run.epochs[0].train["top1"] == pytest.approx(0.3) and run.epochs[1].val["top1"] == 0.71
  assert run.epochs[1].train["top1"] == 0.78  # the epoch mean the trainer recorded wins
  assert [r["step"] for r in run.train] == [4, 8, 10, 14, 18, 20, 24]
  assert run.train[1]["top1"] == 0.35  # the resumed run's line replaces the crashed one's
  assert run.images_per_sec == [2000.0, 500.0, 600.0, 700.0, 800.0, 900.0]
  assert run.test is None


def test_table(built):
  finished, running = _rows(built[0])
  params = f"{20_096 - 1000 * 16 - 1000 + 10 * 16 + 10:,}"  # registry count is for 1000 classes
  # Final train top-1: epoch 3's windows, 4 steps at 0.90, 4 at 0.92 and 2 at 0.95.
  assert finished == dict(zip(report.COLUMNS, [
      "finished", "test_cgmlp", "10", params, finished["GFLOPs/img"], "83.00 (2)", "91.80",
      "+10.80", "82.00 / 99.00", "1,000", "3.0", "1.0", "2.0", "–"]))
  assert 0 < float(finished["GFLOPs/img"]) < 0.001  # 3 significant digits, not 0.000
  assert re.fullmatch(r"running \(unfinished: epoch 2/3, no summary.json; metrics last written "
                      r"\d{4}-\d\d-\d\d \d\d:\d\d UTC: running, stopped or crashed\)",
                      running.pop("run"))
  assert running == dict(zip(report.COLUMNS[1:], [
      "test_cgmlp", "10", params, finished["GFLOPs/img"],
      "71.00 (2)", "78.00", "+7.00", "n/a", "750", "1.0", "1.0", "–", "–"]))


def test_plots_are_images(built):
  markdown, out = built
  assert (out / "report.md").read_text() == markdown
  for name, shape in (("val_top1.png", (600, 960, 4)), ("loss.png", (600, 960, 4)),
                      ("gap.png", (576, 1440, 4))):
    assert f"]({name})" in markdown
    assert mpimg.imread(str(out / name)).shape == shape


def test_unknown_wall_time_and_classes(workdirs, tmp_path):
  shutil.copytree(workdirs / "running", tmp_path / "run", ignore=shutil.ignore_patterns("checkp*"))
  run = runlog.read(str(tmp_path / "run"))
  assert [e.wall_time_s for e in run.epochs] == [None, None]
  assert report.num_classes(run) == (1000, False)  # "my_ds", no checkpoint
  run.config["dataset"] = "cifar10:3.0.2"
  assert report.num_classes(run) == (10, True)
  notes = []
  cells = dict(zip(report.COLUMNS, report.row(run, notes)))
  assert cells["wall time (min)"] == cells["min to 70%"] == "n/a" and cells["min to 80%"] == "–"


def test_errors(workdirs, tmp_path, capsys):
  with pytest.raises(ValueError, match=f"Workdir {tmp_path / 'missing'} does not exist"):
    report.build_report([str(tmp_path / "missing")], str(tmp_path / "out"))
  with pytest.raises(ValueError, match=f"{tmp_path} is not a training workdir: it has no "
                                       "metrics.jsonl"):
    report.build_report([str(workdirs / "finished"), str(tmp_path)], str(tmp_path / "out"))
  assert not (tmp_path / "out").exists()  # checked before anything is written
  bad = tmp_path / "bad"
  _write(bad, CONFIG, [_train(4, 0.3, 10.0)], tail='{"step": 8}\n' + json.dumps(_eval(10, 0.5)))
  with pytest.raises(ValueError, match=r"metrics.jsonl: unexpected line \{'step': 8\}"):
    runlog.read(str(bad))
  with pytest.raises(SystemExit):
    report.main([str(tmp_path / "missing"), "--out", str(tmp_path / "out")])
  assert "does not exist" in capsys.readouterr().err


def test_thresholds_set_the_minutes_to_columns(workdirs, tmp_path):
  markdown = report.build_report([str(workdirs / "finished")], str(tmp_path), (0.5, 0.75))
  header = markdown.splitlines()[2]
  assert header.endswith("| min to 50% | min to 75% |")



def test_runs_of_the_same_name_are_told_apart_by_their_parent(workdirs, tmp_path):
  for seed in ("seed0", "seed1"):
    shutil.copytree(workdirs / "finished", tmp_path / seed / "gmlp")
  markdown = report.build_report([str(tmp_path / seed / "gmlp") for seed in ("seed0", "seed1")],
                                 str(tmp_path / "out"))
  assert [row["run"] for row in _rows(markdown)] == ["seed0/gmlp", "seed1/gmlp"]


def test_stopping_replay_finds_where_each_rule_would_have_stopped(tmp_path):
  # Validation loss is best at epoch 2, top-1 at epoch 3: with patience 2 the loss rule stops
  # after epoch 4, the top-1 rule after epoch 5; with patience 10 neither stops.
  losses, top1s = (3.0, 2.0, 2.1, 2.2, 1.9, 2.5), (0.1, 0.3, 0.35, 0.34, 0.33, 0.32)
  lines = [{"step": 10 * e, "split": "val", "loss": loss, "top1": top1, "top5": 0.9}
           for e, (loss, top1) in enumerate(zip(losses, top1s), 1)]
  _write(tmp_path / "run", CONFIG, lines)
  runs = [runlog.read(str(tmp_path / "run"))]
  assert report.stopping_replay(runs, 2).splitlines()[2] == (
      "| run | epoch 4 (best 2; top-1 35.00) | epoch 5 (best 3; top-1 35.00) |")
  assert report.stopping_replay(runs, 10).splitlines()[2] == (
      "| run | not by epoch 6 (best 5) | not by epoch 6 (best 3) |")


def test_a_published_log_is_tabled_and_plotted_against_a_run(tmp_path):
  # 12 epochs; the run's validation top-1 is 2 points above the anchor's everywhere, its learning
  # rate halves after epoch 6 (the anchor's after 8); the anchor gives percents, in a TSV.
  lines = []
  for epoch in range(1, 13):
    step = epoch * STEPS_PER_EPOCH
    lr = 1e-3 if epoch <= 6 else 5e-4
    lines += [{**_train(step - 8, 0.9, 100.0), "lr": lr}, {**_train(step, 0.4, 100.0), "lr": lr},
              _eval(step, 0.30 + 0.01 * epoch)]
  _write(tmp_path / "run", CONFIG, lines)
  anchor = tmp_path / "published.tsv"
  anchor.write_text("epoch\tval_loss\tval_top1\ttrain_top1\tlr_replayed\n" + "".join(
      f"{e}\t2.0\t{28.0 + e:.1f}\t49.0\t{0.003 if e <= 8 else 0.0015}\n" for e in range(1, 13)))
  markdown = report.build_report([str(tmp_path / "run")], str(tmp_path / "out"), anchor=str(anchor))
  # Epoch 10: the run's mean of epochs 6-10 is 38.00 %, the anchor's 36.00 %.
  # The run's training top-1 is one point above the anchor's 49 %: each epoch's two train lines,
  # 0.9 over its first 2 steps and 0.4 over the other 8, average 0.5 weighted by their steps.
  assert "| 10 | 38.00 | 36.00 | +2.00 | 1.5000 | 2.0000 | +1.00 |" in markdown
  assert "over epochs 1-12: 2.00 pp (mean signed +2.00)" in markdown
  assert ("over epochs 1-12: mean signed difference +1.00 pp, against +2.00 pp in validation "
          "top-1") in markdown
  assert "mean validation top-1: run 40.00 %, anchor 38.00 %" in markdown
  assert "lowered after epochs: run [6], anchor [8]" in markdown
  assert mpimg.imread(tmp_path / "out" / "anchor.png").shape[-1] in (3, 4)


def test_an_anchor_without_its_columns_is_named(tmp_path):
  bad = tmp_path / "log.csv"
  bad.write_text("epoch,accuracy\n1,0.5\n")
  with pytest.raises(ValueError, match=r"log.csv needs a header with 'epoch' and 'val_top1'"):
    report.build_report([str(tmp_path)], str(tmp_path / "out"), anchor=str(bad))


def test_a_partial_last_line_is_skipped_with_a_warning_and_other_bad_lines_are_named(tmp_path,
                                                                                    capsys):
  """A cut last line used to be dropped silently; a bad line elsewhere is an error at its line
  (blank lines counted: the number is the file's)."""
  _write(tmp_path / "cut", CONFIG, [_train(4, 0.3, 10.0), _eval(10, 0.7)], tail='{"step": 1')
  run = runlog.read(str(tmp_path / "cut"))
  assert [e.val["top1"] for e in run.epochs] == [0.7]
  assert capsys.readouterr().err == (f"warning: {tmp_path / 'cut' / 'metrics.jsonl'}:3 is a "
                                     f"partial line (being written, or cut off by a crash); "
                                     f"skipped.\n")
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "metrics.jsonl").write_text(
      json.dumps(_train(4, 0.3, 10.0)) + "\n\n" + '{"step": 8, "spl{"step": 8}\n'
      + json.dumps(_eval(10, 0.7)) + "\n")
  with pytest.raises(ValueError, match=r"bad/metrics.jsonl:3 is not a JSON object"):
    runlog.read(str(tmp_path / "bad"))
