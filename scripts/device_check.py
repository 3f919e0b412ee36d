"""The JSON side of scripts/device_check.sh: one summary file that every stage adds to.

  python scripts/device_check.py set SUMMARY KEY [--json TEXT | --file F] [--field K=V ...]
      [--failure-log LOG]        # KEY is dotted ("paper_64.gmlp"); "" is the top level
  python scripts/device_check.py env                  # this interpreter's JAX, devices, GPU
  python scripts/device_check.py missing MODULE ...   # the modules that cannot be imported
  python scripts/device_check.py junit FILE.xml       # pytest's counts and failures
  python scripts/device_check.py cifar WORKDIR        # a launch.py run's epoch figures
  python scripts/device_check.py f32-batches SUMMARY BATCH ...   # the f32 batches worth trying
  python scripts/device_check.py get SUMMARY KEY      # one value ("" if absent)
  python scripts/device_check.py brief SUMMARY        # the main figures, one line each

Standard library only (``env`` imports jax if it can): it runs before the script knows which of
the project's packages the machine has. The summary is rewritten whole (temporary file + rename)
after every stage, so a run cut off by a time limit still leaves valid JSON with what it measured.
"""
import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import xml.etree.ElementTree as ET


def _load(path):
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return {}


def _dump(path, data):
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(data, f, indent=2)
    f.write("\n")
  os.replace(tmp, path)


def _value(text):
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return text


def failure(log_path, lines=15):
  """What a failed stage's log says: its last error line, its tail, whether it ran out of memory."""
  try:
    with open(log_path, errors="replace") as f:
      tail = [line.rstrip() for line in f if line.strip()][-200:]
  except FileNotFoundError:
    tail = []
  errors = [line for line in tail if re.search(r"Error|error:|RESOURCE_EXHAUSTED", line)]
  text = "\n".join(tail)
  return {"error": (errors or tail or ["(no output)"])[-1][:500],
          "out_of_memory": bool(re.search(r"RESOURCE_EXHAUSTED|[Oo]ut of memory", text)),
          "log_tail": [line[:300] for line in tail[-lines:]]}


def cmd_set(args):
  summary = _load(args.summary)
  value = (json.loads(args.json) if args.json is not None else
           _load(args.file) if args.file else {})
  if args.failure_log:
    value = {**failure(args.failure_log), **value}
  for field in args.field:
    key, _, text = field.partition("=")
    value[key] = _value(text)
  node, keys = summary, [k for k in args.key.split(".") if k]
  for key in keys[:-1]:
    node = node.setdefault(key, {})
  if not keys:
    summary.update(value)
  elif isinstance(node.get(keys[-1]), dict) and isinstance(value, dict) and args.merge:
    node[keys[-1]].update(value)
  else:
    node[keys[-1]] = value
  _dump(args.summary, summary)


