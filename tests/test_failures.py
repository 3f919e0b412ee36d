"""Failures never lose work: signals, divergence, bad checkpoints, bad workdirs, changed configs.

Each test starts from (a copy of) the tiny uninterrupted run ``straight_run`` (conftest) and checks
both the error a user sees and that the workdir still holds what it held.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from orbax.checkpoint._src.path import atomicity

from cgmlp_jax.train import CheckpointError, WorkdirError, interrupts, lock as lock_lib, loop
from cgmlp_jax.train.nonfinite import NonFiniteError
from tiny_run import final_params, run, tiny_config, whole_state

TINY_RUN = Path(__file__).with_name("tiny_run.py")


def checkpoint_steps(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def files(workdir):
  return {str(p.relative_to(workdir)): p.stat().st_size for p in workdir.rglob("*") if p.is_file()}


def copy_until(straight_run, tmp_path, last_step):
  """The straight run's workdir as it was after ``last_step`` (later checkpoints removed)."""
  workdir = tmp_path / "run"
  shutil.copytree(straight_run[0], workdir)
  for step in checkpoint_steps(workdir):
    if step > last_step:
      shutil.rmtree(workdir / "checkpoints" / str(step))
  shutil.rmtree(workdir / "best")
  return workdir


def test_sigterm_mid_epoch_saves_and_the_resumed_run_matches(straight_run, tmp_path,
                                                             compile_cache_dir):
  workdir = tmp_path / "preempted"
  process = subprocess.Popen(
      [sys.executable, str(TINY_RUN), str(workdir), "--step_delay=0.5",
       f"--cache_dir={compile_cache_dir}"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=TINY_RUN.parent.parent)
  lines, reached_step_2 = [], threading.Event()

  def read():
    for line in process.stdout:
      lines.append(line)
      if line.startswith("step 2/10"):
        reached_step_2.set()

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  try:
    assert reached_step_2.wait(timeout=180), "".join(lines)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 128 + signal.SIGTERM, "".join(lines)
  finally:
    process.kill()
  reader.join(timeout=10)
  output = "".join(lines)
  stopped_at = checkpoint_steps(workdir)[-1]
  # Mid-epoch 1 (steps 1-5). With the dispatch bounded (max_steps_ahead) the stop can land on the
  # logged step 2 itself, a regular save step too; the message below says the stop saved it.
  assert 2 <= stopped_at < 5, output
  assert f"Stopped by SIGTERM at step {stopped_at}; checkpoint saved" in output
  assert "Run the same command to resume." in output
  assert not (workdir / "lock").exists()  # released on the stop

  summary = run(tiny_config(), workdir)
  assert summary["step"] == straight_run[1]["step"]
  jax.tree.map(np.testing.assert_array_equal, final_params(workdir),
               final_params(straight_run[0]))


def test_sigint_is_a_stop_request_and_a_second_one_aborts():
  before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as a background job
  with interrupts.StopRequests() as stops:
    assert stops.requested(1) is None
    os.kill(os.getpid(), signal.SIGINT)
    assert stops.requested(2) == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is before  # restored


@pytest.fixture
def diverging(straight_run, tmp_path, monkeypatch):
  """The run after step 4, resumed with a loss whose gradients are NaN from step 5 on (a non-finite
  learning rate is refused before the run starts: test_train.py)."""
  workdir = copy_until(straight_run, tmp_path, 4)
  cross_entropy = optax.softmax_cross_entropy
  monkeypatch.setattr(optax, "softmax_cross_entropy",
                      lambda logits, labels: cross_entropy(logits * jnp.nan, labels))
  return workdir, tiny_config()


def test_nonfinite_step_stops_with_its_number_and_keeps_the_last_good_checkpoint(
    diverging, straight_run):
  workdir, config = diverging
  before = final_params(workdir)
  with pytest.raises(FloatingPointError, match=r"Non-finite loss or gradients at step 5 .*"
                                               r"latest checkpoint \(step 4\)"):
    run(config, workdir)
  assert checkpoint_steps(workdir) == [2, 4]
  assert not (workdir / "lock").exists()  # released on the error
  jax.tree.map(np.testing.assert_array_equal, final_params(workdir), before)


def test_nonfinite_steps_can_be_skipped(diverging):
  workdir, config = diverging
  before = final_params(workdir)
  config.skip_nonfinite_steps = True
  summary = run(config, workdir)
  assert summary["step"] == 10
  jax.tree.map(np.testing.assert_array_equal, final_params(workdir), before)  # all skipped
  train_lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()
                 if '"train"' in line and json.loads(line)["step"] > 4]
  assert sum(line.get("skipped_steps", 0) for line in train_lines) == 6
  for step in checkpoint_steps(workdir):  # the whole state, optimiser moments included
    leaves = jax.tree_util.tree_flatten_with_path(whole_state(workdir, step))[0]
    assert all(np.all(np.isfinite(x)) for path, x in leaves
               if "best_value" not in jax.tree_util.keystr(path))  # plateau: inf until validated


