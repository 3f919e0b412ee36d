"""Where the train step's time goes: its XLA ops from a profiler trace, matmuls vs the rest.

  python -m cgmlp_jax.tools.step_profile --config=configs/cpu_track.py:model=cgmlp_2conv,recipe=fast

Traces a few steps of the config's real, compiled train step (synthetic data, as in
``cgmlp_jax.tools.benchmark``) with ``jax.profiler`` and prints, per device and step: the time in
matrix-multiply kernels (dots, convolutions, and the XNNPACK / YNNPACK / oneDNN fusions XLA:CPU
builds around them) against all other ops, those others grouped by kind (XLA names a fusion after
its ops, e.g. ``copy_bitcast_fusion``: a transpose), and the slowest of them with their shapes and
the model code they come from. MFU says how far the step is from the matmul peak; this says
which ops hold it back. Trace events are matched to the instructions of the compiled HLO by
name, as XLA:CPU names them; on other backends, unmatched kernels are left out.
"""
import collections
import dataclasses
import glob
import gzip
import json
import re
import tempfile

import jax
from absl import flags

from cgmlp_jax import cli
from cgmlp_jax.tools import benchmark

FLAGS = flags.FLAGS

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\(.*?\)|\S+) ([\w\-]+)\((.*)$")
_MATMUL_OPCODES = ("dot", "convolution")
_MATMUL_FUSIONS = ("__ynn_fusion", "__xnn_fusion", "__onednn_fusion")
_MATMUL_CALLS = ("gemm", "matmul", "conv")
_CONTROL_FLOW = ("while", "conditional", "call")  # their bodies' ops are traced on their own


@dataclasses.dataclass(frozen=True)
class Op:
  shape: str
  matmul: bool
  source: str  # the model code it lowers, from the HLO metadata's op_name


def hlo_ops(hlo_text: str) -> dict[str, Op]:
  """Instruction name -> Op for every instruction of a compiled module's HLO text."""
  ops = {}
  for line in hlo_text.splitlines():
    match = _INSTRUCTION.match(line)
    if not match:
      continue
    name, shape, opcode, rest = match.groups()
    if opcode in _CONTROL_FLOW:
      continue
    target = re.search(r'custom_call_target="([^"]*)"', rest)
    matmul = (opcode in _MATMUL_OPCODES or any(f in rest for f in _MATMUL_FUSIONS)
              or (target is not None and any(c in target.group(1).lower() for c in _MATMUL_CALLS)))
    source = re.search(r'op_name="([^"]*)"', rest)
    ops[name] = Op(shape, matmul, _short_source(source.group(1)) if source else "")
  return ops


def _short_source(op_name: str) -> str:
  """'jit(train_step)/transpose(jvp(Model))/block2/mul' -> 'backward: block2/mul'."""
  backward = "transpose(" in op_name
  parts = [p for p in op_name.split("/") if "(" not in p]
  return ("backward: " if backward else "") + "/".join(parts)


def op_times_ms(trace_dir: str, ops: dict[str, Op]) -> dict[str, float]:
  """Total milliseconds per HLO instruction over all complete events of the trace."""
  paths = glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True)
  if not paths:
    raise FileNotFoundError(f"No *.trace.json.gz under {trace_dir}: was the trace written with "
                            "create_perfetto_trace=True?")
  with gzip.open(max(paths)) as f:
    events = json.load(f)["traceEvents"]
  times = collections.defaultdict(float)
  for event in events:
    if event.get("ph") == "X" and event.get("name") in ops:
      times[event["name"]] += event.get("dur", 0.0) / 1e3
  return dict(times)


def breakdown(times_ms: dict[str, float], ops: dict[str, Op], per: int, top: int) -> dict:
  """Per-step, per-device figures from the traced op times (``per`` = steps x devices)."""
  matmul = sum(t for name, t in times_ms.items() if ops[name].matmul) / per
  others = {name: t / per for name, t in times_ms.items() if not ops[name].matmul}
  kinds = collections.defaultdict(float)
  for name, t in others.items():
    kinds[name.split(".")[0]] += t
  total = matmul + sum(others.values())
  slowest = sorted(others.items(), key=lambda kv: -kv[1])[:top]
  return {
      "op_ms": total, "matmul_ms": matmul, "other_ms": total - matmul,
      "matmul_share": matmul / total if total else 0.0,
      "other_by_kind_ms": dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
      "slowest_other": [dict(name=n, ms=t, shape=ops[n].shape, source=ops[n].source)
                        for n, t in slowest],
  }


def run(config, image_size: int, num_classes: int, steps: int, top: int) -> dict:
  trainer, _, images, labels, state, metrics = benchmark.synthetic_setup(config, image_size,
                                                                         num_classes)
  compiled = trainer.train_step.lower(state, metrics, images, labels).compile()
  for _ in range(2):
    state, metrics = compiled(state, metrics, images, labels)
  jax.block_until_ready(state)
  with tempfile.TemporaryDirectory() as trace_dir:
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
      for _ in range(steps):
        state, metrics = compiled(state, metrics, images, labels)
      jax.block_until_ready(state)
    ops = hlo_ops(compiled.as_text())
    times = op_times_ms(trace_dir, ops)
  return breakdown(times, ops, steps * jax.local_device_count(), top)


def main(argv):
  del argv
  cli.setup_process(FLAGS.config, reads_data=False)  # synthetic data
  result = run(FLAGS.config, FLAGS.image_size, FLAGS.num_classes, FLAGS.steps, FLAGS.top)
  print(f"{FLAGS.config.model}, batch {FLAGS.config.batch_size}, {jax.device_count()} device(s); "
        f"per device and step: ops {result['op_ms']:.1f} ms, matmul kernels "
        f"{result['matmul_ms']:.1f} ms ({100 * result['matmul_share']:.0f} %), other "
        f"{result['other_ms']:.1f} ms")
  print("other ops by kind (ms): " + ", ".join(
      f"{kind} {ms:.1f}" for kind, ms in list(result["other_by_kind_ms"].items())[:12]))
  print("slowest other ops:")
  for op in result["slowest_other"]:
    print(f"  {op['ms']:7.2f} ms  {op['name']:<28} {_clip(op['shape'], 32):<32} "
          f"{_clip(op['source'], 70)}")


def _clip(text: str, width: int) -> str:
  return text if len(text) <= width else text[:width - 3] + "..."


def _define_flags():
  benchmark.define_setup_flags("profile")
  flags.DEFINE_integer("steps", 3, "Steps traced (after two warm-up steps).")
  flags.DEFINE_integer("top", 15, "How many of the slowest non-matmul ops to list.")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
