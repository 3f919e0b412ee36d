"""The classifier: stem -> gMLP blocks with a per-block gating axis -> LayerNorm -> mean -> head.

``block_style="keras"`` builds the public Keras CIFAR-100 example's model instead (blocks.py): its
blocks, no LayerNorm before pooling (``final_norm=False`` in ``gmlp_keras``), a Glorot-uniform head.
The stem keeps this package's init (Keras embeds patches with a Glorot-uniform Dense).

gMLP is the classifier with a ``PatchStem``; CgMLP the one with a ``ConvStem`` (``conv_layers``
non-empty). ``axes`` gives each block's gating axis: a tuple of ``"token"``/``"channel"`` with one
entry per block, or a shorthand: ``"token"``, ``"channel"``, ``"alternate"`` (token, channel, ...).

Shapes: images ``(B, image_size, image_size, 3)`` -> logits ``(B, num_classes)`` in float32.
Every block's output is sown into ``"intermediates"`` as ``block{i}/output`` (free unless mutable).

Variables: ``{"params": ...}``, and with a BatchNorm conv stem (``conv_norm="batch"``,
``uses_batch_stats``) also ``{"batch_stats": ...}``, the running statistics: training applies the
model with ``mutable=["batch_stats"]`` and keeps the updated ones, evaluation reads them.
"""
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from cgmlp_jax.models.blocks import GMLPBlock, check_style
from cgmlp_jax.models.dropout import Dropout
from cgmlp_jax.models.gating import AXES, LAYER_NORM_EPS, check_axis
from cgmlp_jax.models.stems import ConvLayer, ConvStem, PatchStem, token_grid

Dtype = Any
AXIS_SHORTHANDS = ("token", "channel", "alternate")


def resolve_axes(axes: str | Sequence[str], depth: int) -> tuple[str, ...]:
  """Expands an axis shorthand to one axis per block, validating names and length."""
  if isinstance(axes, str):
    if axes == "alternate":
      return tuple(AXES[i % 2] for i in range(depth))
    if axes not in AXES:
      raise ValueError(f"Unknown axis pattern {axes!r}; use one of {AXIS_SHORTHANDS} or a tuple "
                       f"of {AXES} with one entry per block.")
    return (axes,) * depth
  axes = tuple(axes)
  if len(axes) != depth:
    raise ValueError(f"The axis pattern {axes} has {len(axes)} entries but the model has "
                     f"{depth} blocks; give one axis per block.")
  for axis in axes:
    check_axis(axis)
  return axes


def as_variables(weights: Any) -> dict[str, Any]:
  """A model's variables from what is at hand: its parameters alone (the tree under ``"params"``),
  or its variables ``{"params": ..., "batch_stats": ...}``, which a model with a BatchNorm stem
  needs for inference. (A parameter tree's top-level keys are module names, never ``"params"``.)"""
  return dict(weights) if "params" in weights else {"params": weights}


def params_of(weights: Any) -> Any:
  """The parameters of ``weights`` (parameters alone, or variables; see ``as_variables``)."""
  return as_variables(weights)["params"]


class GatedMLPClassifier(nn.Module):
  """gMLP / CgMLP image classifier (see module docstring)."""
  num_classes: int
  image_size: int
  patch_size: int
  d_model: int
  d_ffn: int
  depth: int
  conv_layers: Sequence[ConvLayer] = ()  # empty: gMLP patch stem
  conv_norm: str = "group"
  axes: str | Sequence[str] = "token"
  dropout_rate: float = 0.0  # inside each block, before the residual add
  drop_path_rate: float = 0.0  # stochastic depth of the last block; rises linearly from 0
  head_dropout_rate: float = 0.0
  block_style: str = "gmlp"  # or "keras" (blocks.STYLES)
  final_norm: bool = True  # LayerNorm before pooling (gMLP, timm); the Keras example has none
  # Epsilon of each gating unit's LayerNorm(v): 1e-6 (gMLP authors' code, Keras' LayerNormalization
  # (epsilon=1e-6) in the Keras example), or timm's 1e-5 (gating.TIMM_GATE_NORM_EPS) in the ImageNet
  # variants, whose timm weights timm_import loads. Block and final norms use 1e-6 everywhere.
  gate_norm_eps: float = LAYER_NORM_EPS
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @property
  def num_tokens(self) -> int:
    return token_grid(self.image_size, self.patch_size, [p for _, _, p in self.conv_layers]) ** 2

  @property
  def block_axes(self) -> tuple[str, ...]:
    return resolve_axes(self.axes, self.depth)

  @property
  def uses_batch_stats(self) -> bool:
    """Whether the model has a ``"batch_stats"`` collection (a BatchNorm conv stem)."""
    return bool(self.conv_layers) and self.conv_norm == "batch"

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    # images: (B, S, S, C)
    if images.ndim != 4 or images.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"The model takes images of shape (batch, {self.image_size}, "
                       f"{self.image_size}, channels) but got {images.shape}; resize the inputs "
                       f"(the data pipeline's image_size) or build the model with "
                       f"image_size={images.shape[1] if images.ndim == 4 else '?'}.")
    kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    num_tokens, block_axes = self.num_tokens, self.block_axes  # validate before any compute
    check_style(self.block_style)
    if self.conv_layers:
      x = ConvStem(self.conv_layers, self.patch_size, self.d_model, norm=self.conv_norm,
                   name="stem", **kw)(images, train=train)
    else:
      x = PatchStem(self.patch_size, self.d_model, name="stem", **kw)(images)  # (B, N, D)
    for i, axis in enumerate(block_axes):
      rate = self.drop_path_rate * i / max(self.depth - 1, 1)
      x = GMLPBlock(self.d_ffn, axis=axis, num_tokens=num_tokens, dropout_rate=self.dropout_rate,
                    drop_path_rate=rate, style=self.block_style,
                    gate_norm_eps=self.gate_norm_eps, name=f"block{i}",
                    **kw)(x, train=train)
    if self.final_norm:
      x = nn.LayerNorm(epsilon=LAYER_NORM_EPS, name="norm", **kw)(x)
    x = jnp.mean(x, axis=1)  # (B, D)
    x = Dropout(self.head_dropout_rate)(x, deterministic=not train)
    head_init = (nn.initializers.glorot_uniform() if self.block_style == "keras" else
                 nn.initializers.zeros)
    logits = nn.Dense(self.num_classes, kernel_init=head_init, name="head", **kw)(x)
    return logits.astype(jnp.float32)  # (B, num_classes)
