"""gMLP and CgMLP in Flax linen. Pure modules: nothing here knows about data or training.

    from cgmlp_jax import models
    model = models.get("cgmlp_2conv", num_classes=100)
    variables = model.init(jax.random.key(0), images)          # images: (B, 64, 64, 3)
    logits = model.apply(variables, images, train=True, rngs={"dropout": key})

A model with a BatchNorm conv stem (``conv_norm="batch"``) also has ``variables["batch_stats"]``:
train with ``mutable=["batch_stats"]`` and keep the updated statistics (see ``classifier``).

See ``registry`` for the named variants and their sizes; ``timm_import`` loads timm's gMLP weights
(``from_timm_state_dict``) into the ImageNet variants; ``pretrained`` loads this codebase's published
CIFAR weights (``pretrained.load("cgmlp_2conv_small.cifar100")`` -> model, variables, info).
"""
from cgmlp_jax.models import norms, pretrained, stems, timm_import
from cgmlp_jax.models.blocks import DropPath, GMLPBlock
from cgmlp_jax.models.classifier import GatedMLPClassifier, as_variables, params_of, resolve_axes
from cgmlp_jax.models.gating import SpatialGatingUnit
from cgmlp_jax.models.registry import FIELDS, VARIANTS, get
from cgmlp_jax.models.stems import ConvStem, PatchStem, token_grid
from cgmlp_jax.models.timm_import import from_timm_state_dict, load_state_dict

__all__ = ["FIELDS", "ConvStem", "DropPath", "GMLPBlock", "GatedMLPClassifier", "PatchStem",
           "SpatialGatingUnit", "VARIANTS", "as_variables", "from_timm_state_dict", "get",
           "load_state_dict", "params_of", "resolve_axes", "token_grid"]
