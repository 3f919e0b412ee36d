"""What a gMLP / CgMLP computes, drawn: stem feature maps, saliency, and its gating weights.

The CgMLP paper's case is that a convolutional stem hands the gated MLP better low-level features,
and the gMLP paper reads its token-gating weights as learned spatial filters; these figures check
both on a trained checkpoint, or on fresh weights as a baseline:

* ``feature_maps``: each conv-stem layer's activations (after ReLU, before pooling), per image.
* ``saliency``: where the predicted class's logit comes from, three ways side by side:
  |gradient x input| (pixel-exact, but speckled at 32x32), SmoothGrad (the gradient's magnitude
  averaged over noisy copies of the image: Smilkov et al. 2017) and Grad-CAM on the token grid
  (the last block's tokens weighted by the logit's mean gradient per channel, ReLU, upsampled:
  Selvaraju et al. 2017), which shows regions.
* ``token_gating``: rows of each token-gating block's N x N projection, on the token grid.
* ``channel_gating``: each channel-gating block's C x C projection.

Each writes PNGs to ``out_dir`` and returns their paths. Compiled computations are cached per
model (a static, hashable argument), so calls with new images or weights of the same shapes do
not compile again. The command line (``python -m cgmlp_jax.tools.visualize``, ``__main__.py``) adds loading:

    python -m cgmlp_jax.tools.visualize --workdir runs/cgmlp --split test --indices 0,1,2 --out vis
    python -m cgmlp_jax.tools.visualize --model cgmlp_2conv_small --num_classes 10 \\
        --images=cat.png,dog.png --out vis
"""
import functools
import math
import os
import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from cgmlp_jax import data
from cgmlp_jax import models
from cgmlp_jax.tools.visualize import images as images_lib

KINDS = ("feature_maps", "saliency", "token_gating", "channel_gating")
GRID_COLUMNS = 8  # feature-map channels per row
# What a stem layer computes before its max-pool, by ``conv_norm`` (stems.NORMS), for the titles.
STEM_LAYER_OPS = {"group": "conv + GroupNorm + ReLU", "layer": "conv + LayerNorm + ReLU",
                  "batch": "conv + BatchNorm + ReLU", "none": "conv + ReLU"}
# A model's parameters, or its variables {"params": ..., "batch_stats": ...} (models.as_variables),
# which a model with a BatchNorm stem needs: its figures use the running statistics (inference).
Params = dict[str, Any]


def _select(what: str, requested: Sequence[int] | None, valid: Sequence[int]) -> list[int]:
  if requested is None:
    return list(valid)
  if not requested:
    raise ValueError(f"No {what} given.")
  unknown = [i for i in requested if i not in valid]
  if unknown:
    shown = list(valid) if len(valid) <= 16 else f"{valid[0]}..{valid[-1]}"
    raise ValueError(f"Unknown {what} {unknown}; valid: {shown}.")
  return list(requested)


def _caption(b: int, pred: int, labels: Sequence[int] | None,
             class_names: Sequence[str] | None) -> str:
  def name(k: int) -> str:
    return class_names[k] if class_names and k < len(class_names) else f"class {k}"

  text = f"image {b}: predicted {name(pred)}"
  return text if labels is None else text + f", true {name(int(labels[b]))}"


def _save(fig: Figure, out_dir: str, name: str) -> str:
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, name)
  fig.savefig(path, dpi=100)
  return path


