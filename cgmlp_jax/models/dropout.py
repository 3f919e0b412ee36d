"""Dropout whose mask costs a hash per element instead of a Threefry block cipher.

``flax.linen.Dropout`` draws every element of its mask with ``jax.random.bernoulli``: Threefry-2x32,
20 rounds per pair of 32-bit words. XLA:CPU runs that cipher at ~10 ns per element, and the Keras
gMLP blocks drop out their (B, N, d_ffn) activations: on a 2-core CPU the masks took a quarter of
the paper-scale train step (``python -m cgmlp_jax.tools.step_parts``; BENCHMARKS.md).

Here Threefry draws two 32-bit seed words per call (per module and step, from the ``"dropout"``
stream as before), and each element's 32 random bits are ``mix(mix(index ^ seed0) + seed1)``,
``mix`` being MurmurHash3's 32-bit finaliser (a bijection with full avalanche) and ``index`` the
element's position in the whole (global) array. An element is kept when its bits are at least
``round(rate * 2**32)``: each element is dropped independently with the configured rate (to
2**-32). The mask depends only on the key and the global position, so it is the same however the
array is sharded over devices. ``tests/test_dropout.py`` tests the rate, the bits' balance, the
independence of neighbouring elements and of successive keys, and the sharding invariance.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def _mix32(h: jax.Array) -> jax.Array:
  """MurmurHash3's fmix32 on uint32: a bijection whose every output bit depends on every input bit."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x85EBCA6B)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def hashed_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Pseudo-random uint32 of ``shape``: a counter hash seeded by two Threefry words of ``key``."""
  size = math.prod(shape)
  if size > 2**32:
    raise ValueError(f"hashed_bits counts elements in 32 bits; {shape} has {size}. Apply dropout "
                     f"to smaller arrays (e.g. per microbatch).")
  seed = jax.random.bits(key, (2,), jnp.uint32)
  index = jnp.zeros(shape, jnp.uint32)  # each element's row-major position in the whole array
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
    stride *= shape[axis]
  return _mix32(_mix32(index ^ seed[0]) + seed[1])


def bernoulli_mask(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
  """Boolean ``shape``: True (keep) with probability ``1 - rate``, each element independently."""
  threshold = min(round(rate * 2**32), 2**32 - 1)
  return hashed_bits(key, shape) >= jnp.uint32(threshold)


class Dropout(nn.Module):
  """``flax.linen.Dropout``'s semantics (zero with probability ``rate``, survivors scaled by
  ``1 / (1 - rate)``; the identity when ``deterministic`` or ``rate == 0``; keys from the
  ``"dropout"`` stream) with the hashed mask above."""
  rate: float

  @nn.compact
  def __call__(self, x: jax.Array, *, deterministic: bool) -> jax.Array:
    if deterministic or self.rate == 0.0:
      return x
    if self.rate == 1.0:
      return jnp.zeros_like(x)
    keep = bernoulli_mask(self.make_rng("dropout"), self.rate, x.shape)
    return jnp.where(keep, x / (1.0 - self.rate), jnp.zeros_like(x))
