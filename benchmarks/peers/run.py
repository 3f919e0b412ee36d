"""This codebase against its peers, interleaved round by round in one run, on the same shapes.

  bash benchmarks/peers/setup.sh /tmp/cgmlp_peers        # once: the peers' throwaway venvs
  python benchmarks/peers/run.py --out=peers.json        # with the project venv's python

Each round runs every implementation once per shape and allocator setting, each as a subprocess
in its own venv, one at a time (the order of the implementations rotates from round to round, so
none always runs first or last after another's heat). Implementations (``--only``):

* ``jax``: ``benchmarks/jax_gmlp.py`` (this codebase, the same work as the peers: random f32
  inputs on device, no augmentation, no dropout, AdamW, batch 128; train step img/s);
* ``jax_real``: ``python -m cgmlp_jax.tools.benchmark --config=configs/paper.py:model=gmlp[,small]``,
  the real train step (augmentation, dropout, the non-finite guard, metrics), with its MFU
  against the matmul peak it measures in the same process;
* ``gmlp_pytorch``: lucidrains' g-mlp-pytorch, eager PyTorch (``torch_gmlp_pytorch.py``);
* ``torch_handwritten``: ``benchmarks/torch_gmlp.py``'s eager PyTorch gMLP, in the same venv;
* ``timm``: timm's gMLP (``MlpMixer`` + ``SpatialGatingBlock``), eager PyTorch (``torch_timm.py``);
* ``keras``: Keras 3 on TensorFlow, ``train_on_batch`` with ``jit_compile=False`` (what Keras'
  ``"auto"`` picks on the TensorFlow backend) (``keras_gmlp.py``);
* ``keras_xla``: the same with ``jit_compile=True`` (XLA).

Shapes (``--shapes``): ``gmlp_paper`` (64x64, patch 8, d_model 256, d_ffn 512, 4 blocks) and
``gmlp_small`` (32x32, patch 4, d_model 128, d_ffn 512, 4 blocks), 100 classes, batch 128, f32.

Allocator settings (``--allocs``): ``default`` (this codebase with ``CGMLP_JAX_MALLOC=default``,
the peers without ``GLIBC_TUNABLES``) and ``tuned`` (this codebase's own mallopt at import,
cgmlp_jax/allocator.py; the peers with the same three settings as ``GLIBC_TUNABLES``).

Prints each run's img/s as it finishes, then per shape and allocator setting a table: per round
img/s, median, ratio to the fastest peer's median, the model's matmul GFLOP/s (3x the forward
pass's dense FLOPs per image, the same count for everyone) and that as a share of the matmul
peak each process measured (2048^2 f32; for ``jax`` the peak ``jax_real`` measured in the same
round and setting). Then the headline ratios. ``--out`` writes every run and the summary as JSON
(rewritten after every run, so an interrupted run keeps what it has); each run's full output is
kept under ``--logs``.

Defaults: 3 rounds of 2 shapes x 2 allocator settings x 7 implementations (84 runs), 8 steps per
window, 3 timed windows after one warm-up window: about 1.5 h on the idle 2-core machine (most of
it in ``jax_real``, which also times the host-fed step and eval, and in ``jax``, which also times
the forward and forward+backward passes). Time it only on an otherwise idle machine.
"""
import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

from common import CLASSES, SHAPES  # this directory's common.py, shared with the peers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS_DIR = os.path.join(REPO, "benchmarks", "peers")
TUNABLES = ("glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:"
            "glibc.malloc.trim_threshold=2147483647")
PAPER_CONFIG = {"gmlp_paper": "configs/paper.py:model=gmlp",
                "gmlp_small": "configs/paper.py:model=gmlp,small"}
BATCH = 128
IMPLS = ("jax", "jax_real", "gmlp_pytorch", "torch_handwritten", "timm", "keras", "keras_xla")
OURS = ("jax", "jax_real")
VENV = {"gmlp_pytorch": "gmlp_pytorch", "torch_handwritten": "gmlp_pytorch", "timm": "timm",
        "keras": "keras", "keras_xla": "keras"}