def feature_maps(model: models.GatedMLPClassifier, params: Params, images, out_dir: str, *,
                 layers: Sequence[int] | None = None, max_channels: int = 32,
                 labels: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
                 mean=data.CIFAR10_MEAN, std=data.CIFAR10_STD) -> list[str]:
  """One PNG per image and stem layer: the first ``max_channels`` channels as a grid.

  ``params``: the model's parameters or variables (with a BatchNorm stem: its variables, whose
  running statistics normalise, as in evaluation); ``images``: uint8 (H, W, 3) square images (a
  batch array or a list); ``layers``: conv-stem layer indices (default all); ``labels`` /
  ``class_names``: for the titles; ``mean`` / ``std``: the normalisation the model was trained
  with.
  """
  if not model.conv_layers:
    raise ValueError(f"The model has no conv stem (it is a gMLP with a {model.patch_size}x"
                     f"{model.patch_size} patch stem), so it has no feature maps to draw; use a "
                     f"CgMLP variant (conv_layers non-empty).")
  layers = _select("stem layer(s)", layers, range(len(model.conv_layers)))
  if max_channels < 1:
    raise ValueError(f"max_channels must be at least 1; got {max_channels}.")
  x, display = images_lib.preprocess(images, model.image_size, mean=mean, std=std)
  logits, acts = jax.device_get(_stem_activations(model, params, x))
  paths = []
  for b, pred in enumerate(np.argmax(logits, axis=-1)):
    for i in layers:
      act = acts[f"layer{i}"][b]  # (H_i, W_i, F_i)
      shown = act[..., :max_channels]
      rows = math.ceil(shown.shape[-1] / GRID_COLUMNS)
      fig = Figure(figsize=(14, 1.5 * rows + 1.2), layout="constrained")
      left, right = fig.subfigures(1, 2, width_ratios=(1, 4))
      ax = left.subplots()
      ax.imshow(display[b])
      ax.set_title(f"input ({model.image_size}x{model.image_size})", fontsize="small")
      ax.set_axis_off()
      axes = right.subplots(rows, GRID_COLUMNS, squeeze=False)
      vmax = float(shown.max()) or 1.0  # one scale for all channels, so they compare
      for c, a in enumerate(axes.flat):
        a.set_axis_off()
        if c < shown.shape[-1]:
          im = a.imshow(shown[..., c], cmap="viridis", vmin=0.0, vmax=vmax)
          a.set_title(f"ch {c}", fontsize=7)
      right.colorbar(im, ax=axes, label="activation", shrink=0.9)
      fig.suptitle(f"{_caption(b, pred, labels, class_names)}\nstem layer {i}: "
                   f"{STEM_LAYER_OPS[model.conv_norm]}, "
                   f"{act.shape[0]}x{act.shape[1]}x{act.shape[2]}, channels "
                   f"0-{shown.shape[-1] - 1} of {act.shape[2]}")
      paths.append(_save(fig, out_dir, f"feature_maps_img{b}_layer{i}.png"))
  return paths


@functools.partial(jax.jit, static_argnames="model")
def _stem_activations(model: models.GatedMLPClassifier, params: Params, x: jax.Array):
  """``(logits (B, K), {"layer{i}": (B, H_i, W_i, F_i)})`` of inputs x (B, S, S, 3)."""
  logits, state = model.apply(models.as_variables(params), x, mutable=["intermediates"])
  return logits, {name: sown[0] for name, sown in state["intermediates"]["stem"].items()}


@functools.partial(jax.jit, static_argnames="model")
def saliency_maps(model: models.GatedMLPClassifier, params: Params, x: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
  """``(|gradient x input| summed over RGB (B, S, S), predicted classes (B,))`` of inputs x."""
  def predicted_logit(x):
    logits = model.apply(models.as_variables(params), x)  # (B, K)
    pred = jnp.argmax(logits, axis=-1)
    # Examples do not interact (a BatchNorm stem uses its running statistics here), so the
    # gradient of the sum over the batch is each example's own gradient.
    return jnp.take_along_axis(logits, pred[:, None], axis=1).sum(), pred

  grads, preds = jax.grad(predicted_logit, has_aux=True)(x)  # (B, S, S, 3), x: normalised
  return jnp.abs(jnp.sum(grads * x, axis=-1)), preds


@functools.partial(jax.jit, static_argnames=("model", "samples"))
def smoothgrad_maps(model: models.GatedMLPClassifier, params: Params, x: jax.Array,
                    key: jax.Array, samples: int = 32, noise: float = 0.15) -> jax.Array:
  """SmoothGrad: |mean gradient of the predicted logit| over ``samples`` copies of x with Gaussian
  noise (std ``noise`` x each image's value range), summed over RGB: (B, S, S)."""
  variables = models.as_variables(params)
  pred = jnp.argmax(model.apply(variables, x), axis=-1)  # (B,), of the clean images
  scale = noise * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))[:, None, None, None]

  def gradient(key):
    noisy = x + scale * jax.random.normal(key, x.shape)
    return jax.grad(lambda z: jnp.take_along_axis(model.apply(variables, z),
                                                  pred[:, None], axis=1).sum())(noisy)

  grads = jax.lax.map(gradient, jax.random.split(key, samples))  # (samples, B, S, S, 3)
  return jnp.abs(grads.mean(axis=0)).sum(axis=-1)