def test_a_run_whose_last_steps_were_all_skipped_stops(diverging):
  """Every step skipped used to "succeed" with checkpoints, a best/ and a summary of nothing."""
  workdir, config = diverging
  before = final_params(workdir)
  config.skip_nonfinite_steps, config.skip_nonfinite_limit = True, 3
  with pytest.raises(NonFiniteError, match=r"The last 4 steps \(to step 8\) were all non-finite "
                                           r"and skipped: the run no longer trains.*state of "
                                           r"step 4.*skip_nonfinite_limit=3"):
    run(config, workdir)
  assert checkpoint_steps(workdir) == [2, 4, 5, 6]  # 5, 6: the state of step 4
  jax.tree.map(np.testing.assert_array_equal, final_params(workdir), before)
  assert not (workdir / "lock").exists()


def test_checkpoint_of_another_model_is_named_and_left_alone(straight_run, tmp_path):
  workdir = copy_until(straight_run, tmp_path, 10)
  before = files(workdir)
  with pytest.raises(CheckpointError, match=r"checkpoints/10 does not fit the model(.|\n)*"
                                            r"checkpoint \(16,\) float32, model \(24,\) float32"):
    run(tiny_config(model_kw={"d_model": 24}), workdir)
  assert files(workdir) == before


def test_corrupt_checkpoint_is_an_error_or_a_fresh_start_elsewhere(straight_run, tmp_path):
  workdir = copy_until(straight_run, tmp_path, 10)
  for path in (workdir / "checkpoints" / "10" / "state").rglob("*"):
    if path.is_file() and path.stat().st_size > 1000:
      path.write_bytes(path.read_bytes()[:100])  # truncated
  before = files(workdir)
  with pytest.raises(CheckpointError, match=r"checkpoints/10 .*(truncated or corrupt)"):
    run(tiny_config(), workdir)
  assert files(workdir) == before

  summary = run(tiny_config(on_bad_checkpoint="fresh"), workdir)
  assert summary["step"] == 10 and checkpoint_steps(workdir / "fresh")[-1] == 10
  jax.tree.map(np.testing.assert_array_equal, final_params(workdir / "fresh"),
               final_params(straight_run[0]))
  assert {k: v for k, v in files(workdir).items() if not k.startswith("fresh/")} == before


def test_failed_save_keeps_the_earlier_checkpoints(tmp_path, monkeypatch):
  save = ocp.CheckpointManager.save

  def disk_full_at_step_4(self, step, *args, **kwargs):
    if step == 4:
      raise OSError(28, "No space left on device")
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, "save", disk_full_at_step_4)
  with pytest.raises(CheckpointError, match=r"Saving checkpoint step 4 to .* failed \(OSError: "
                                            r".*No space left.*earlier checkpoints \[2\] are intact"):
    run(tiny_config(), tmp_path)
  assert checkpoint_steps(tmp_path) == [2]
  monkeypatch.undo()
  assert run(tiny_config(), tmp_path)["step"] == 10  # resumes from step 2


