"""Stems: images (B, H, W, 3) -> tokens (B, N, d_model).

* ``PatchStem`` (gMLP): non-overlapping ``p x p`` patches, linearly projected (a strided conv).
* ``ConvStem`` (CgMLP): per layer ``conv k x k -> norm -> ReLU -> max-pool``, then the same
  patch projection on the pooled feature map. Each layer's activation is sown into the
  ``"intermediates"`` collection as ``layer{i}`` (free unless that collection is mutable), for the
  paper's feature-map figures.

Default normalisation in the conv stem is GroupNorm (32 groups, or gcd(32, filters); flax's
function and parameters, computed faster on CPU: ``norms.GroupNorm``). It is
stateless, so training and evaluation compute the same function, nothing beyond parameters is
checkpointed or synchronised across devices, and it does not depend on the per-device batch size
(which shrinks as devices are added); at CIFAR batch sizes it trains as well as BatchNorm
(Wu & He, 2018). ``"layer"`` (per-pixel LayerNorm over channels) and ``"none"`` are the alternatives.

``"batch"`` is BatchNorm (momentum 0.9, epsilon 1e-5), what most conv stems and fast CIFAR recipes
use: in training (``train=True``) it normalises with the batch's statistics and updates running
averages in the ``"batch_stats"`` collection (apply with ``mutable=["batch_stats"]``); in evaluation
it uses those averages. Under ``jax.jit`` with the batch sharded across devices the statistics are
the global batch's (XLA reduces across devices), so they do not depend on the device count.
"""
import functools
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cgmlp_jax.models.norms import GroupNorm

Dtype = Any
ConvLayer = tuple[int, int, int]  # (filters, kernel size, max-pool size)
NORMS = ("group", "layer", "batch", "none")


def token_grid(image_size: int, patch_size: int, pools: Sequence[int] = ()) -> int:
  """Side of the token grid after the pools and the patch projection; validates divisibility."""
  side = image_size
  for i, pool in enumerate(pools):
    if side % pool:
      raise ValueError(f"Max-pool {pool} of conv layer {i} does not divide its {side}x{side} "
                       f"feature map (image_size={image_size}); choose an image size divisible "
                       f"by the product of the pool sizes.")
    side //= pool
  if side % patch_size:
    raise ValueError(f"Patch size {patch_size} does not divide the {side}x{side} map it patchifies "
                     f"(image_size={image_size}, pools={tuple(pools)}); choose sizes so it divides.")
  return side // patch_size


def _im2col(x: jax.Array, k: int) -> jax.Array:
  """(B, H, W, C) -> (B, H, W, k*k*C): each pixel's 'SAME'-padded k x k neighbourhood, ordered
  (i, j, c) like an ``nn.Conv`` kernel."""
  lo, hi = (k - 1) // 2, k // 2
  h, w = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (lo, hi), (lo, hi), (0, 0)))
  return jnp.concatenate([padded[:, i:i + h, j:j + w, :] for i in range(k) for j in range(k)],
                         axis=-1)


