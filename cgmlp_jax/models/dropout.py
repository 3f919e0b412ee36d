"""Dropout whose mask costs a hash per element instead of a Threefry block cipher.

``flax.linen.Dropout`` draws every element of its mask with ``jax.random.bernoulli``: Threefry-2x32,
20 rounds per pair of 32-bit words. XLA:CPU runs that cipher at ~10 ns per element, and the Keras
gMLP blocks drop out their (B, N, d_ffn) activations: on a 2-core CPU the masks took a quarter of
the paper-scale train step (``python -m cgmlp_jax.tools.step_parts``; BENCHMARKS.md).

Here Threefry draws one 32-bit seed word per call (per module and step, from the ``"dropout"``
stream as before), and each element's 32 random bits are ``lowbias32(index ^ seed)``: Chris
Wellons' integer hash (hash-prospector, 2018; two multiply-xorshift rounds, a bijection whose
avalanche bias, 0.17, is below MurmurHash3's fmix32's 0.26), ``index`` being the element's
position in the whole (global) array. An element is kept when its bits are at least
``round(rate * 2**32)``: each element is dropped independently with the configured rate (to
2**-32). The mask depends only on the key and the global position, so it is the same however the
array is sharded over devices. ``tests/test_dropout.py`` tests the rate, the bits' balance, the
independence of elements at strides 1 to 2**19 and of successive keys, and the sharding
invariance. One hash instead of fmix32-of-fmix32 made the paper-scale gMLP step ~2 % faster
(BENCHMARKS.md); one fmix32 alone would not do: it correlates elements 4096 apart.
"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


def _lowbias32(h: jax.Array) -> jax.Array:
  """Wellons' lowbias32 on uint32: a bijection whose every output bit depends on every input bit."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(0x7FEB352D)
  h = h ^ (h >> 15)
  h = h * jnp.uint32(0x846CA68B)
  return h ^ (h >> 16)


def hashed_bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Pseudo-random uint32 of ``shape``: a counter hash seeded by a Threefry word of ``key``."""
  size = math.prod(shape)
  if size > 2**32:
    raise ValueError(f"hashed_bits counts elements in 32 bits; {shape} has {size}. Apply dropout "
                     f"to smaller arrays (e.g. per microbatch).")
  seed = jax.random.bits(key, (), jnp.uint32)
  return _lowbias32(global_index(shape) ^ seed)


def global_index(shape: tuple[int, ...]) -> jax.Array:
  """uint32 ``shape``: each element's row-major position in the whole array."""
  index = jnp.zeros(shape, jnp.uint32)
  stride = 1
  for axis in reversed(range(len(shape))):
    index = index + jax.lax.broadcasted_iota(jnp.uint32, shape, axis) * jnp.uint32(stride)
    stride *= shape[axis]
  return index


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
