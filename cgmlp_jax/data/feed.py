"""Host batches -> global device arrays, one batch ahead of the step that consumes them."""
from typing import Iterator

import jax
import numpy as np

from cgmlp_jax import parallel
from cgmlp_jax.data.sources import ArraySplit, gather


def prefetch(indices: Iterator[np.ndarray], mesh: jax.sharding.Mesh,
             split: ArraySplit) -> Iterator[tuple[jax.Array, jax.Array]]:
  """Yields (images, labels) global arrays for each index batch, gathering and transferring batch
  i+1 before batch i is handed out, so the copy overlaps step i (JAX dispatch is asynchronous)."""
  pending = None
  for idx in indices:
    batch = parallel.to_global(mesh, gather(split, idx))
    if pending is not None:
      yield pending
    pending = batch
  if pending is not None:
    yield pending
