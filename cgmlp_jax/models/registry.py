"""Named model variants: ``get(name, num_classes=..., **overrides)`` builds one.

| variant | input | tokens | stem | d_model | d_ffn | blocks | gating | params (1000 cls) | GFLOPs/img |
|---|---|---|---|---|---|---|---|---|---|
| `gmlp_paper` | 64x64 | 64 | patch 8 | 256 | 512 | 4 | token | 1,117,160 | 0.144 |
| `gmlp_keras` | 64x64 | 64 | patch 8 | 256 | 512 | 4 | token | 1,116,648 | 0.142 |
| `cgmlp_1conv` | 64x64 | 64 | conv 64, patch 4 | 256 | 512 | 4 | token | 1,332,008 | 0.187 |
| `cgmlp_2conv` | 64x64 | 64 | conv 32+64, patch 2 | 256 | 512 | 4 | token | 1,153,032 | 0.192 |
| `cgmlp_2conv_mixed` | 64x64 | 64 | conv 32+64, patch 2 | 256 | 512 | 4 | alternate | 1,276,296 | 0.205 |
| `cgmlp_keras_1conv` | 64x64 | 64 | conv 64, patch 4 | 256 | 512 | 4 | token | 1,331,496 | 0.185 |
| `cgmlp_keras_2conv` | 64x64 | 64 | conv 32+64, patch 2 | 256 | 512 | 4 | token | 1,152,520 | 0.190 |
| `gmlp_ti16` | 224x224 | 196 | patch 16 | 128 | 768 | 30 | token | 5,867,328 | 3.607 |
| `gmlp_s16` | 224x224 | 196 | patch 16 | 256 | 1536 | 30 | token | 19,422,656 | 10.681 |
| `gmlp_b16` | 224x224 | 196 | patch 16 | 512 | 3072 | 30 | token | 73,075,392 | 35.235 |
| `gmlp_small` | 32x32 | 64 | patch 4 | 128 | 512 | 4 | token | 551,016 | 0.087 |
| `gmlp_keras_small` | 32x32 | 64 | patch 4 | 128 | 512 | 4 | token | 550,760 | 0.085 |
| `cgmlp_1conv_small` | 32x32 | 64 | conv 64, patch 2 | 128 | 512 | 4 | token | 579,496 | 0.095 |
| `cgmlp_2conv_small` | 32x32 | 64 | conv 32+64, patch 1 | 128 | 512 | 4 | token | 572,552 | 0.099 |
| `cgmlp_2conv_mixed_small` | 32x32 | 64 | conv 32+64, patch 1 | 128 | 512 | 4 | alternate | 695,816 | 0.112 |
| `cgmlp_2conv_bn_small` | 32x32 | 64 | conv 64+128, patch 1, batch norm | 128 | 512 | 4 | token | 637,096 | 0.131 |
| `test_gmlp` | 16x16 | 16 | patch 4 | 16 | 32 | 2 | token | 20,120 | 0.000 |
| `test_cgmlp` | 16x16 | 16 | conv 8, patch 2 | 16 | 32 | 2 | alternate | 20,096 | 0.001 |
| `test_cgmlp_bn` | 16x16 | 16 | conv 8, patch 2, batch norm | 16 | 32 | 2 | alternate | 20,096 | 0.001 |

Parameters are for a 1000-class head (``python -m cgmlp_jax.models.summary`` prints this table for
any ``--num_classes``); GFLOPs are XLA's cost analysis of one forward pass (multiply-add = 2 FLOPs).

* ``gmlp_paper``: the CgMLP paper's gMLP baseline, as in the public Keras CIFAR-100 example it builds
  on: CIFAR resized to 64x64, 8x8 patches -> 64 tokens, dropout 0.2 in the blocks and before the head.
* ``gmlp_keras``: that Keras example exactly (885,348 parameters at 100 classes): the residual is
  added to the normalised input, dropout after the GELU, Glorot-uniform kernels (the gate's too), no
  LayerNorm before pooling (blocks.py, classifier.py). ``gmlp_paper`` is the same size with gMLP's
  own block (the residual on the raw input, the gate starting near identity) and a final LayerNorm.
* ``cgmlp_1conv`` / ``cgmlp_2conv``: the same token budget and blocks behind one conv (64 filters) or
  two convs (32 then 64 filters), each 3x3 + GroupNorm + ReLU + 2x2 max-pool; the pooled map is
  patchified (4x4 resp. 2x2) to the same 8x8 grid of 64 tokens, so only the stem differs.
  ``conv_norm`` chooses the stem's normalisation (stems.py): ``"group"`` (the default),
  ``"layer"``, ``"batch"`` (BatchNorm, whose running statistics the train state carries and
  checkpoints) or ``"none"``; e.g. ``get("cgmlp_2conv_small", num_classes=10, conv_norm="batch")``.
* ``cgmlp_keras_1conv`` / ``cgmlp_keras_2conv``: the paper's CgMLPs as it built them, on the Keras
  example's gMLP: ``gmlp_keras`` (block, init, head) with ``cgmlp_1conv``'s / ``cgmlp_2conv``'s
  conv stem in place of the patch embedding (1,100,196 / 921,220 parameters at 100 classes).
* ``cgmlp_2conv_mixed``: ``cgmlp_2conv`` whose blocks alternate token and channel gating (the
  paper's "combination of both").
* ``gmlp_ti16`` / ``gmlp_s16`` / ``gmlp_b16``: the gMLP paper's ImageNet models (Table 1: 6M, 20M,
  73M parameters; stochastic-depth survival 1.0 / 0.95 / 0.8), laid out as timm's
  ``gmlp_ti16_224`` / ``gmlp_s16_224`` / ``gmlp_b16_224``, whose gating LayerNorm eps (1e-5) they
  take (``gate_norm_eps``; every other variant keeps 1e-6). ``timm_import.from_timm_state_dict``
  loads timm's weights into them.
* ``cgmlp_2conv_bn_small``: the design search's CIFAR-10 winner (configs/search_winner.py;
  docs/search): ``cgmlp_2conv_small``'s blocks behind a stem twice as wide (64 + 128 filters) with
  BatchNorm after each conv, no dropout, stochastic depth 0.1.
* ``*_small``: the paper's three architectures at native 32x32 CIFAR resolution with d_model 128,
  for CPU-scale experiments (``gmlp_keras_small``: the Keras example's block). ``test_*``: tiny
  variants for unit tests (``test_cgmlp_bn``: ``test_cgmlp`` with a BatchNorm stem).
"""
import dataclasses
from typing import Any