@functools.partial(jax.jit, static_argnames="model")
def token_grad_cam(model: models.GatedMLPClassifier, params: Params, x: jax.Array) -> jax.Array:
  """Grad-CAM on the last block's tokens A (B, N, D): ReLU(sum_d mean_n(dlogit/dA)_d A_nd) on the
  token grid, bilinearly upsampled to the image and scaled to [0, 1] per image: (B, S, S)."""
  last = f"block{model.depth - 1}"

  def predicted_logit(delta):  # delta (B, N, D) is added to the last block's output
    def add_delta(next_fun, args, kwargs, context):
      out = next_fun(*args, **kwargs)
      is_last = context.module.name == last and context.method_name == "__call__"
      return out + delta if is_last else out

    with nn.intercept_methods(add_delta):
      logits, state = model.apply(models.as_variables(params), x, mutable=["intermediates"])
    pred = jnp.argmax(logits, axis=-1)
    tokens = state["intermediates"][last]["output"][0]  # (B, N, D), before delta
    return jnp.take_along_axis(logits, pred[:, None], axis=1).sum(), tokens

  b, n, s = x.shape[0], model.num_tokens, model.image_size
  grads, tokens = jax.grad(predicted_logit, has_aux=True)(jnp.zeros((b, n, model.d_model)))
  cam = jax.nn.relu(jnp.einsum("bnd,bd->bn", tokens, grads.mean(axis=1)))  # (B, N)
  grid = math.isqrt(n)
  cam = jax.image.resize(cam.reshape(b, grid, grid), (b, s, s), "bilinear")
  return cam / jnp.maximum(cam.max(axis=(1, 2), keepdims=True), 1e-12)


def saliency(model: models.GatedMLPClassifier, params: Params, images, out_dir: str, *,
             labels: Sequence[int] | None = None, class_names: Sequence[str] | None = None,
             mean=data.CIFAR10_MEAN, std=data.CIFAR10_STD, seed: int = 0) -> list[str]:
  """One PNG per image: the image, then gradient x input, SmoothGrad and token-grid Grad-CAM
  overlaid (arguments as in ``feature_maps``)."""
  x, display = images_lib.preprocess(images, model.image_size, mean=mean, std=std)
  maps, preds = jax.device_get(saliency_maps(model, params, x))
  smooth = jax.device_get(smoothgrad_maps(model, params, x, jax.random.key(seed)))
  cams = jax.device_get(token_grad_cam(model, params, x))
  methods = (("gradient x input", maps), ("SmoothGrad |mean gradient|", smooth),
             (f"Grad-CAM, last block's {math.isqrt(model.num_tokens)}x"
              f"{math.isqrt(model.num_tokens)} tokens", cams))
  paths = []
  for b, pred in enumerate(preds):
    fig = Figure(figsize=(16, 4.6), layout="constrained")
    axes = fig.subplots(1, 1 + len(methods))
    axes[0].imshow(display[b])
    axes[0].set_title(f"input ({model.image_size}x{model.image_size})")
    for ax, (title, m) in zip(axes[1:], methods):
      ax.imshow(display[b])
      im = ax.imshow(m[b], cmap="inferno", alpha=0.6, vmin=0.0, vmax=float(m[b].max()) or 1.0)
      ax.set_title(title + ("" if m[b].any() else "\n(all zero: e.g. an untrained head)"))
      fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in axes:
      ax.set_axis_off()
    fig.suptitle(_caption(b, int(pred), labels, class_names) + ": where the predicted logit "
                 "comes from")
    paths.append(_save(fig, out_dir, f"saliency_img{b}.png"))
  return paths


