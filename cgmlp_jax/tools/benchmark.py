"""Throughput of the real train step against the hardware's own limit, measured in the same run.

  python -m cgmlp_jax.tools.benchmark --config=configs/paper.py:model=cgmlp_2conv --out=bench.json

Prints (and writes as JSON): train images/s with the data already on device, and again fed from
host memory the way the loop feeds it; the share of wall time the device waits for the host; the
input pipeline's own images/s; eval images/s; step and compile time; GFLOPs per image from XLA's
cost analysis of the compiled step (and of the forward pass alone); achieved TFLOP/s and MFU
against a matrix-multiply peak measured here, on the same devices, in the step's compute dtype;
peak memory.

The train step (on-device data), the fed step and the matmul peak are timed in interleaved rounds,
one window of each per round after a warm-up window each (``timing.interleaved_rates``): figures
are medians over the rounds with their quartiles, and MFU is taken round by round, so a machine
whose speed drifts while it is measured moves the step and the peak together. The defaults (12
rounds of 3 steps) keep the median within a few % from run to run on an idle 2-core machine
(BENCHMARKS.md); ``python -m cgmlp_jax.tools.step_parts`` splits the step's time into its parts.

Data is synthetic uint8 at the dataset's stored resolution (``--image_size``, CIFAR's 32 by
default), so resizing and augmentation cost what they cost in training.
"""
import json
import resource
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from ml_collections import config_flags

from cgmlp_jax import cli, data as data_lib, parallel
from cgmlp_jax.models import summary
from cgmlp_jax.tools import timing
from cgmlp_jax.train import config as config_lib, step as step_lib, trainer as trainer_lib

FLAGS = flags.FLAGS


def matmul_peak(mesh: jax.sharding.Mesh, dtype, n: int = 2048) -> tuple[Callable, float]:
  """A dense matmul over all devices of the mesh (one n x n product per device), and its FLOPs."""
  sharding = parallel.batch_sharded(mesh)
  a = jax.device_put(jnp.ones((mesh.size, n, n), dtype), sharding)
  matmul = jax.jit(lambda a: jnp.einsum("bij,bjk->bik", a, a), out_shardings=sharding)
  return lambda: matmul(a), 2 * n**3 * mesh.size


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def _peak_memory_bytes() -> tuple[int, str]:
  stats = jax.local_devices()[0].memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device peak_bytes_in_use"
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host process max RSS"


def synthetic_setup(config, image_size: int, num_classes: int):
  """The config's trainer, a small synthetic uint8 split, one global batch of it, the initial
  state and train metrics: what a timed or profiled train step needs, without a dataset."""
  config_lib.validate(config)
  trainer = trainer_lib.build(config, num_classes, steps_per_epoch=1000)
  local = config.batch_size // jax.process_count()
  rng = np.random.default_rng(0)
  split = data_lib.ArraySplit(
      images=rng.integers(0, 256, (8 * local, image_size, image_size, 3), dtype=np.uint8),
      labels=rng.integers(0, num_classes, (8 * local,)).astype(np.int32),
      num_classes=num_classes, class_names=tuple(map(str, range(num_classes))))
  images, labels = parallel.to_global(trainer.mesh, data_lib.gather(split, np.arange(local)))
  metrics = jax.device_put(step_lib.zero_metrics(train=True), parallel.replicated(trainer.mesh))
  return trainer, split, images, labels, trainer.init(), metrics


