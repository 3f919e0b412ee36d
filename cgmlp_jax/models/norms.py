"""A GroupNorm for NHWC feature maps that XLA runs fast on CPU.

Shapes: ``(B, H, W, C) -> (B, H, W, C)``.
"""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any


class GroupNorm(nn.Module):
  """GroupNorm over (H, W, channels of a group), with flax's parameters (``scale``, ``bias``: (C,)).

  Computes the same function as ``nn.GroupNorm`` (same E[x^2] - E[x]^2 variance) but from
  per-channel sums over (H, W), combined into group statistics on the small (B, C) arrays, and
  applies it as one per-(example, channel) affine map. On CPU, XLA runs flax's reductions over the
  reshaped (H, W, C/G) axes several times slower than this (BENCHMARKS.md).

  ``pool``: a non-overlapping window max (``stems.max_pool``) to apply after the norm. An affine
  map per (example, channel) is monotone, so the pooled normalised map is the affine map of the
  pooled input, of its window max where the slope is >= 0 and of its window min where it is
  negative: the map then runs on the pooled map (pool^2 times fewer elements), with exactly the
  same result (rounding is monotone too).
  """
  num_groups: int
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *,
               pool: Callable[[jax.Array], jax.Array] | None = None) -> jax.Array:
    # x: (B, H, W, C) -> (B, H, W, C), or pooled (B, H/p, W/p, C)
    b, c = x.shape[0], x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (c,), self.param_dtype)
    groups, per_group = self.num_groups, c // self.num_groups
    xf = x.astype(jnp.float32)
    channel_mean = jnp.mean(xf, axis=(1, 2))  # (B, C)
    channel_mean_sq = jnp.mean(jnp.square(xf), axis=(1, 2))  # (B, C)
    mean = channel_mean.reshape(b, groups, per_group).mean(-1)  # (B, G)
    var = jnp.maximum(channel_mean_sq.reshape(b, groups, per_group).mean(-1) - mean**2, 0.0)
    mul = jnp.repeat(jax.lax.rsqrt(var + self.epsilon), per_group, axis=1) * scale  # (B, C)
    add = bias - jnp.repeat(mean, per_group, axis=1) * mul  # (B, C)
    dtype = self.dtype or x.dtype
    mul, add = (a[:, None, None, :].astype(dtype) for a in (mul, add))
    if pool is not None:
      # max over a window of (-x) is -(min of x), and (-min x) * |mul| == (min x) * mul exactly.
      sign = jnp.where(mul >= 0, 1.0, -1.0).astype(dtype)  # (B, 1, 1, C)
      return pool(x.astype(dtype) * sign) * jnp.abs(mul) + add
    return x.astype(dtype) * mul + add
