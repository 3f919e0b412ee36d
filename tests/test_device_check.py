"""scripts/device_check.sh, the GPU machine's one command, runs end to end on this CPU machine.

Quick mode (a model-test subset, one tiny benchmark; ~30 s on 2 cores) with the stand-ins for
TensorFlow, TFDS and clu forced on, as on the GPU image that lacks them: the script's stages,
time limits and JSON are the ones a GPU run uses.
"""
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "device_check.sh"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
  out = tmp_path_factory.mktemp("device_check_out")
  env = {**os.environ, "PYTHON": sys.executable, "DEVICE_CHECK_STAND_INS": "1",
         "TMPDIR": str(tmp_path_factory.mktemp("device_check_tmp")),
         "DEVICE_CHECK_WHEELS": str(tmp_path_factory.mktemp("no_wheels"))}
  proc = subprocess.run(["bash", str(SCRIPT), "--quick", str(out)], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  return proc, out


def test_quick_run_writes_every_stage_into_one_json(quick_run):
  proc, out = quick_run
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert sorted(p.name for p in out.iterdir()) == ["device_check.json", "device_check.log"]
  summary = json.loads((out / "device_check.json").read_text())
  assert summary["complete"] is True and summary["running"] is None and summary["quick"] is True
  assert set(summary) >= {"environment", "install", "tests", "gmlp_s16_224", "paper_64",
                          "cifar100_epoch", "wall_s", "started", "finished", "budget_s"}

  env = summary["environment"]
  assert env["backend"] == "cpu" and env["device_count"] >= 1 and env["versions"]["jax"]
  assert summary["install"]["jax_gpu"] == {"skipped": "no NVIDIA GPU (nvidia-smi)"}
  assert summary["install"]["stand_ins"] == ["tensorflow", "tensorflow_datasets", "clu"]

  tests = summary["tests"]
  assert tests["passed"] > 0 and tests["failures"] == tests["errors"] == 0 and tests["rc"] == 0

  # Quick mode benchmarks gmlp only; the rest say why they were skipped, in the same layout.
  gmlp = summary["paper_64"]["gmlp"]
  assert gmlp["model"] == "gmlp_paper" and gmlp["batch_size"] == 8
  for key in ("train_images_per_s", "compile_time_s", "train_gflops_per_image", "mfu"):
    assert gmlp[key] > 0, key
  skipped = [summary["paper_64"]["cgmlp_1conv"], summary["paper_64"]["cgmlp_2conv"],
             summary["gmlp_s16_224"]["bfloat16"], summary["gmlp_s16_224"]["float32"],
             summary["cifar100_epoch"]]
  assert all(set(entry) == {"skipped"} and "quick mode" in entry["skipped"] for entry in skipped)

  log = (out / "device_check.log").read_text()
  assert "== tests: exit 0" in log and "train_images_per_s" in log


def test_helper_records_failures_and_keeps_earlier_stages(tmp_path):
  helper = [sys.executable, str(ROOT / "scripts" / "device_check.py")]
  summary, log = tmp_path / "s.json", tmp_path / "stage.log"
  subprocess.run(helper + ["set", str(summary), "", "--json", '{"complete": false}'], check=True)
  subprocess.run(helper + ["set", str(summary), "gmlp_s16_224.bfloat16", "--json",
                           '{"batch_size": 512, "peak_memory_gib": 60.0,'
                           ' "peak_memory_kind": "device peak_bytes_in_use"}'], check=True)
  log.write_text("compiling\njaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of "
                 "memory while trying to allocate 9.1GiB\n")
  subprocess.run(helper + ["set", str(summary), "gmlp_s16_224.float32", "--failure-log", str(log),
                           "--field", "rc=1", "--field", "batch_sizes_out_of_memory=[1024]"],
                 check=True)
  data = json.loads(summary.read_text())
  assert data["complete"] is False and data["gmlp_s16_224"]["bfloat16"]["batch_size"] == 512
  f32 = data["gmlp_s16_224"]["float32"]
  assert f32["rc"] == 1 and f32["out_of_memory"] and "RESOURCE_EXHAUSTED" in f32["error"]
  assert f32["batch_sizes_out_of_memory"] == [1024]

  # f32 activations take twice bf16's memory: bf16 batch 512 took 60 GiB, f32 would take 120 of
  # the 100 GiB, so f32 starts at 256 (never above bf16's batch).
  subprocess.run(helper + ["set", str(summary), "environment", "--json",
                           '{"device_memory_gib": 100.0}'], check=True)
  batches = subprocess.run(helper + ["f32-batches", str(summary), "1024", "512", "256", "128"],
                           check=True, capture_output=True, text=True).stdout.split()
  assert batches == ["256", "128"]


FAKE_PYTHON = '''#!{python}
"""The real interpreter, except that the benchmark is faked: out of memory above the batch that
fits (512 in bf16, 256 in f32), an ordinary error for cgmlp_1conv, figures otherwise."""
import json, os, re, sys
args = sys.argv[1:]
if args[:2] != ["-m", "cgmlp_jax.tools.benchmark"]:
  os.execv({python!r}, [{python!r}] + args)
flags = dict(re.match(r"--([^=]+)=?(.*)", a).groups() for a in args[2:])
batch, dtype = int(flags["config.batch_size"]), flags.get("config.dtype", "float32")
if "cgmlp_1conv" in flags["config"]:
  sys.exit("ValueError: a mistake that a smaller batch would not fix")
if batch > (512 if dtype == "bfloat16" else 256):
  sys.exit("jaxlib.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate")
with open(flags["out"], "w") as f:
  json.dump({{"model": flags["config"], "dtype": dtype, "batch_size": batch,
             "train_images_per_s": 1000.0, "peak_memory_gib": 50.0,
             "peak_memory_kind": "device peak_bytes_in_use"}}, f)
'''


def test_largest_batch_that_fits_and_failures_that_do_not_stop_the_run(tmp_path):
  fake = tmp_path / "python"
  fake.write_text(FAKE_PYTHON.format(python=sys.executable))
  fake.chmod(0o755)
  out = tmp_path / "out"
  env = {**os.environ, "PYTHON": str(fake), "DEVICE_CHECK_SKIP": "tests cifar",
         "DEVICE_CHECK_S16_BATCHES": "1024 512 256 128", "TMPDIR": str(tmp_path),
         "DEVICE_CHECK_WHEELS": str(tmp_path / "no_wheels")}
  proc = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  summary = json.loads((out / "device_check.json").read_text())
  assert summary["complete"] is True
  assert summary["tests"] == summary["cifar100_epoch"] == {"skipped": "DEVICE_CHECK_SKIP"}
  s16 = summary["gmlp_s16_224"]
  assert s16["bfloat16"]["batch_size"] == 512
  assert s16["bfloat16"]["batch_sizes_out_of_memory"] == [1024]
  assert s16["float32"]["batch_size"] == 256
  assert s16["float32"]["batch_sizes_out_of_memory"] == [1024, 512]
  paper = summary["paper_64"]
  assert paper["gmlp"]["train_images_per_s"] == paper["cgmlp_2conv"]["train_images_per_s"] == 1000
  failed = paper["cgmlp_1conv"]
  assert failed["rc"] == 1 and not failed["out_of_memory"]
  assert failed["error"].startswith("ValueError: a mistake") and failed["log_tail"]