from cgmlp_jax.models.blocks import check_style
from cgmlp_jax.models.classifier import GatedMLPClassifier
from cgmlp_jax.models.gating import TIMM_GATE_NORM_EPS

_PAPER = dict(image_size=64, d_model=256, d_ffn=512, depth=4, dropout_rate=0.2,
              head_dropout_rate=0.2)
_KERAS = dict(block_style="keras", final_norm=False)  # the Keras example's block, init and head
# gate_norm_eps: timm's gating LayerNorm eps (1e-5), for timm's weights (timm_import).
_IMAGENET = dict(image_size=224, patch_size=16, depth=30, gate_norm_eps=TIMM_GATE_NORM_EPS)
_SMALL = dict(image_size=32, d_model=128, d_ffn=512, depth=4, dropout_rate=0.1,
              head_dropout_rate=0.1)
_TEST = dict(image_size=16, d_model=16, d_ffn=32, depth=2)

VARIANTS: dict[str, dict[str, Any]] = {
    "gmlp_paper": dict(_PAPER, patch_size=8),
    "gmlp_keras": dict(_PAPER, **_KERAS, patch_size=8),
    "cgmlp_1conv": dict(_PAPER, conv_layers=((64, 3, 2),), patch_size=4),
    "cgmlp_2conv": dict(_PAPER, conv_layers=((32, 3, 2), (64, 3, 2)), patch_size=2),
    "cgmlp_2conv_mixed": dict(_PAPER, conv_layers=((32, 3, 2), (64, 3, 2)), patch_size=2,
                              axes="alternate"),
    "cgmlp_keras_1conv": dict(_PAPER, **_KERAS, conv_layers=((64, 3, 2),), patch_size=4),
    "cgmlp_keras_2conv": dict(_PAPER, **_KERAS, conv_layers=((32, 3, 2), (64, 3, 2)), patch_size=2),
    "gmlp_ti16": dict(_IMAGENET, d_model=128, d_ffn=768),
    "gmlp_s16": dict(_IMAGENET, d_model=256, d_ffn=1536, drop_path_rate=0.05),
    "gmlp_b16": dict(_IMAGENET, d_model=512, d_ffn=3072, drop_path_rate=0.2),
    "gmlp_small": dict(_SMALL, patch_size=4),
    "gmlp_keras_small": dict(_SMALL, patch_size=4, block_style="keras", final_norm=False),
    "cgmlp_1conv_small": dict(_SMALL, conv_layers=((64, 3, 2),), patch_size=2),
    "cgmlp_2conv_small": dict(_SMALL, conv_layers=((32, 3, 2), (64, 3, 2)), patch_size=1),
    "cgmlp_2conv_mixed_small": dict(_SMALL, conv_layers=((32, 3, 2), (64, 3, 2)), patch_size=1,
                                    axes="alternate"),
    "cgmlp_2conv_bn_small": dict(_SMALL, conv_layers=((64, 3, 2), (128, 3, 2)), patch_size=1,
                                 conv_norm="batch", dropout_rate=0.0, head_dropout_rate=0.0,
                                 drop_path_rate=0.1),
    "test_gmlp": dict(_TEST, patch_size=4),
    "test_cgmlp": dict(_TEST, conv_layers=((8, 3, 2),), patch_size=2, axes="alternate"),
    "test_cgmlp_bn": dict(_TEST, conv_layers=((8, 3, 2),), patch_size=2, axes="alternate",
                          conv_norm="batch"),
}
FIELDS = tuple(f.name for f in dataclasses.fields(GatedMLPClassifier)
                if f.name not in ("parent", "name"))


def get(name: str, *, num_classes: int, **overrides) -> GatedMLPClassifier:
  """Builds variant ``name`` with ``overrides`` (any ``GatedMLPClassifier`` field) applied."""
  if name not in VARIANTS:
    raise ValueError(f"Unknown model variant {name!r}; valid variants: {sorted(VARIANTS)}.")
  unknown = sorted(set(overrides) - set(FIELDS))
  if unknown:
    raise ValueError(f"Unknown model override(s) {unknown}; valid fields: {FIELDS}.")
  model = GatedMLPClassifier(num_classes=num_classes, **{**VARIANTS[name], **overrides})
  model.num_tokens, model.block_axes  # validate sizes and axes now, before any compute
  check_style(model.block_style)
  return model
