"""A user's mistakes get one ``error: ...`` line (exit status 2), before anything is read or written.

README "Mistakes" lists each case with its test here (config values that cannot train:
``test_train.py::test_bad_configs_fail_before_any_data_or_compile``).
"""
import os
import pathlib
import subprocess
import sys

import pytest

from cgmlp_jax import cli
from cgmlp_jax.tools.visualize import __main__ as visualize_cli
from cgmlp_jax.errors import ConfigError
from cgmlp_jax.train import WorkdirError, config as config_lib, loop
from tiny_run import tiny_config

ROOT = pathlib.Path(__file__).parent.parent


def test_launch_prints_one_line_and_exits_2_without_touching_the_workdir(tmp_path):
  """The whole command, as a user runs it: no traceback, no TensorFlow start-up lines."""
  workdir = tmp_path / "run"
  env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path / "no_data")}
  env.pop("CGMLP_JAX_TRACEBACK", None)
  result = subprocess.run(
      [sys.executable, "launch.py", "--config=configs/cgmlp.py:small", f"--workdir={workdir}",
       "--config.optimizer.lerning_rate=1e-3"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stdout == ""
  assert result.stderr.splitlines() == [
      "error: Unknown config field 'optimizer.lerning_rate'. Did you mean "
      "'optimizer.learning_rate'? Valid: b1, b2, decay_mask, eps, grad_clip_norm, "
      "learning_rate, min_learning_rate, plateau_atol, plateau_factor, plateau_patience, "
      "plateau_rtol, schedule, warmup_epochs, weight_decay, weight_decay_mode."]
  assert not workdir.exists() and not (tmp_path / "no_data").exists()


@pytest.mark.parametrize("argv, message", [
    (["--config.not_a_field=1"], r"Unknown config field 'not_a_field'. Valid: augment, "),
    (["--config.optimizer.lerning_rate=1"],
     r"'optimizer.lerning_rate'. Did you mean 'optimizer.learning_rate'\?"),
    (["--config.model_kw.dept=8"], r"Unknown model field 'model_kw.dept'. Did you mean "
                                   r"'model_kw.depth'\?"),
    (["--config.num_epochs.x=1"], r"Unknown config field 'num_epochs.x'"),
])
def test_unknown_overrides_are_named_with_a_did_you_mean(argv, message):
  with pytest.raises(ConfigError, match=message):
    cli.preflight(["launch.py", "--config=configs/cgmlp.py:small", *argv])


@pytest.mark.parametrize("spec, message", [
    ("configs/cgmlp.py:small=ture", r"Config argument small='ture' is not a bool"),
    ("configs/cpu_track.py:epochs=0", r"Config argument epochs='0' must be positive"),
    ("configs/cpu_track.py:epochs=ten", r"Config argument epochs='ten' is not a int"),
    ("configs/cgmlp.py:conv=1", r"Unknown config argument 'conv'. Did you mean 'convs'\?"),
    ("configs/paper.py:model=gmlpx", r"model='gmlpx'; choose one of"),
    ("configs/nope.py", r"Config file 'configs/nope.py' not found"),
])
def test_config_arguments_are_parsed_strictly(spec, message, monkeypatch):
  monkeypatch.chdir(ROOT)
  with pytest.raises(ConfigError, match=message):
    cli.preflight(["launch.py", f"--config={spec}"])


def test_every_model_field_can_be_overridden(monkeypatch):
  monkeypatch.chdir(ROOT)
  argv, overrides = cli.preflight(
      ["launch.py", "--config=configs/cpu_track.py:model=gmlp,recipe=fast", "--workdir=w",
       "--config.model_kw.depth=8", "--config.model_kw.axes=alternate",
       "--config.model_kw.d_ffn=128", "--config.num_epochs=2"])
  # d_ffn is listed by the fast recipe's config, so ml_collections parses it; the others are not.
  assert overrides == {"depth": 8, "axes": "alternate"}
  assert argv == ["launch.py", "--config=configs/cpu_track.py:model=gmlp,recipe=fast",
                  "--workdir=w", "--config.model_kw.d_ffn=128", "--config.num_epochs=2"]
  config = cli.load_config_file("configs/cpu_track.py:model=gmlp").lock()
  cli.apply_model_overrides(config, overrides)
  assert config_lib.build_model(config, 10).depth == 8


def test_a_workdir_that_is_a_file_is_named(tmp_path):
  path = tmp_path / "notes.txt"
  path.write_text("mine")
  with pytest.raises(WorkdirError, match=r"notes.txt is a file, not a directory"):
    loop.train_and_evaluate(tiny_config(), str(path))
  assert path.read_text() == "mine" and os.listdir(tmp_path) == ["notes.txt"]


def test_visualize_names_a_file_that_is_not_an_image(tmp_path, capsys):
  bad = tmp_path / "x.png"
  bad.write_text("not an image")
  with pytest.raises(SystemExit) as exit_info:
    visualize_cli.main(["--images", str(bad), "--model", "test_cgmlp", "--out",
                        str(tmp_path / "out")])
  assert exit_info.value.code == 2
  assert capsys.readouterr().err.splitlines() == [
      f"error: Cannot read image {bad}: not a PNG file"]
  assert not (tmp_path / "out").exists()


def test_user_errors_are_one_line_and_bugs_keep_their_traceback(capsys, monkeypatch):
  @cli.one_line_errors
  def user_mistake():
    raise ConfigError("Something the user can fix.\nOn two lines.")

  monkeypatch.delenv(cli.TRACEBACK_ENV, raising=False)
  with pytest.raises(SystemExit) as exit_info:
    user_mistake()
  assert exit_info.value.code == 2
  assert capsys.readouterr().err == "error: Something the user can fix. On two lines.\n"
  monkeypatch.setenv(cli.TRACEBACK_ENV, "1")
  with pytest.raises(ConfigError):
    user_mistake()
  with pytest.raises(ZeroDivisionError):
    cli.one_line_errors(lambda: 1 / 0)()


@pytest.mark.parametrize("source, message", [
    ("def get_config():\n  return {'model': 'gmlp'}\n",
     r"get_config\(\) in .*bad.py returned a dict, not an ml_collections.ConfigDict"),
    ("def get_config():\n  return base_config(\n", r"Config file .*bad.py, line 2: '\(' was never "
                                                   r"closed\.$"),
    ("def get_config():\n  epochs = 0\n  return 100 / epochs\n",
     r"Config file .*bad.py, line 3 \(from --config=.*bad.py\) failed: ZeroDivisionError: "),
    ("x = 1\nraise RuntimeError('no GPU here')\n",
     r"Config file .*bad.py, line 2 \(from --config=.*bad.py\) failed: RuntimeError: no GPU here$"),
    ("CONFIG = 1\n", r"Config file .*bad.py defines no get_config\(\)"),
])
def test_a_config_file_that_fails_is_one_line_naming_it(source, message, tmp_path):
  """These used to be an AttributeError deep in ml_collections, or a 20-line traceback."""
  path = tmp_path / "bad.py"
  path.write_text(source)
  with pytest.raises(ConfigError, match=message):
    cli.preflight(["launch.py", f"--config={path}"])


def test_an_rgba_dataset_without_its_own_statistics_is_refused_before_its_data(tmp_path,
                                                                               monkeypatch):
  """Grayscale and RGBA data used to fail after reading, with a traceback about normalisation."""
  monkeypatch.setattr(loop.data_lib, "image_channels", lambda name, data_dir: 4)
  with pytest.raises(ConfigError, match=r"cifar10 images have 4 channels but the normalisation "
                                        r"has 3, .* set --config.augment.mean and "
                                        r"--config.augment.std to 4 values each"):
    loop.train_and_evaluate(tiny_config(), str(tmp_path / "run"))  # no data: would fail on it
  assert not (tmp_path / "run").exists()