def train_gflops_per_image(shape: dict) -> float:
  """3x the forward pass's matmul FLOPs (stem, per block proj_in, token mixing, proj_out; head)."""
  tokens = (shape["image"] // shape["patch"]) ** 2
  d, f = shape["d_model"], shape["d_ffn"]
  stem = 2 * tokens * shape["patch"] ** 2 * 3 * d
  block = 2 * tokens * d * f + 2 * (f // 2) * tokens * tokens + 2 * tokens * (f // 2) * d
  return 3 * (stem + shape["depth"] * block + 2 * d * CLASSES) / 1e9


def command(impl: str, shape: str, args, result_file: str) -> list[str]:
  steps = ["--steps", str(args.steps), "--windows", str(args.windows)]
  if impl == "jax":
    return [sys.executable, "benchmarks/jax_gmlp.py", f"--model={shape}",
            f"--steps={args.steps}", f"--windows={args.windows}"]
  if impl == "jax_real":
    return [sys.executable, "-m", "cgmlp_jax.tools.benchmark", f"--config={PAPER_CONFIG[shape]}",
            f"--num_classes={CLASSES}", f"--steps={args.steps}", f"--windows={args.windows}",
            f"--out={result_file}"]
  python = os.path.join(args.venvs, VENV[impl], "bin", "python")
  peer = ["--shape", shape, "--threads", str(args.threads), "--matmul", str(args.matmul)] + steps
  if impl in ("gmlp_pytorch", "torch_handwritten"):
    return [python, os.path.join(PEERS_DIR, "torch_gmlp_pytorch.py"),
            "--impl", "lucidrains" if impl == "gmlp_pytorch" else "handwritten"] + peer
  if impl == "timm":
    return [python, os.path.join(PEERS_DIR, "torch_timm.py")] + peer
  return [python, os.path.join(PEERS_DIR, "keras_gmlp.py"),
          "--jit_compile", "true" if impl == "keras_xla" else "false"] + peer


def environment(impl: str, alloc: str) -> dict:
  env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "CGMLP_JAX_MALLOC")}
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  if impl in OURS:
    if alloc == "default":
      env["CGMLP_JAX_MALLOC"] = "default"
  elif alloc == "tuned":
    env["GLIBC_TUNABLES"] = TUNABLES
  return env


def parse(impl: str, output: str, result_file: str) -> dict:
  if impl == "jax":
    found = {}
    for name, key in (("forward", "forward"), ("forward+backward", "forward_backward"),
                      ("train step (AdamW)", "train")):
      m = re.search(rf"^\s*{re.escape(name)}: [\d.]+ ms, ([\d.]+) img/s", output, re.M)
      if m:
        found[f"{key}_images_per_s"] = float(m.group(1))
    if "train_images_per_s" not in found:
      raise ValueError("no 'train step (AdamW): ... img/s' line")
    return found
  if impl == "jax_real":
    with open(result_file) as f:
      result = json.load(f)
    result["matmul_peak_gflops"] = result["matmul_peak_tflops"] * 1e3
    return result
  lines = [line for line in output.splitlines() if line.startswith("{")]
  if not lines:
    raise ValueError("no JSON line in the output")
  result = json.loads(lines[-1])
  result["impl_detail"] = result.pop("impl")  # the record's "impl" stays the short name
  del result["shape"]
  return result


def run_one(impl, shape, alloc, rnd, args, log_dir) -> dict:
  fd, result_file = tempfile.mkstemp(suffix=".json", prefix="cgmlp_peer_")
  os.close(fd)
  cmd = command(impl, shape, args, result_file)
  log = os.path.join(log_dir, f"r{rnd}_{shape}_{alloc}_{impl}.log")
  start, output = time.perf_counter(), ""
  record = {"round": rnd, "shape": shape, "alloc": alloc, "impl": impl,
            "command": " ".join(cmd), "log": log}
  try:
    proc = subprocess.run(cmd, cwd=REPO, env=environment(impl, alloc), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=args.timeout)
    output = proc.stdout
    if proc.returncode:
      raise RuntimeError(f"exit {proc.returncode}: {output.strip().splitlines()[-1:]}")
    record.update(parse(impl, output, result_file))
  except subprocess.TimeoutExpired as e:
    output = e.stdout or ""
    output = output.decode() if isinstance(output, bytes) else output
    record["error"] = f"timed out after {args.timeout} s"
  except Exception as e:  # noqa: BLE001 (record it, go on with the next run)
    record["error"] = f"{type(e).__name__}: {e}"
  finally:
    os.remove(result_file)
  record["wall_s"] = time.perf_counter() - start
  with open(log, "w") as f:
    f.write(" ".join(cmd) + "\n\n" + output)
  return record