def run(config, image_size: int, num_classes: int, steps: int, windows: int,
        matmul_size: int = 2048) -> dict:
  trainer, split, images, labels, state, metrics = synthetic_setup(config, image_size,
                                                                   num_classes)
  batch, mesh = config.batch_size, trainer.mesh
  local = batch // jax.process_count()
  rng = np.random.default_rng(1)
  start = time.perf_counter()
  compiled = trainer.train_step.lower(state, metrics, images, labels).compile()
  compile_s = time.perf_counter() - start
  # Cost analysis of an SPMD program counts one device's share.
  step_flops = _flops(compiled) * jax.device_count()

  carry = [state, metrics]

  def device_step():
    carry[0], carry[1] = compiled(carry[0], carry[1], images, labels)
    return carry[1]

  def host_batches():
    while True:
      yield data_lib.gather(split, rng.integers(0, len(split), local))

  fed = data_lib.prefetch(host_batches(), mesh)

  def fed_step():
    carry[0], carry[1] = compiled(carry[0], carry[1], *next(fed))
    return carry[1]

  dtype = jnp.bfloat16 if config.dtype == "bfloat16" else jnp.float32
  matmul, matmul_flops = matmul_peak(mesh, dtype, matmul_size)
  # One window of each per round: the step and the peak share each round's machine, and MFU is
  # taken round by round (see `timing`).
  rates = timing.interleaved_rates({"train": (device_step, batch), "fed": (fed_step, batch),
                                    "peak": (matmul, matmul_flops)}, steps, windows)
  train, peak = rates["train"], rates["peak"].scaled(1e-12)  # images/s, TFLOP/s
  achieved = train.scaled(step_flops / batch / 1e12)  # TFLOP/s
  mfu = achieved.ratio(peak)
  input_rate = timing.rate(lambda: next(fed), batch, steps, windows)

  eval_batch = config.eval_batch_size // jax.process_count()
  eval_images, eval_labels = parallel.to_global(
      mesh, data_lib.gather(split, np.arange(eval_batch) % len(split)))
  mask = parallel.to_global(mesh, np.ones((eval_batch,), np.float32))
  variables = carry[0].variables
  eval_rate = timing.rate(lambda: trainer.eval_step(variables, eval_images, eval_labels, mask),
                          config.eval_batch_size, steps, windows)
  memory, memory_kind = _peak_memory_bytes()
  return {
      "model": config.model, "dtype": config.dtype, "batch_size": batch,
      "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
      "windows": windows, "steps_per_window": steps,
      "train_images_per_s": train.median, "train_images_per_s_quartiles": train.quartiles,
      "train_images_per_s_fed_from_host": rates["fed"].median,
      "host_wait_share": max(0.0, 1.0 - rates["fed"].ratio(train).median),
      "input_pipeline_images_per_s": input_rate.median, "eval_images_per_s": eval_rate.median,
      "step_time_ms": 1e3 * batch / train.median, "compile_time_s": compile_s,
      "train_gflops_per_image": step_flops / batch / 1e9,
      "forward_gflops_per_image": summary.forward_gflops(trainer.model),
      "achieved_tflops": achieved.median, "matmul_peak_tflops": peak.median,
      "matmul_peak_tflops_quartiles": peak.quartiles,
      "mfu": mfu.median, "mfu_quartiles": mfu.quartiles,
      "peak_memory_gib": memory / 2**30, "peak_memory_kind": memory_kind,
  }


def main(argv):
  del argv
  cli.setup_process(FLAGS.config, reads_data=False)  # synthetic data
  result = run(FLAGS.config, FLAGS.image_size, FLAGS.num_classes, FLAGS.steps, FLAGS.windows)
  width = max(map(len, result))
  for key, value in result.items():
    if isinstance(value, tuple):
      value = "-".join(f"{v:.4g}" for v in value)
    print(f"{key:<{width}}  {value:.4g}" if isinstance(value, float) else
          f"{key:<{width}}  {value}")
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(result, f, indent=2)


def define_setup_flags(purpose: str):
  """The command-line flags of ``synthetic_setup``: ``config``, ``image_size``, ``num_classes``.

  Defined by each command's ``__main__`` only, so the modules sharing them import together.
  """
  config_flags.DEFINE_config_file("config", None, f"Training config to {purpose}.",
                                  lock_config=True)
  flags.DEFINE_integer("image_size", 32, "Side of the stored (pre-augmentation) images.")
  flags.DEFINE_integer("num_classes", 100, "Classes of the head.")
  flags.mark_flags_as_required(["config"])


def _define_flags():
  define_setup_flags("benchmark")
  flags.DEFINE_integer("steps", 3, "Steps per timed window.")
  flags.DEFINE_integer("windows", 12, "Rounds of timed windows; medians and quartiles are "
                       "reported.")
  flags.DEFINE_string("out", None, "Write the figures to this JSON file.")


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