def test_a_save_that_cannot_create_its_directory_fails_at_once_naming_its_step(tmp_path,
                                                                             monkeypatch):
  """No permission on checkpoints/: created in the background, the failed step directory left
  the save's threads waiting 300 s for it (at exit), and the error named a later step."""
  create = atomicity.AtomicRenameTemporaryPath.create

  async def no_permission_at_step_4(self):
    if self.get_final().name == "4" and self.get_final().parent.name == "checkpoints":
      raise PermissionError(13, "Permission denied", str(self.get_final()))
    return await create(self)

  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "create", no_permission_at_step_4)
  with pytest.raises(CheckpointError, match=r"Saving checkpoint step 4 to .* failed "
                                            r"\(PermissionError: .*earlier checkpoints \[2\] are "
                                            r"intact"):
    run(tiny_config(), tmp_path)
  assert checkpoint_steps(tmp_path) == [2]
  for _ in range(100):  # nothing left waiting for the directory: the process can exit now
    waiting = [t for t in threading.enumerate() if not t.daemon and t is not
               threading.main_thread()]
    if not waiting:
      break
    time.sleep(0.1)
  assert not waiting, waiting


def test_unwritable_workdir_fails_before_reading_data(tmp_path):
  (tmp_path / "file").write_text("not a directory")
  with pytest.raises(WorkdirError, match=r"Workdir .*file/run is not writable"):
    loop.train_and_evaluate(tiny_config(), str(tmp_path / "file" / "run"))  # no mock data


def test_changed_config_is_refused_or_shown_and_the_old_one_kept(straight_run, tmp_path, capsys):
  workdir = copy_until(straight_run, tmp_path, 10)
  recorded = (workdir / "config.json").read_text()
  with pytest.raises(WorkdirError, match=r"num_epochs: 2 -> 3"):
    loop.train_and_evaluate(tiny_config(num_epochs=3, on_config_change="error"), str(workdir))
  assert (workdir / "config.json").read_text() == recorded

  summary = run(tiny_config(num_epochs=3), workdir)
  assert summary["step"] == 15  # resumed for the added epoch
  assert "num_epochs: 2 -> 3" in capsys.readouterr().out
  assert (workdir / "config.previous-1.json").read_text() == recorded
  assert json.loads((workdir / "config.json").read_text())["num_epochs"] == 3


# Tiny runs on 2 CPU devices (the default cpu_devices), argv[2] steps per epoch and no metric read
# within one, over random in-memory data (38,400 mock TFDS examples take ~20 s to make): epoch 1 to
# its end, then, resumed in the same process (no second start-up), epoch 2, stopped by the test's
# SIGTERM. test_gmlp 4x wider: a step slow enough next to its dispatch for the host to run ahead.
LOADED_RUN = """
import os
import sys
import numpy as np
import cgmlp_jax
from cgmlp_jax import cli, data
from cgmlp_jax.train import Interrupted, loop
sys.path.insert(0, "tests")
from tiny_run import tiny_config
workdir, steps, signal_at = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
n, rng = 128 * steps, np.random.default_rng(0)
train = data.ArraySplit(rng.integers(0, 256, (n, 32, 32, 3), np.uint8),
                        rng.integers(0, 10, n, np.int32), 10, tuple("0123456789"))
loop.load_data = lambda config, image_size: {"train": train}
prefetch, report = data.prefetch, {1: "compiled"}
def reporting_prefetch(*args, **kwargs):
  for step, batch in enumerate(prefetch(*args, **kwargs), 1):
    yield batch
    if step in report:
      print(report.pop(step), flush=True)
data.prefetch = reporting_prefetch
config = tiny_config(model="test_gmlp", model_kw={"d_model": 64, "d_ffn": 128}, cpu_devices=2,
                     batch_size=128, num_epochs=1,
                     log_every_steps=10 * steps, checkpoint_every_steps=10 * steps,
                     holdout_fraction=0.0, test_split="")
config.optimizer.schedule = "constant"  # unlike "cosine", the same program for 2 epochs
cli.setup_process(config)  # the CPU as config.cpu_devices = 2 devices, as launch.py
print(f"finished at step {loop.train_and_evaluate(config, workdir)['step']}", flush=True)
report[signal_at] = "signal me"
config.num_epochs = 2
try:
  loop.train_and_evaluate(config, workdir)
except Interrupted as e:
  print(e, flush=True)
  os._exit(128 + e.signum)  # skips Python's exit-time collection of everything (seconds)
"""


