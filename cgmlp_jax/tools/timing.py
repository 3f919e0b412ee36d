"""Timing on asynchronously dispatching devices: rates over windows of calls, synchronised once.

A shared machine's speed drifts while it is measured: on this project's 2-core VMs a train step and
a plain matmul both slow down by 15-25 % together for tens of seconds at a time. A figure taken
from a few windows then depends on when they ran, and a ratio of two figures taken one after the
other (MFU against a peak measured later, an A/B of two functions) on whether the drift fell
between them. ``interleaved_rates`` therefore times several functions in rounds, one window of
each per round, so that they share the conditions of every round, and per-round ratios
(``Rate.ratio``) pair windows that ran seconds apart. Every figure is a median with its quartiles.
"""
import dataclasses
import statistics
import time
from typing import Callable

import jax


@dataclasses.dataclass(frozen=True)
class Rate:
  """Items/s of each timed window, in the order they ran."""
  samples: tuple[float, ...]

  @property
  def median(self) -> float:
    return statistics.median(self.samples)

  @property
  def quartiles(self) -> tuple[float, float]:
    if len(self.samples) < 2:
      return self.samples[0], self.samples[0]
    q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
    return q1, q3

  @property
  def spread(self) -> float:
    """Interquartile range over the median: 0.04 means the middle half is within 4 %."""
    q1, q3 = self.quartiles
    return (q3 - q1) / self.median

  def ratio(self, other: "Rate") -> "Rate":
    """Round-by-round ``self / other`` of two rates timed in the same rounds."""
    if len(self.samples) != len(other.samples):
      raise ValueError(f"Rates of {len(self.samples)} and {len(other.samples)} windows were not "
                       f"timed in the same rounds; time them with one `interleaved_rates` call.")
    return Rate(tuple(a / b for a, b in zip(self.samples, other.samples)))

  def scaled(self, factor: float) -> "Rate":
    return Rate(tuple(s * factor for s in self.samples))

  def __str__(self) -> str:
    q1, q3 = self.quartiles
    return f"{self.median:.4g} (quartiles {q1:.4g}-{q3:.4g}, {len(self.samples)} windows)"


def _window(fn: Callable, calls: int) -> float:
  """Seconds for ``calls`` calls of ``fn``, dispatched back to back, synchronised once."""
  start = time.perf_counter()
  jax.block_until_ready([fn() for _ in range(calls)][-1])
  return time.perf_counter() - start


def interleaved_rates(fns: dict[str, tuple[Callable, int]], calls: int,
                      rounds: int) -> dict[str, Rate]:
  """``{name: (fn, items_per_call)}`` -> ``{name: Rate}``: one warm-up window of each function,
  then ``rounds`` rounds of one ``calls``-call window of each, in turn."""
  for fn, _ in fns.values():
    _window(fn, calls)
  samples = {name: [] for name in fns}
  for _ in range(rounds):
    for name, (fn, items) in fns.items():
      samples[name].append(calls * items / _window(fn, calls))
  return {name: Rate(tuple(s)) for name, s in samples.items()}


def rate(fn: Callable, items_per_call: int, calls: int, windows: int) -> Rate:
  """Items/s of ``fn`` over ``windows`` windows of ``calls`` calls, after one warm-up window."""
  return interleaved_rates({"": (fn, items_per_call)}, calls, windows)[""]
