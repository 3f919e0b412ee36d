"""Two JAX processes on localhost (gloo CPU collectives, 2 devices each) train, checkpoint and
resume like one process with 4 devices. Each process runs ``tests/tiny_run.py`` as a subprocess.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import conftest
from tiny_run import NUM_EXAMPLES, final_params

TINY_RUN = Path(__file__).with_name("tiny_run.py")
UNBUFFERED = {**os.environ, "PYTHONUNBUFFERED": "1"}  # a process that aborts loses no output
TIMEOUT_S = 360  # per job; a hung collective fails the test (with stacks) instead of hanging CI


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(workdir, cache_dir, num_processes, devices, num_epochs, tmp_path, signal_when=None,
           **flags):
  """Starts the processes of one job and waits for all; returns [(returncode, output), ...].

  ``signal_when``: ``(text, process, signum)``: once process 0's output holds ``text``, ``signum``
  goes to process ``process``.
  """
  port = free_port()
  processes = []
  for i in range(num_processes):
    extra = [f"--{k}={v.format(i=i) if isinstance(v, str) else v}" for k, v in flags.items()]
    command = [sys.executable, str(TINY_RUN), str(workdir), f"--cache_dir={cache_dir}",
               f"--devices={devices}", f"--num_epochs={num_epochs}",
               f"--num_processes={num_processes}", f"--process_id={i}", f"--port={port}", *extra]
    log = (tmp_path / f"{workdir.name}_{num_epochs}_{i}.log").open("w+")
    processes.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                       cwd=TINY_RUN.parent.parent, env=UNBUFFERED), log))
  deadline = time.monotonic() + TIMEOUT_S
  try:
    if signal_when:
      text, target, signum = signal_when
      while text not in read(processes[0][1]) and time.monotonic() < deadline:
        if any(p.poll() is not None for p, _ in processes):
          break
        time.sleep(0.2)
      processes[target][0].send_signal(signum)
    for process, _ in processes:
      process.wait(timeout=max(deadline - time.monotonic(), 0))
  except subprocess.TimeoutExpired:
    for process, _ in processes:
      if process.poll() is None:
        process.send_signal(signal.SIGUSR1)  # tiny_run.py dumps every thread's stack
    time.sleep(2)
    pytest.fail(f"timed out after {TIMEOUT_S} s:\n"
                + describe([(p.poll(), read(log)) for p, log in processes]))
  finally:
    for process, _ in processes:
      process.kill()
  return [(process.returncode, read(log)) for process, log in processes]


def read(log) -> str:
  log.flush()
  log.seek(0)
  return log.read()


def describe(results) -> str:
  """The end of every process's output, unabridged (an assert's repr would elide the middle)."""
  return "\n".join(f"--- process {i} (exit {code}), end of its output ---\n{output[-8000:]}"
                   for i, (code, output) in enumerate(results))


def codes(results) -> list[int]:
  return [code for code, _ in results]


def check_exit_codes(results, expected) -> None:
  if codes(results) != expected:
    pytest.fail(f"exit codes {codes(results)}, expected {expected}:\n" + describe(results))


@pytest.fixture(scope="module")
def single_process_run(tmp_path_factory, compile_cache_dir):
  tmp_path = tmp_path_factory.mktemp("single")
  workdir = tmp_path / "single"
  check_exit_codes(launch(workdir, compile_cache_dir, 1, 4, 2, tmp_path), [0])
  return workdir


def train_then_resume(root, cache_dir):
  """Two processes train one epoch in root/two, then (if that worked) resume it for a second."""
  root.mkdir()
  first = launch(root / "two", cache_dir, 2, 2, 1, root,
                 record_indices=str(root / "indices_{i}.json"))
  second = launch(root / "two", cache_dir, 2, 2, 2, root) if codes(first) == [0, 0] else []
  return first, second


def retry_once_if_aborted(job, tmp_path, request):
  """``job(root)`` -> launches' results; run once more in a fresh root if a process was aborted.

  JAX's CPU multi-process runtime (coordination service, gloo) aborted both processes of this job
  once in CI (SIGABRT, output lost). One known cause, two checkpoint managers joining one orbax
  barrier ("Barrier ... is already ongoing"), is fixed in train/checkpoint.py; the retry stays for
  an abort of the runtime itself. A second attempt keeps such a flake from failing CI; it is
  reported, not hidden: in the session's summary ("RETRIED", conftest.py) with the first attempt's
  output, and as the test's ``retried`` property in a JUnit report. Any other failure, or a second
  abort, fails the test.
  """
  results = job(root := tmp_path / "attempt1")
  if -signal.SIGABRT in [code for r in results for code in codes(r)]:
    first = "\n".join(describe(r) for r in results)
    request.node.user_properties.append(("retried", "the JAX runtime aborted a process"))
    request.config.stash.setdefault(conftest.RETRIED, []).append((request.node.nodeid, first))
    warnings.warn("the JAX runtime aborted a process; retrying once:\n" + first)
    results = job(root := tmp_path / "attempt2")
  return root, results


def test_two_processes_train_resume_and_match_one_process(single_process_run, tmp_path,
                                                          compile_cache_dir, request):
  root, (first, second) = retry_once_if_aborted(
      lambda root: train_then_resume(root, compile_cache_dir), tmp_path, request)
  check_exit_codes(first, [0, 0])

  # Per-process data: disjoint, and together every training example of the epoch exactly once.
  per_process = [json.loads((root / f"indices_{i}.json").read_text()) for i in range(2)]
  assert [len(steps) for steps in per_process] == [5, 5]  # 5 steps of 4 local examples each
  local = [np.concatenate(steps) for steps in per_process]
  assert not set(local[0]) & set(local[1])
  assert sorted(np.concatenate(local)) == list(range(NUM_EXAMPLES))

  check_exit_codes(second, [0, 0])  # the second epoch: a resumed run
  assert "Resumed from" in second[0][1] and "Resumed from" not in second[1][1]  # process 0 logs
  assert "step 10/10" in second[0][1] and "step 10/10" not in second[1][1]

  workdir = root / "two"
  metrics = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in metrics if m["split"] == "val"] == [5, 10]  # written once, not twice
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               final_params(workdir), final_params(single_process_run))


def test_a_crashed_process_does_not_hang_the_other(tmp_path, compile_cache_dir):
  results = launch(tmp_path / "crash", compile_cache_dir, 2, 2, 2, tmp_path,
                   crash_at_step="{i}")  # process 1 dies before its first step; 0 never crashes
  assert results[1][0] == 3
  assert results[0][0] != 0, results[0][1]  # stopped (coordination service error), not hung


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path, compile_cache_dir, request):
  """Preemption signals one host: the processes agree on the stop step (every log_every_steps),
  both save it and exit with 128 + SIGTERM; none hangs in a collective the other left."""
  def job(root):
    root.mkdir()
    return [launch(root / "two", compile_cache_dir, 2, 2, 2, root, step_delay=1.0,
                   signal_when=("step 2/10", 1, signal.SIGTERM))]

  root, (results,) = retry_once_if_aborted(job, tmp_path, request)
  check_exit_codes(results, [128 + signal.SIGTERM] * 2)
  stops = [re.findall(r"Stopped by SIGTERM at step (\d+);", output) for _, output in results]
  assert stops[0] and stops[0] == stops[1], describe(results)
  step = int(stops[0][0])
  assert 2 <= step < 10 and step % 2 == 0  # an agreed (log) step, before the end
  assert max(int(p.name) for p in (root / "two" / "checkpoints").iterdir()
             if p.name.isdigit()) == step
  assert not (root / "two" / "lock").exists()
