"""The hashed dropout mask: flax's dropout semantics, and the statistics of a Bernoulli mask drawn
independently per element (rate, bit balance, neighbours at strides up to 2**19, successive keys),
sharding-invariant.

Bounds are 5 standard deviations of the statistic under true independence, so each assertion fails
by chance with probability ~1e-6.
"""
import math

import jax
import numpy as np
import pytest

from cgmlp_jax import parallel
from cgmlp_jax.models import dropout

SHAPE = (64, 32, 512)  # ~1M elements: (B, N, d_ffn) of a small batch
N = math.prod(SHAPE)


def _mask(seed: int, rate: float, shape=SHAPE) -> np.ndarray:
  return np.asarray(jax.jit(dropout.bernoulli_mask, static_argnums=(1, 2))(
      jax.random.key(seed), rate, shape))


@pytest.mark.parametrize("rate", [0.1, 0.2, 0.5, 0.9])
def test_each_element_is_dropped_with_the_configured_rate(rate):
  dropped = 1.0 - _mask(0, rate).mean()
  assert abs(dropped - rate) < 5 * math.sqrt(rate * (1 - rate) / N)


def test_every_bit_is_balanced_and_neighbours_and_keys_are_uncorrelated():
  bits = np.asarray(jax.jit(dropout.hashed_bits, static_argnums=1)(jax.random.key(0), SHAPE))
  # Each of the 32 bit positions is 1 half the time.
  ones = np.stack([(bits >> k) & 1 for k in range(32)]).reshape(32, -1).mean(axis=1)
  np.testing.assert_array_less(np.abs(ones - 0.5), 5 * 0.5 / math.sqrt(N))
  # As uniform numbers: successive elements along each axis, and the same element under the next
  # key (the next step's dropout), are uncorrelated.
  u = bits.astype(np.float64) / 2**32 - 0.5
  nxt = np.asarray(jax.jit(dropout.hashed_bits, static_argnums=1)(jax.random.key(1), SHAPE))
  pairs = {"last axis": (u[..., :-1], u[..., 1:]), "middle axis": (u[:, :-1], u[:, 1:]),
           "first axis": (u[:-1], u[1:]), "next key": (u, nxt.astype(np.float64) / 2**32 - 0.5)}
  for name, (a, b) in pairs.items():
    corr = np.corrcoef(a.ravel(), b.ravel())[0, 1]
    assert abs(corr) < 5 / math.sqrt(a.size), name
  # The masks of elements 1, 2, 4, ..., 2**19 apart in the flat array are independent:
  # P(both dropped) = rate^2. (One fmix32 round alone correlates elements 4096 apart, z ~ 6 over
  # 8 keys: why the hash is lowbias32.)
  keep = _mask(2, 0.2).ravel()
  for stride in [2**k for k in range(20)]:
    both = np.mean(~keep[:-stride] & ~keep[stride:])
    assert abs(both - 0.04) < 5 * math.sqrt(0.04 * 0.96 / both.size), stride


def test_the_mask_is_the_same_however_the_array_is_sharded():
  mesh = parallel.make_mesh()
  assert mesh.size > 1
  key = jax.random.key(3)
  draw = lambda key: dropout.bernoulli_mask(key, 0.3, SHAPE)  # noqa: E731
  sharded = jax.jit(draw, out_shardings=parallel.batch_sharded(mesh))(key)
  np.testing.assert_array_equal(np.asarray(sharded), np.asarray(jax.jit(draw)(key)))


def test_dropout_has_flax_semantics_and_the_gradient_uses_the_same_mask():
  x = jax.random.normal(jax.random.key(0), (8, 16, 32))
  layer = dropout.Dropout(rate=0.25)
  rngs = {"dropout": jax.random.key(1)}
  y = layer.apply({}, x, deterministic=False, rngs=rngs)
  kept = np.asarray(y) != 0
  np.testing.assert_allclose(np.asarray(y)[kept], np.asarray(x)[kept] / 0.75, rtol=1e-6)
  np.testing.assert_array_equal(layer.apply({}, x, deterministic=False, rngs=rngs), y)  # same key
  assert not np.array_equal(layer.apply({}, x, deterministic=False,
                                        rngs={"dropout": jax.random.key(2)}), y)
  grad = jax.grad(lambda x: layer.apply({}, x, deterministic=False, rngs=rngs).sum())(x)
  np.testing.assert_allclose(np.asarray(grad), kept / 0.75, rtol=1e-6)
  np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)
  np.testing.assert_array_equal(dropout.Dropout(0.0).apply({}, x, deterministic=False), x)
  np.testing.assert_array_equal(dropout.Dropout(1.0).apply({}, x, deterministic=False, rngs=rngs),
                                np.zeros_like(x))