def _versions(*names):
  out = {}
  for name in names:
    try:
      out[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return out


def cmd_env(args):
  del args
  env = {"python": sys.version.split()[0], "python_executable": sys.executable,
         "platform": platform.platform(), "cpu_count": os.cpu_count(),
         "versions": _versions("jax", "jaxlib", "jax-cuda12-plugin", "jax-cuda13-plugin", "flax",
                               "optax", "orbax-checkpoint", "ml-collections", "numpy",
                               "tensorflow", "tensorflow-cpu", "tensorflow-datasets")}
  try:
    env["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
  except (OSError, subprocess.SubprocessError):
    env["git_commit"] = None
  try:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    env["nvidia_smi"] = [line.strip() for line in smi.stdout.splitlines() if line.strip()]
  except (OSError, subprocess.SubprocessError):
    env["nvidia_smi"] = []
  try:
    import jax  # noqa: PLC0415
    devices = jax.devices()
    env.update(backend=jax.default_backend(), device_count=len(devices),
               device_kind=devices[0].device_kind)
    stats = devices[0].memory_stats() or {}
    if "bytes_limit" in stats:  # what XLA may allocate on one device
      env["device_memory_gib"] = stats["bytes_limit"] / 2**30
  except Exception as e:  # noqa: BLE001  (any failure to start JAX is a finding to report)
    env["backend"] = None
    env["jax_error"] = f"{type(e).__name__}: {e}"[:500]
  print(json.dumps(env))


def cmd_missing(args):
  """find_spec, not import: tensorflow takes seconds to import and is only looked for here."""
  missing = []
  for name in args.modules:
    try:
      if importlib.util.find_spec(name) is None:
        missing.append(name)
    except (ImportError, ValueError):
      missing.append(name)
  print(" ".join(missing))


def cmd_junit(args):
  root = ET.parse(args.xml).getroot()
  suite = root if root.tag == "testsuite" else root.find("testsuite")
  counts = {k: int(suite.get(k, 0)) for k in ("failures", "errors", "skipped")}
  counts["total"] = int(suite.get("tests", 0))
  failed = []
  for case in suite.iter("testcase"):
    for kind in ("failure", "error"):
      node = case.find(kind)
      if node is not None:
        message = (node.get("message") or node.text or "").strip().splitlines()
        failed.append({"test": f"{case.get('classname')}::{case.get('name')}", "kind": kind,
                       "message": (message[0] if message else "")[:300]})
  passed = counts["total"] - counts["failures"] - counts["errors"] - counts["skipped"]
  print(json.dumps({"passed": passed, **counts, "pytest_time_s": float(suite.get("time", 0)),
                    "failed": failed}))


def cmd_cifar(args):
  summary = _load(os.path.join(args.workdir, "summary.json"))
  rates = []
  try:
    with open(os.path.join(args.workdir, "metrics.jsonl")) as f:
      for line in f:
        record = json.loads(line)
        if record.get("split") == "train" and "images_per_sec" in record:
          rates.append(record["images_per_sec"])
  except FileNotFoundError:
    pass
  last = (summary.get("history") or [{}])[-1]
  out = {k: last[k] for k in ("epoch", "step", "wall_time_s", "train_loss", "train_top1",
                              "val_loss", "val_top1", "val_top5") if k in last}
  if rates:  # the first window includes the compile
    out.update(train_images_per_s_median=statistics.median(rates[1:] or rates),
               train_images_per_s_windows=len(rates))
  if not summary:
    out["error"] = f"no summary.json in {args.workdir}"
  print(json.dumps(out))


def cmd_f32_batches(args):
  """f32 keeps activations at twice bf16's size: from the bf16 run's peak device memory at its
  batch, the f32 batches predicted to fit (each failed try costs a compile, a minute on a GPU)."""
  summary = _load(args.summary)
  bf16 = summary.get("gmlp_s16_224", {}).get("bfloat16", {})
  limit = summary.get("environment", {}).get("device_memory_gib")
  batches = [int(b) for b in args.batches]
  if (not limit or "batch_size" not in bf16 or
      bf16.get("peak_memory_kind") != "device peak_bytes_in_use"):
    print(" ".join(map(str, batches)))
    return
  per_image = 2 * bf16["peak_memory_gib"] / bf16["batch_size"]
  kept = [b for b in batches if b <= bf16["batch_size"] and b * per_image <= 0.95 * limit]
  print(" ".join(map(str, kept or batches[-1:])))


def _get(summary, key):
  node = summary
  for k in (k for k in key.split(".") if k):
    node = node.get(k, {}) if isinstance(node, dict) else {}
  return node


def cmd_get(args):
  value = _get(_load(args.summary), args.key)
  print(value if isinstance(value, str) else "" if value in ({}, None) else json.dumps(value))


def _bench_line(name, result):
  if "train_images_per_s" not in result:
    return f"{name}: {result.get('skipped') or result.get('error', 'no figures')}"
  parts = [(f"batch {result.get('batch_size')}, train {result['train_images_per_s']:.0f} img/s")]
  formats = (("train_images_per_s_fed_from_host", "fed from host {:.0f} img/s"),
             ("step_time_ms", "step {:.1f} ms"), ("compile_time_s", "compile {:.0f} s"),
             ("achieved_tflops", "{:.3g} TFLOP/s"), ("mfu", "MFU {:.1%}"),
             ("peak_memory_gib", "peak memory {:.1f} GiB"))
  parts += [text.format(result[key]) for key, text in formats if key in result]
  return f"{name}: " + ", ".join(parts)


def cmd_brief(args):
  s = _load(args.summary)
  env = s.get("environment", {})
  print(f"backend {env.get('backend')}: {env.get('device_count')} x {env.get('device_kind')}; "
        f"jax {env.get('versions', {}).get('jax')}; complete: {s.get('complete')}")
  tests = s.get("tests", {})
  print("tests: " + (f"{tests['passed']} passed, {tests['failures']} failed, {tests['errors']} "
                     f"errors, {tests['skipped']} skipped" if "passed" in tests else
                     str(tests.get("skipped") or tests.get("error"))))
  for dtype, result in s.get("gmlp_s16_224", {}).items():
    print(_bench_line(f"gmlp_s16 224 {dtype}", result))
  for model, result in s.get("paper_64", {}).items():
    print(_bench_line(f"{model} 64x64", result))
  cifar = s.get("cifar100_epoch", {})
  print("cifar100 epoch: " + (
      f"val top-1 {cifar['val_top1']:.3f}, {cifar.get('train_images_per_s_median', 0):.0f} img/s, "
      f"{cifar.get('wall_s')} s" if "val_top1" in cifar else
      str(cifar.get("skipped") or cifar.get("error"))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  p = sub.add_parser("set")
  p.add_argument("summary")
  p.add_argument("key")
  p.add_argument("--json")
  p.add_argument("--file")
  p.add_argument("--field", action="append", default=[])
  p.add_argument("--failure-log")
  p.add_argument("--merge", action="store_true", help="update a dict already at KEY")
  p.set_defaults(run=cmd_set)
  sub.add_parser("env").set_defaults(run=cmd_env)
  p = sub.add_parser("missing")
  p.add_argument("modules", nargs="*")
  p.set_defaults(run=cmd_missing)
  p = sub.add_parser("junit")
  p.add_argument("xml")
  p.set_defaults(run=cmd_junit)
  p = sub.add_parser("cifar")
  p.add_argument("workdir")
  p.set_defaults(run=cmd_cifar)
  p = sub.add_parser("get")
  p.add_argument("summary")
  p.add_argument("key")
  p.set_defaults(run=cmd_get)
  p = sub.add_parser("brief")
  p.add_argument("summary")
  p.set_defaults(run=cmd_brief)
  p = sub.add_parser("f32-batches")
  p.add_argument("summary")
  p.add_argument("batches", nargs="+")
  p.set_defaults(run=cmd_f32_batches)
  args = parser.parse_args()
  args.run(args)


if __name__ == "__main__":
  main()