def describe_ours(shape: str) -> dict:
  """The real step's settings, read from the config in a subprocess (it imports JAX and TF)."""
  code = ("import json; from configs import paper; from cgmlp_jax.models.registry import VARIANTS;"
          f"c = paper.get_config({PAPER_CONFIG[shape].split(':', 1)[1]!r});"
          "v = {**VARIANTS[c.model], **c.model_kw};"
          "print(json.dumps(dict(model=c.model, batch=c.batch_size, dtype=c.dtype,"
          " cpu_devices=c.cpu_devices, dropout=v.get('dropout_rate', 0.0),"
          " head_dropout=v.get('head_dropout_rate', 0.0), drop_path=v.get('drop_path_rate', 0.0),"
          " augment=dict(flip=c.augment.flip, zoom=c.augment.zoom,"
          " crop_padding=c.augment.crop_padding), label_smoothing=c.label_smoothing,"
          " grad_clip_norm=c.optimizer.grad_clip_norm,"
          " skip_nonfinite_steps=c.skip_nonfinite_steps)))")
  try:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env=environment("jax", "tuned"))
    return json.loads(out.stdout.strip().splitlines()[-1])
  except Exception as e:  # noqa: BLE001
    return {"error": f"{type(e).__name__}: {e}"}


def settings(impls, shapes, args) -> dict:
  peer = (f"batch {BATCH}, float32, random inputs in memory, no augmentation, dropout off, "
          f"AdamW(3e-3, wd 1e-4), {args.threads} intra-op threads")
  text = {
      "jax": ("this codebase, benchmarks/jax_gmlp.py: jit, batch 128 split over 2 JAX CPU devices "
              "(cpu_devices=2) on the machine's cores, XLA:CPU's own thread pool, float32, random "
              "inputs on device, no augmentation, dropout off, AdamW(3e-3, wd 1e-4)"),
      "jax_real": ("this codebase's real train step, python -m cgmlp_jax.tools.benchmark --config="
                   "configs/paper.py:model=gmlp[,small]: synthetic uint8 32x32 CIFAR-sized "
                   "batches, augmentation and dropout as in training (see jax_real_config), the "
                   "train step's guards and metrics, 2 JAX CPU devices"),
      "gmlp_pytorch": f"g-mlp-pytorch gMLPVision, eager PyTorch: {peer} (torch.set_num_threads)",
      "torch_handwritten": f"benchmarks/torch_gmlp.py's GMLP, eager PyTorch: {peer}",
      "timm": (f"timm MlpMixer + SpatialGatingBlock/GatedMlp, eager PyTorch (2.14.1 in its venv, "
               f"for torchvision: setup.sh): {peer}"),
      "keras": (f"Keras 3 / TensorFlow, train_on_batch, jit_compile=False: {peer} (TF intra-op and "
                f"inter-op pools = {args.threads})"),
      "keras_xla": (f"Keras 3 / TensorFlow, train_on_batch, jit_compile=True (XLA): {peer} (TF "
                    f"intra-op and inter-op pools = {args.threads})"),
  }
  out = {"implementations": {i: text[i] for i in impls},
         "allocators": {"default": "CGMLP_JAX_MALLOC=default for this codebase; peers without "
                                   "GLIBC_TUNABLES (glibc's own defaults)",
                        "tuned": "this codebase's mallopt at import (cgmlp_jax/allocator.py); "
                                 f"peers with GLIBC_TUNABLES={TUNABLES}"},
         "rounds": args.rounds, "steps": args.steps, "windows": args.windows,
         "train_gflops_per_image (3x forward matmuls)": {
             s: train_gflops_per_image(SHAPES[s]) for s in shapes}}
  if "jax_real" in impls:
    out["jax_real_config"] = {s: describe_ours(s) for s in shapes}
  return out


