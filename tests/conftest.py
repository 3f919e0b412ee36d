"""Test-wide setup: 8 fake CPU devices so sharded code paths run on any machine.

The device count must be set before JAX initialises its backends, hence at import time here.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cgmlp_jax  # noqa: E402,F401  (before JAX's backends start: the malloc settings)
import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import tempfile  # noqa: E402

# Runs in one session often compile the same programs (e.g. a run and its resumed copy): share
# them through a persistent compilation cache that lives as long as the session.
_CACHE = tempfile.mkdtemp(prefix="cgmlp_jax_test_xla_cache_")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

from typing import Any, NamedTuple  # noqa: E402

import pytest  # noqa: E402

from cgmlp_jax.train import trainer as trainer_lib  # noqa: E402
from tiny_run import run, tiny_config  # noqa: E402


class StraightRun(NamedTuple):
  workdir: Any
  summary: dict
  trainer: trainer_lib.Trainer  # the run's jitted functions, to inspect their compile caches


@pytest.fixture(scope="session")
def compile_cache_dir():
  return _CACHE


@pytest.fixture(scope="session")
def straight_run(tmp_path_factory):
  """An uninterrupted tiny run (2 epochs, 10 steps): the reference for resumed / failed runs."""
  workdir, built, build = tmp_path_factory.mktemp("straight"), [], trainer_lib.build

  def recording_build(*args, **kwargs):
    built.append(build(*args, **kwargs))
    return built[-1]

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(trainer_lib, "build", recording_build)
    summary = run(tiny_config(), workdir)
  return StraightRun(workdir, summary, built[0])


# Tests that retried after a JAX runtime abort (test_multihost.retry_once_if_aborted): reported
# at the end of the session, not only as a warning.
RETRIED = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
  retried = config.stash.get(RETRIED, [])
  if retried:
    terminalreporter.section("RETRIED after a JAX runtime abort (first attempt's output)")
    for nodeid, output in retried:
      terminalreporter.write_line(f"RETRIED {nodeid}")
      terminalreporter.write_line(output[-4000:])
