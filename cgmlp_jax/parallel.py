"""Device mesh, shardings and process-local -> global arrays.

One mesh axis, ``"data"``, spans every device of every process: parameters and optimiser state are
replicated, batches are split along their leading axis. ``jax.jit`` with these shardings runs the
same program on one CPU, several GPUs or a multi-host TPU pod (no ``pmap``).
"""
import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def split_cpu(num_devices: int) -> bool:
  """Runs the host's CPU as ``num_devices`` JAX devices; call before JAX starts its backends.

  XLA:CPU runs each elementwise fusion of a step (GELU, LayerNorm, transposes, the optimiser
  update) on one thread. With the batch split over several CPU devices, the devices' programs run
  side by side and so do those fusions: ``gmlp_paper`` on 2 cores, 90 -> 109 img/s (BENCHMARKS.md).
  Returns whether the count was set: not for ``num_devices <= 0``, not when ``XLA_FLAGS``
  (``--xla_force_host_platform_device_count``) or ``jax_num_cpu_devices`` already choose one, not
  once JAX's backends are running. GPU/TPU hosts compute on their accelerators either way.
  """
  if (num_devices <= 0 or jax.config.jax_num_cpu_devices >= 0
      or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")):
    return False
  try:
    jax.config.update("jax_num_cpu_devices", num_devices)
  except RuntimeError:  # backends already started: their devices stay
    return False
  return True


def initialize_distributed() -> None:
  """Joins the multi-process job (TPU pods, SLURM, ... auto-detect their coordinator)."""
  jax.distributed.initialize()


def make_mesh() -> Mesh:
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(global_batch_size: int, what: str = "batch_size") -> None:
  """Global batches are split evenly over devices and processes; fail early otherwise."""
  devices, processes = jax.device_count(), jax.process_count()
  if global_batch_size % devices:
    raise ValueError(f"{what}={global_batch_size} is not divisible by the {devices} devices "
                     f"({processes} processes); use a multiple of {devices}.")


def to_global(mesh: Mesh, local: Any) -> Any:
  """Process-local numpy arrays (leading axis = this process's share) -> global sharded arrays."""
  sharding = batch_sharded(mesh)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local)
