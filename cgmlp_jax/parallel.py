"""Device mesh, shardings and process-local -> global arrays.

One mesh axis, ``"data"``, spans every device of every process: parameters and optimiser state are
replicated, batches are split along their leading axis. ``jax.jit`` with these shardings runs the
same program on one CPU, several GPUs or a multi-host TPU pod (no ``pmap``).
"""
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


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
