"""Spatial Gating Unit (SGU): the gMLP replacement for attention.

The input of width ``d_ffn`` is split into halves ``(u, v)``; ``v`` is layer-normalised and projected
by a learned affine map, and the unit returns ``u * proj(v)``. The projection's kernel starts near
zero and its bias at one, so a freshly initialised unit returns ``u`` and each block starts close to
an MLP with a residual (Liu et al., 2021, "Pay Attention to MLPs", section 2).

``axis`` picks what the projection mixes:

* ``"token"`` (gMLP): the ``N`` positions, with an ``N x N`` kernel shared over channels. The token
  count is part of the parameter shape, so the unit is built for one ``num_tokens``.
* ``"channel"`` (CgMLP's alternative): the ``d_ffn / 2`` channels at each position, shared over
  positions. It works at any resolution.

``norm_eps`` is the epsilon of the LayerNorm on ``v``: 1e-6 by default, as the block's and final
norms (the gMLP authors' code, and Keras' ``LayerNormalization(epsilon=1e-6)`` in the Keras example
the paper variants follow); timm's ``SpatialGatingUnit`` uses PyTorch's default ``nn.LayerNorm`` eps
1e-5 here (``TIMM_GATE_NORM_EPS``), which the ImageNet variants take so that timm's weights compute
timm's function (``timm_import``).

Shapes: ``(B, N, d_ffn) -> (B, N, d_ffn // 2)``.
"""
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

AXES = ("token", "channel")
LAYER_NORM_EPS = 1e-6
TIMM_GATE_NORM_EPS = 1e-5  # timm's SpatialGatingUnit: nn.LayerNorm's default eps
GATE_KERNEL_STD = 1e-6

Dtype = Any


def check_axis(axis: str) -> None:
  if axis not in AXES:
    raise ValueError(f"Unknown gating axis {axis!r}; valid axes are {AXES}.")


def token_mix(v: jax.Array, kernel: jax.Array) -> jax.Array:
  """``out[b, m] = sum_n kernel[m, n] v[b, n]``: v (B, N, C), kernel (N, N) -> (B, N, C).

  On CPU as a batched matmul, the kernel broadcast over the batch: XLA:CPU computes the plain
  contraction as one (N, N) x (N, B*C) matmul and transposes v, the output and their gradients
  between (B, N, C) and (N, B*C) around it; per example the operands are already laid out for it
  (BENCHMARKS.md).
  """
  if jax.default_backend() != "cpu":
    return jnp.einsum("bnc,mn->bmc", v, kernel)
  return jnp.einsum("bmn,bnc->bmc", jnp.broadcast_to(kernel, (v.shape[0],) + kernel.shape), v)


class SpatialGatingUnit(nn.Module):
  """``u * proj(LayerNorm(v))`` with the projection along ``axis`` (see module docstring)."""
  axis: str = "token"
  num_tokens: int | None = None  # Required for axis="token".
  # The projection's kernel init: near zero (gMLP), or e.g. Glorot-uniform (the Keras example).
  kernel_init: Callable = nn.initializers.normal(GATE_KERNEL_STD)
  norm_eps: float = LAYER_NORM_EPS  # LayerNorm(v)'s epsilon (see module docstring)
  dtype: Dtype | None = None  # Compute dtype; LayerNorm statistics stay in float32.
  param_dtype: Dtype = jnp.float32

  def setup(self):
    check_axis(self.axis)
    if self.axis == "token" and not self.num_tokens:
      raise ValueError("A token-axis SpatialGatingUnit needs num_tokens (the N of its N x N kernel).")

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    # x: (B, N, 2C)
    if x.shape[-1] % 2:
      raise ValueError(f"SpatialGatingUnit needs an even channel count to split into (u, v); "
                       f"got {x.shape[-1]}. Use an even d_ffn.")
    u, v = jnp.split(x, 2, axis=-1)  # (B, N, C) each
    v = nn.LayerNorm(epsilon=self.norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                     name="norm")(v)
    kernel_init = self.kernel_init
    if self.axis == "token":
      n = x.shape[-2]
      if n != self.num_tokens:
        raise ValueError(
            f"Token-axis gating was built for {self.num_tokens} tokens but got {n}: the N x N "
            f"projection fixes the token count, so the input image size (or patch/pool sizes) must "
            f"match the model's. Resize inputs to the model's image_size, or use axis='channel', "
            f"which works at any resolution.")
      kernel = self.param("kernel", kernel_init, (n, n), self.param_dtype)  # (N_out, N_in)
      bias = self.param("bias", nn.initializers.ones, (n,), self.param_dtype)  # (N_out,)
      v, kernel, bias = nn.dtypes.promote_dtype(v, kernel, bias, dtype=self.dtype)
      gate = token_mix(v, kernel) + bias[:, None]  # (B, N, C)
    else:
      gate = nn.Dense(v.shape[-1], kernel_init=kernel_init, bias_init=nn.initializers.ones,
                      dtype=self.dtype, param_dtype=self.param_dtype, name="proj")(v)  # (B, N, C)
    self.sow("intermediates", "gate", gate)
    return u * gate