def test_two_cpu_devices_under_load_neither_abort_nor_ignore_sigterm(tmp_path):
  """Hundreds of steps between metric reads while other processes keep the cores busy: this
  aborted in XLA:CPU's all-reduce, deaf to SIGTERM, with the host far ahead of the devices (README
  "Failures"). Now the epoch ends, and SIGTERM stops the next one within a step or two."""
  workdir, steps, signal_at = tmp_path / "run", 300, 50
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "xla_cache"),  # for epoch 2
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
  process = subprocess.Popen(
      [sys.executable, "-c", LOADED_RUN, str(workdir), str(steps), str(signal_at)], env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=TINY_RUN.parent.parent)
  lines, seen = [], {key: threading.Event() for key in ("compiled", "signal me", "Stopped by")}

  def read():
    for line in process.stdout:
      lines.append(line)
      for key, event in seen.items():
        if line.startswith(key):
          event.set()

  reader, load = threading.Thread(target=read, daemon=True), []
  reader.start()
  try:
    assert seen["compiled"].wait(timeout=120), "".join(lines)
    # Loaded once compiled: the start-up needs no slowing down.
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    assert seen["signal me"].wait(timeout=120), "".join(lines)  # an abort takes 40 s
    process.send_signal(signal.SIGTERM)
    signalled = time.perf_counter()
    assert seen["Stopped by"].wait(timeout=60), "".join(lines)
    assert time.perf_counter() - signalled < 10, "".join(lines)  # the checkpoint is saved
    assert process.wait(timeout=60) == 128 + signal.SIGTERM, "".join(lines)
  finally:
    process.kill()
    for p in load:
      p.kill()
      p.wait()
  reader.join(timeout=10)
  output = "".join(lines)
  assert f"finished at step {steps}" in output
  stopped_at = checkpoint_steps(workdir)[-1]
  assert steps + signal_at <= stopped_at <= steps + signal_at + 3, output
  assert f"Stopped by SIGTERM at step {stopped_at}" in output


HOLD_LOCK = """
import sys, time
from cgmlp_jax.train import lock
lock.WorkdirLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def test_a_second_run_on_a_workdir_in_use_is_refused_in_one_line(tmp_path):
  """Two launch.py on one workdir used to both train in it (README "Failures")."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workdir)], text=True,
                            stdout=subprocess.PIPE, cwd=TINY_RUN.parent.parent)
  try:
    assert holder.stdout.readline() == "locked\n"
    before = files(workdir)
    env = {**os.environ, "TFDS_DATA_DIR": str(tmp_path / "no_data")}
    env.pop("CGMLP_JAX_TRACEBACK", None)
    result = subprocess.run(
        [sys.executable, "launch.py", "--config=configs/cgmlp.py:small", f"--workdir={workdir}"],
        cwd=TINY_RUN.parent.parent, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: Workdir {workdir} is in use by another run: pid {holder.pid} on host "
        f"{socket.gethostname()} (since {json.loads((workdir / 'lock').read_text())['since']}) "
        f"holds {workdir / 'lock'}. Wait for it to finish or stop it, or choose another "
        f"--workdir."]
    assert files(workdir) == before
  finally:
    holder.kill()
    holder.wait()


