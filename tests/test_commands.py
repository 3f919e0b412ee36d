"""The command lines parsed by ``cli.parse_flags``: ``--help`` lists every flag with its
description, and a mistake on the command line is one ``error:`` line with exit status 2."""
import pathlib
import re
import subprocess
import sys

import pytest
from absl import flags

from cgmlp_jax.models import summary
from cgmlp_jax.tools import export_weights, report, sweep, sweep_report
from cgmlp_jax.tools.visualize import __main__ as visualize_cli

ROOT = pathlib.Path(__file__).parent.parent
COMMANDS = {"report": report, "sweep": sweep, "sweep_report": sweep_report,
            "visualize": visualize_cli, "export_weights": export_weights}


def _assert_lists_every_flag(module, text):
  values = flags.FlagValues()
  module.define_flags(values)
  assert list(values)
  for name in values:
    assert re.search(rf"^  --(\[no\])?{name}: \S", text, re.MULTILINE), (name, text)


@pytest.mark.parametrize("module", COMMANDS.values(), ids=COMMANDS)
def test_help_lists_every_flag_with_a_description(module, capsys):
  with pytest.raises(SystemExit) as exit_info:
    module.main(["--help"])
  assert exit_info.value.code == 0
  text = capsys.readouterr().out
  assert text.startswith("usage: python -m cgmlp_jax.tools.")
  _assert_lists_every_flag(module, text)


@pytest.mark.parametrize("module", COMMANDS.values(), ids=COMMANDS)
def test_an_unknown_flag_is_one_line(module, capsys):
  with pytest.raises(SystemExit) as exit_info:
    module.main(["--bogus=1"])
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and err[0].startswith("error: Unknown command line flag 'bogus'")


@pytest.mark.parametrize("argv, message", [
    (["--out=o"], r"needs at least one WORKDIR \(a training workdir, finished or running\)"),
    (["w", "--out"], "Missing value for flag --out"),
    (["w"], "Flag --out must have a value other than None"),
    (["w", "--out=o", "--replay_patience=two"], "flag --replay_patience=two: invalid literal"),
])
def test_a_missing_or_bad_argument_is_one_line(argv, message, capsys):
  with pytest.raises(SystemExit) as exit_info:
    report.main(argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 1 and re.match(f"error: .*{message}", err[0]), err


def test_the_summary_command():
  """``python -m cgmlp_jax.models.summary`` parses its flags in its ``__main__`` block only (the
  models import nothing of cli), so it is run as users run it."""
  def command(*argv):
    return subprocess.run([sys.executable, "-m", "cgmlp_jax.models.summary", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)

  result = command("--help")
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("usage: python -m cgmlp_jax.models.summary")
  _assert_lists_every_flag(summary, result.stdout)
  result = command("--num_clases", "100")
  assert result.returncode == 2 and result.stdout == ""
  assert result.stderr.splitlines() == [
      "error: Unknown command line flag 'num_clases'. Did you mean: num_classes ?"]