def median(values):
  return statistics.median(values) if values else None


def summarise(runs, impls, shapes, allocs) -> dict:
  summary = {}
  for shape in shapes:
    for alloc in allocs:
      rows = {}
      for impl in impls:
        ok = [r for r in runs if (r["shape"], r["alloc"], r["impl"]) == (shape, alloc, impl)
              and "train_images_per_s" in r]
        rows[impl] = {"per_round": [r["train_images_per_s"] for r in ok],
                      "median": median([r["train_images_per_s"] for r in ok]),
                      "matmul_peak_gflops": median([r["matmul_peak_gflops"] for r in ok
                                                    if r.get("matmul_peak_gflops")])}
        if impl == "jax_real":
          rows[impl]["mfu"] = median([r["mfu"] for r in ok])
      if rows.get("jax") and rows.get("jax_real"):
        rows["jax"]["matmul_peak_gflops"] = rows["jax_real"]["matmul_peak_gflops"]
      peers = {i: row["median"] for i, row in rows.items() if i not in OURS and row["median"]}
      fastest = max(peers, key=peers.get) if peers else None
      gflops = train_gflops_per_image(SHAPES[shape])
      for row in rows.values():
        m = row["median"]
        row["ratio_to_fastest_peer"] = m / peers[fastest] if m and fastest else None
        row["model_gflops_per_s"] = m * gflops if m else None
        peak = row["matmul_peak_gflops"]
        row["share_of_matmul_peak"] = m * gflops / peak if m and peak else None
      summary[f"{shape}/{alloc}"] = {"fastest_peer": fastest, "rows": rows}
  return summary


def fmt(value, spec):
  return format(value, spec) if value is not None else "-"


def print_tables(summary, rounds):
  for key, block in summary.items():
    print(f"\n{key}  (fastest peer: {block['fastest_peer']})")
    head = (f"  {'impl':<18}" + "".join(f"{f'r{i + 1}':>8}" for i in range(rounds)) +
            f"{'median':>9}{'x peer':>8}{'GFLOP/s':>9}{'% peak':>8}{'MFU':>6}")
    print(head)
    for impl, row in block["rows"].items():
      per = row["per_round"] + [None] * (rounds - len(row["per_round"]))
      print(f"  {impl:<18}" + "".join(f"{fmt(v, '.1f'):>8}" for v in per) +
            f"{fmt(row['median'], '.1f'):>9}{fmt(row['ratio_to_fastest_peer'], '.2f'):>8}"
            f"{fmt(row['model_gflops_per_s'], '.1f'):>9}"
            f"{fmt(row['share_of_matmul_peak'] and 100 * row['share_of_matmul_peak'], '.0f'):>8}"
            f"{fmt(row.get('mfu') and 100 * row['mfu'], '.0f'):>6}")


