"""Timing on asynchronously dispatching devices: rates over windows of calls, synchronised once."""
import statistics
import time

import jax


def median_rate(fn, items_per_call: int, steps: int, windows: int) -> float:
  """Median items/s over ``windows`` windows of ``steps`` calls, after one warm-up window."""
  rates = []
  for w in range(windows + 1):
    start = time.perf_counter()
    jax.block_until_ready([fn() for _ in range(steps)][-1])
    if w:
      rates.append(steps * items_per_call / (time.perf_counter() - start))
  return statistics.median(rates)