def gating_blocks(params: Params, axis: str) -> list[int]:
  """Indices of the blocks whose gating unit mixes along ``axis`` ("token" or "channel")."""
  key = {"token": "kernel", "channel": "proj"}[axis]
  return sorted(int(name[len("block"):]) for name, p in models.params_of(params).items()
                if re.fullmatch(r"block\d+", name) and key in p["gating"])


def _gating_blocks(params: Params, axis: str, requested: Sequence[int] | None) -> list[int]:
  valid = gating_blocks(params, axis)
  if not valid:
    raise ValueError(f"The model has no {axis}-gating blocks (token-gating: "
                     f"{gating_blocks(params, 'token')}, channel-gating: "
                     f"{gating_blocks(params, 'channel')}).")
  return _select(f"{axis}-gating block(s)", requested, valid)


def token_gating(params: Params, out_dir: str, *, blocks: Sequence[int] | None = None,
                 positions: Sequence[int] | None = None) -> list[str]:
  """One PNG per token-gating block: for a few output tokens (``positions``, flat indices; default
  corners, edge midpoints and centre), their row of the N x N projection on the token grid."""
  paths, params = [], models.params_of(params)
  for i in _gating_blocks(params, "token", blocks):
    kernel = np.asarray(params[f"block{i}"]["gating"]["kernel"])  # (N_out, N_in)
    side = math.isqrt(kernel.shape[0])  # the token grid is square: side x side = N
    if positions is None:
      lattice = sorted({0, side // 2, side - 1})
      chosen = [r * side + c for r in lattice for c in lattice]
    else:
      chosen = _select("token position(s)", positions, range(kernel.shape[0]))
    cols = math.ceil(math.sqrt(len(chosen)))
    rows = math.ceil(len(chosen) / cols)
    fig = Figure(figsize=(2.6 * cols + 1.4, 2.6 * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    vmax = float(np.abs(kernel[chosen]).max()) or 1.0
    for a in axes.flat:
      a.set_axis_off()
    for a, p in zip(axes.flat, chosen):
      r, c = divmod(p, side)
      im = a.imshow(kernel[p].reshape(side, side), cmap="RdBu_r", vmin=-vmax, vmax=vmax)
      a.plot(c, r, marker="s", markersize=9, markerfacecolor="none", markeredgecolor="black")
      a.set_title(f"output token {p} ({r}, {c})", fontsize="small")
    fig.colorbar(im, ax=axes, label="weight from input token", shrink=0.9)
    fig.suptitle(f"Block {i} token gating: each output token's weights over the {side}x{side} "
                 f"token grid\n(□ marks the output token)")
    paths.append(_save(fig, out_dir, f"token_gating_block{i}.png"))
  return paths


def channel_gating(params: Params, out_dir: str, *, blocks: Sequence[int] | None = None
                   ) -> list[str]:
  """One PNG per channel-gating block: its C x C projection as a heat map."""
  paths, params = [], models.params_of(params)
  for i in _gating_blocks(params, "channel", blocks):
    kernel = np.asarray(params[f"block{i}"]["gating"]["proj"]["kernel"]).T  # (C_out, C_in)
    vmax = float(np.abs(kernel).max()) or 1.0
    fig = Figure(figsize=(6.4, 5.4), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(kernel, cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set(xlabel="input channel", ylabel="output channel",
           title=f"Block {i} channel gating: {kernel.shape[0]}x{kernel.shape[1]} projection")
    fig.colorbar(im, ax=ax, label="weight")
    paths.append(_save(fig, out_dir, f"channel_gating_block{i}.png"))
  return paths