def headline(summary, shapes, allocs) -> list[str]:
  lines = []
  for shape in shapes:
    blocks = {a: summary.get(f"{shape}/{a}") for a in allocs}
    best_peer = None
    for alloc, block in blocks.items():
      for impl, row in block["rows"].items():
        if impl not in OURS and row["median"] and (
            best_peer is None or row["median"] > best_peer[2]):
          best_peer = (impl, alloc, row["median"])
    if not best_peer:
      continue
    for ours in OURS:
      for alloc, block in blocks.items():
        row = block["rows"].get(ours)
        if not row or not row["median"]:
          continue
        same = row["ratio_to_fastest_peer"]
        lines.append(
            f"{shape}: {ours} ({alloc}) {row['median']:.1f} img/s = "
            + (f"{same:.2f}x the fastest peer with the same allocator setting "
               f"({block['fastest_peer']}), " if same else "")
            + f"{row['median'] / best_peer[2]:.2f}x the fastest peer at either setting "
            f"({best_peer[0]}, {best_peer[1]}, {best_peer[2]:.1f} img/s)"
            + (f"; MFU {100 * row['mfu']:.0f} %" if row.get("mfu") else ""))
  return lines


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=8,
                      help="Steps per timed window (every impl); at least 2: with 1, "
                           "jax_gmlp.py's warm-up window does not cover the donated carry's "
                           "second compilation.")
  parser.add_argument("--windows", type=int, default=3,
                      help="Timed windows per run (median); the rounds repeat the runs.")
  parser.add_argument("--shapes", default="gmlp_paper,gmlp_small")
  parser.add_argument("--only", default=",".join(IMPLS), help=f"Subset of {','.join(IMPLS)}.")
  parser.add_argument("--allocs", default="default,tuned")
  parser.add_argument("--venvs", default="/tmp/cgmlp_peers", help="setup.sh's directory.")
  parser.add_argument("--threads", type=int, default=2, help="The peers' intra-op threads.")
  parser.add_argument("--matmul", type=int, default=2048, help="Peers' matmul peak size; 0: skip.")
  parser.add_argument("--timeout", type=int, default=1800, help="Seconds per run.")
  parser.add_argument("--out", default=None, help="Write runs and summary as JSON here.")
  parser.add_argument("--logs", default=None, help="Each run's output (default: a temp dir).")
  args = parser.parse_args()

  impls = [i for i in args.only.split(",") if i]
  shapes = [s for s in args.shapes.split(",") if s]
  allocs = [a for a in args.allocs.split(",") if a]
  for name, values, valid in (("--only", impls, IMPLS), ("--shapes", shapes, SHAPES),
                              ("--allocs", allocs, ("default", "tuned"))):
    bad = sorted(set(values) - set(valid))
    if bad:
      parser.error(f"{name}: unknown {bad}; valid: {', '.join(valid)}")
  for impl in impls:
    if impl in VENV and not os.path.exists(os.path.join(args.venvs, VENV[impl], "bin", "python")):
      parser.error(f"{impl}: no venv {os.path.join(args.venvs, VENV[impl])}; run "
                   f"bash benchmarks/peers/setup.sh {args.venvs}")
  if args.steps < 2:  # jax_gmlp.py's warm-up window must hold two steps (see below)
    parser.error("--steps must be at least 2")
  log_dir = args.logs or tempfile.mkdtemp(prefix="cgmlp_peers_logs_")
  os.makedirs(log_dir, exist_ok=True)

  started = datetime.datetime.now(datetime.timezone.utc)
  info = settings(impls, shapes, args)
  info.update(started=started.isoformat(timespec="seconds"), host=platform.node(),
              cpus=os.cpu_count(), logs=log_dir)
  print(json.dumps(info, indent=1))
  runs = []

  def write():
    if args.out:  # on every run: what an interrupted benchmark leaves
      summary = summarise(runs, impls, shapes, allocs)
      with open(args.out, "w") as f:
        json.dump({"settings": info, "runs": runs, "summary": summary,
                   "headline": headline(summary, shapes, allocs)}, f, indent=1)

  total = args.rounds * len(shapes) * len(allocs) * len(impls)
  for rnd in range(1, args.rounds + 1):
    shift = (rnd - 1) % len(impls)
    order = impls[shift:] + impls[:shift]
    for shape in shapes:
      for alloc in (allocs if rnd % 2 else allocs[::-1]):
        for impl in order:
          record = run_one(impl, shape, alloc, rnd, args, log_dir)
          runs.append(record)
          rate = record.get("train_images_per_s")
          print(f"[{len(runs)}/{total}] round {rnd} {shape} {alloc:<7} {impl:<18} "
                + (f"{rate:8.1f} img/s" if rate else f"FAILED ({record['error']})")
                + f"  ({record['wall_s']:.0f} s)", flush=True)
          write()

  summary = summarise(runs, impls, shapes, allocs)
  print_tables(summary, args.rounds)
  print()
  for line in headline(summary, shapes, allocs):
    print(line)
  elapsed = datetime.datetime.now(datetime.timezone.utc) - started
  print(f"\n{len(runs)} runs in {elapsed.total_seconds() / 60:.1f} min; logs in {log_dir}"
        + (f"; JSON in {args.out}" if args.out else ""))
  write()
  if any("error" in r for r in runs):
    sys.exit(1)


if __name__ == "__main__":
  main()
