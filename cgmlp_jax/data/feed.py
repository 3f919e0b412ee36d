"""Host batches -> global device arrays, one batch ahead of the step that consumes them."""
from typing import Any, Iterator

import jax

from cgmlp_jax import parallel


def prefetch(batches: Iterator[Any], mesh: jax.sharding.Mesh) -> Iterator[Any]:
  """Yields each process-local host batch (a tuple of numpy arrays) as global arrays, reading and
  transferring batch i+1 before batch i is handed out, so the copy overlaps step i (JAX dispatch
  is asynchronous)."""
  pending = None
  for host_batch in batches:
    batch = parallel.to_global(mesh, host_batch)
    if pending is not None:
      yield pending
    pending = batch
  if pending is not None:
    yield pending