def test_the_lock_is_exclusive_names_its_holder_and_is_taken_over_when_stale(tmp_path, capsys):
  first, second = lock_lib.WorkdirLock(tmp_path), lock_lib.WorkdirLock(tmp_path)
  first.acquire()
  with pytest.raises(WorkdirError, match=rf"in use by another run: pid {os.getpid()} on host "):
    second.acquire()  # the flock: even this process's own second start is refused
  first.release()
  assert not (tmp_path / "lock").exists()
  # Another host's lock cannot be checked from here: refused, with the way to clear it.
  (tmp_path / "lock").write_text(json.dumps({"host": "elsewhere", "pid": 1}))
  with pytest.raises(WorkdirError, match=r"pid 1 on host elsewhere .*if that run has ended \(its "
                                         r"host went down\), delete .*lock\.$"):
    second.acquire()
  # A process of this host that has ended: taken over with one line.
  ended = subprocess.Popen([sys.executable, "-c", ""])
  ended.wait()
  (tmp_path / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": ended.pid}))
  capsys.readouterr()
  second.acquire()
  assert capsys.readouterr().out == (f"Taking over the stale lock {tmp_path / 'lock'}: pid "
                                     f"{ended.pid} on host {socket.gethostname()} has ended.\n")
  assert json.loads((tmp_path / "lock").read_text())["pid"] == os.getpid()
  second.release()
  assert not (tmp_path / "lock").exists()


def test_a_resume_takes_over_a_stale_lock_and_sets_aside_a_cut_metrics_line(straight_run,
                                                                             tmp_path, capsys):
  """A crash mid-write: the resumed run used to append onto the cut line, which made the whole
  metrics.jsonl unreadable to report and lost the next record too."""
  workdir = copy_until(straight_run, tmp_path, 8)
  metrics = workdir / "metrics.jsonl"
  lines = metrics.read_text().splitlines(keepends=True)
  cut = lines[-1][:15]  # the last record (the test line), cut mid-line
  metrics.write_text("".join(lines[:-1]) + cut)
  ended = subprocess.Popen([sys.executable, "-c", ""])
  ended.wait()
  (workdir / "lock").write_text(json.dumps({"host": socket.gethostname(), "pid": ended.pid}))
  capsys.readouterr()
  run(tiny_config(), workdir)
  out = capsys.readouterr().out.splitlines()
  assert f"Taking over the stale lock {workdir / 'lock'}: pid {ended.pid} on host " \
         f"{socket.gethostname()} has ended." in out
  assert (f"{metrics} ended in a partial line (a crash while writing it); it is kept in "
          f"metrics.jsonl.partial-1 and the file goes on after the last complete line.") in out
  assert (workdir / "metrics.jsonl.partial-1").read_text() == cut
  records = [json.loads(line) for line in metrics.read_text().splitlines()]  # every line whole
  assert records[:len(lines) - 1] == [json.loads(line) for line in lines[:-1]]
  assert [r["step"] for r in records if r["split"] == "test"] == [10]
  assert not (workdir / "lock").exists()
  jax.tree.map(np.testing.assert_array_equal, final_params(workdir), final_params(straight_run[0]))


def test_a_resume_with_another_batch_size_is_refused(straight_run, tmp_path):
  """8 -> 16 used to resume at the same step, as if at twice the data: an epoch claimed, not run."""
  workdir = copy_until(straight_run, tmp_path, 6)
  before = files(workdir)
  with pytest.raises(WorkdirError, match=r"batch_size changed from 8 to 16 since the checkpoints "
                                         r"in .* were written; .* Resume with "
                                         r"--config.batch_size=8, or start a new --workdir"):
    loop.train_and_evaluate(tiny_config(batch_size=16), str(workdir))  # no data: refused first
  assert files(workdir) == before


def test_a_second_ctrl_c_aborts_in_one_line_naming_the_last_checkpoint(tmp_path,
                                                                       compile_cache_dir):
  """It used to print a 60-line KeyboardInterrupt traceback."""
  workdir, stderr = tmp_path / "run", (tmp_path / "stderr").open("w+")
  process = subprocess.Popen(
      [sys.executable, str(TINY_RUN), str(workdir), "--step_delay=2",
       f"--cache_dir={compile_cache_dir}"], stdout=subprocess.PIPE, stderr=stderr,
      text=True, cwd=TINY_RUN.parent.parent)
  lines, seen = [], {key: threading.Event() for key in ("step 2/10", "Received SIGINT")}

  def read():
    for line in process.stdout:
      lines.append(line)
      for key, event in seen.items():
        if line.startswith(key):
          event.set()

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  try:
    assert seen["step 2/10"].wait(timeout=180), "".join(lines)
    for _ in range(600):  # the step-2 checkpoint on disk (its save is asynchronous)
      if checkpoint_steps(workdir):
        break
      time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    assert seen["Received SIGINT"].wait(timeout=30), "".join(lines)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130, "".join(lines)
  finally:
    process.kill()
  reader.join(timeout=10)
  stderr.seek(0)
  errors = stderr.read()
  assert "Traceback" not in errors and "Stopped by" not in "".join(lines), errors
  last = checkpoint_steps(workdir)[-1]
  assert errors.splitlines()[-1] == (
      f"Aborted without saving; the last checkpoint is step {last} in {workdir / 'checkpoints'}; "
      f"run the same command to resume from it.")
  assert not (workdir / "lock").exists()