@jax.custom_vjp
def conv_im2col(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """A stride-1 'SAME' convolution as one matmul over im2col patches.

  x: (B, H, W, C), kernel: (k, k, C, F) (``nn.Conv``'s layout) -> (B, H, W, F). On CPU, XLA's own
  convolution backward pass is several times slower than this formulation (BENCHMARKS.md). The
  backward pass is written out so that the kernel gradient is ``patches^T @ grad``: JAX's own
  rule asks for ``(grad^T @ patches)^T``, for which XLA:CPU wrote the (B*H*W, F) output gradient
  transposed on every step.
  """
  return _conv_im2col_fwd(x, kernel)[0]


def _conv_im2col_fwd(x, kernel):
  patches = _im2col(x, kernel.shape[0])  # (B, H, W, k*k*C)
  return patches @ kernel.reshape(-1, kernel.shape[-1]), (patches, kernel)


def _conv_im2col_bwd(residuals, grad):  # grad: (B, H, W, F)
  patches, kernel = residuals  # (B, H, W, k*k*C), (k, k, C, F)
  k, c, f = kernel.shape[0], kernel.shape[2], kernel.shape[3]
  grad_kernel = jnp.einsum("nk,nf->kf", patches.reshape(-1, k * k * c),
                           grad.reshape(-1, f))  # (k*k*C, F)
  grad_patches = grad @ kernel.reshape(-1, f).T  # (B, H, W, k*k*C)
  im2col_transpose = jax.linear_transpose(lambda x: _im2col(x, k),
                                          jax.ShapeDtypeStruct(grad.shape[:3] + (c,), grad.dtype))
  (grad_x,) = im2col_transpose(grad_patches)  # (B, H, W, C)
  return grad_x, grad_kernel.reshape(kernel.shape)


conv_im2col.defvjp(_conv_im2col_fwd, _conv_im2col_bwd)


def conv_im2col_input(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """``conv_im2col`` for a convolution of the input images, whose gradient training never needs.

  x: (B, H, W, C), kernel: (k, k, C, F) -> (B, H, W, F). The patches are built channel-major,
  (k*k*C, B*H*W), so the kernel gradient (patches times the output gradient, contracted over the
  pixels) reads both operands as stored; with batch-major patches XLA:CPU transposed the
  (B*H*W, F) output gradient on every step, the largest single op of a CgMLP step at 64x64
  (BENCHMARKS.md). An input gradient (saliency maps) is still exact, just not faster.
  """
  k, f = kernel.shape[0], kernel.shape[-1]
  lo, hi = (k - 1) // 2, k // 2
  b, h, w, c = x.shape
  padded = jnp.pad(x.transpose(3, 0, 1, 2), ((0, 0), (0, 0), (lo, hi), (lo, hi)))  # (C, B, ., .)
  patches = jnp.concatenate([padded[:, :, i:i + h, j:j + w] for i in range(k) for j in range(k)],
                            axis=0)  # (k*k*C, B, H, W), ordered (i, j, c) like the kernel
  y = jnp.einsum("kn,kf->nf", patches.reshape(k * k * c, -1), kernel.reshape(-1, f))
  return y.reshape(b, h, w, f)


def patchify_matmul(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """A ``p x p``, stride-``p`` 'VALID' convolution (patch projection) as one matmul.

  x: (B, H, W, C), kernel: (p, p, C, D) -> (B, H/p, W/p, D). On CPU, 2-4x faster (forward +
  backward) than XLA's strided convolution, most for p = 1 and 2 (BENCHMARKS.md).
  """
  p = kernel.shape[0]
  b, h, w, c = x.shape
  x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)  # (B, h, w, p, p, C)
  return x.reshape(b, h // p, w // p, p * p * c) @ kernel.reshape(-1, kernel.shape[-1])


def max_pool(x: jax.Array, pool: int) -> jax.Array:
  """Non-overlapping ``pool x pool`` max-pool, (B, H, W, C) -> (B, H/pool, W/pool, C).

  On CPU as a max over a reshaped axis: its backward is an elementwise mask, 3-6x faster than
  XLA's select-and-scatter for ``reduce_window``. Same values; gradients differ only where a
  window has tied maxima (after ReLU, only zeros, whose gradient ReLU drops anyway).
  """
  if jax.default_backend() != "cpu":
    return nn.max_pool(x, (pool, pool), strides=(pool, pool))
  b, h, w, c = x.shape
  return x.reshape(b, h // pool, pool, w // pool, pool, c).max(axis=(2, 4))


class Conv(nn.Module):
  """``nn.Conv`` with the same parameters for the stems' two convolutions: stride-1 'SAME'
  (``patch=False``) or a ``k x k`` stride-``k`` patch projection (``patch=True``); computed as
  matmuls (``conv_im2col`` / ``patchify_matmul``) on CPU; ``of_input``: the convolution reads the
  input images (``conv_im2col_input``)."""
  features: int
  kernel_size: int
  use_bias: bool = True
  patch: bool = False
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, of_input: bool = False) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features),
                        self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (self.features,),
                      self.param_dtype) if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if jax.default_backend() == "cpu":
      im2col = conv_im2col_input if of_input else conv_im2col
      y = patchify_matmul(x, kernel) if self.patch else im2col(x, kernel)
    else:
      y = jax.lax.conv_general_dilated(x, kernel, (k, k) if self.patch else (1, 1),
                                       "VALID" if self.patch else "SAME",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias if self.use_bias else y


def _patchify(x: jax.Array, patch_size: int, d_model: int, dtype, param_dtype) -> jax.Array:
  x = Conv(d_model, patch_size, patch=True, dtype=dtype, param_dtype=param_dtype,
           name="patch_proj")(x)  # (B, h, w, D)
  return x.reshape(x.shape[0], -1, x.shape[-1])  # (B, h*w, D)


class PatchStem(nn.Module):
  patch_size: int
  d_model: int
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    token_grid(images.shape[1], self.patch_size)
    return _patchify(images, self.patch_size, self.d_model, self.dtype, self.param_dtype)


class ConvStem(nn.Module):
  layers: Sequence[ConvLayer]
  patch_size: int
  d_model: int
  norm: str = "group"
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    if self.norm not in NORMS:
      raise ValueError(f"Unknown conv-stem norm {self.norm!r}; valid: {NORMS}.")
    token_grid(images.shape[1], self.patch_size, [pool for _, _, pool in self.layers])
    x = images
    # Without the feature maps to sow, GroupNorm, ReLU and the max-pool run on the pooled map:
    # ReLU and the pool commute, and so does the norm's affine map (norms.GroupNorm); the same
    # values, with pool^2 times fewer elements for the norm and the ReLU.
    pool_first = self.norm == "group" and not self.is_mutable_collection("intermediates")
    for i, (filters, kernel, pool) in enumerate(self.layers):
      x = Conv(filters, kernel, use_bias=self.norm == "none", dtype=self.dtype,
               param_dtype=self.param_dtype, name=f"conv{i}")(x, of_input=i == 0)
      if pool_first and pool > 1:
        x = GroupNorm(num_groups=math.gcd(32, filters), epsilon=1e-5, dtype=self.dtype,
                      param_dtype=self.param_dtype, name=f"norm{i}")(
                          x, pool=functools.partial(max_pool, pool=pool))
        x = nn.relu(x)  # (B, H_i/pool, W_i/pool, filters)
        continue
      if self.norm == "group":
        x = GroupNorm(num_groups=math.gcd(32, filters), epsilon=1e-5, dtype=self.dtype,
                      param_dtype=self.param_dtype, name=f"norm{i}")(x)
      elif self.norm == "layer":
        x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, param_dtype=self.param_dtype,
                         name=f"norm{i}")(x)
      elif self.norm == "batch":
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, param_dtype=self.param_dtype, name=f"norm{i}")(x)
      x = nn.relu(x)  # (B, H_i, W_i, filters)
      self.sow("intermediates", f"layer{i}", x)
      x = max_pool(x, pool)  # (B, H_i/pool, W_i/pool, filters)
    return _patchify(x, self.patch_size, self.d_model, self.dtype, self.param_dtype)
