"""``config.init``: the weights a fresh run starts from instead of a random init (fine-tuning).

    init=""                                   a random init (the default)
    init=runs/c100_fast/cgmlp_2conv           a workdir of this codebase: its best checkpoint
    init=cgmlp_2conv_small.cifar100           published weights (models.pretrained.available())
    init=path/to/NAME.msgpack                 a file in that format (models.pretrained.save)
    init=path/to/gmlp_s16_224.safetensors     a timm gMLP state dict (.safetensors or .npz)
    init=hf-hub:timm/gmlp_s16_224.ra3_in1k    the same, fetched from the Hugging Face Hub

Every array must fit the run's model (a clear error lists those that do not), except the head:
one of another class count (ImageNet's 1000 into CIFAR-100's 100) starts again from zeros, said in
one line. A run whose workdir already has a checkpoint resumes from it and ignores ``init``.
"""
import os
import re
from typing import Any, Callable, NamedTuple

from cgmlp_jax import data, models
from cgmlp_jax.train import restore
from cgmlp_jax.data.normalization import IMAGENET
from cgmlp_jax.errors import WeightsError
from cgmlp_jax.models import pretrained, timm_import

HF_PREFIX = "hf-hub:"
TIMM_SUFFIXES = (".safetensors", ".npz")


class Source(NamedTuple):
  """What ``init`` names, read: ``weights`` are model variables (``kind`` "workdir" or
  "published") or a timm state dict (``kind`` "timm")."""
  kind: str
  weights: dict[str, Any]


class Origin(NamedTuple):
  """The model a source was trained as and the input normalisation it expects."""
  model: str
  model_kw: dict[str, Any]
  mean: tuple[float, ...]
  std: tuple[float, ...]


def _kind(init: str) -> str:
  if init.startswith(HF_PREFIX) or init.endswith(TIMM_SUFFIXES):
    return "timm"
  if os.path.isdir(init):
    return "workdir"
  if init.endswith(pretrained.SUFFIX) or init in pretrained.available():
    return "published"
  raise WeightsError(
      f"init={init!r} is neither a workdir, a weights file (.msgpack, .safetensors, .npz), "
      f"published weights ({', '.join(pretrained.available()) or 'none in ' + str(pretrained.weights_dir())}) "
      f"nor {HF_PREFIX}ORG/NAME (e.g. {HF_PREFIX}timm/gmlp_s16_224.ra3_in1k).")


def read(init: str) -> Source:
  """Reads (for ``hf-hub:``, first downloads) the weights ``init`` names; fails in seconds."""
  kind = _kind(init)
  if kind == "timm":
    path = timm_import.download(init[len(HF_PREFIX):]) if init.startswith(HF_PREFIX) else init
    return Source(kind, timm_import.load_state_dict(path))
  if kind == "workdir":
    try:
      return Source(kind, restore.load_variables(restore.find_checkpoint(init)))
    except FileNotFoundError as e:
      raise WeightsError(f"init={init!r}: {e}") from None
  return Source(kind, pretrained.load(init).variables)


def origin(init: str) -> Origin:
  """The model and normalisation of ``init``'s weights, without reading them (for configs)."""
  kind = _kind(init)
  if kind == "timm":  # timm's gMLPs: gmlp_ti16_224, gmlp_s16_224, gmlp_b16_224
    size = re.search(r"gmlp_(ti|s|b)16", os.path.basename(init))
    mean, std = IMAGENET
    return Origin(f"gmlp_{size.group(1) if size else 's'}16", {}, mean, std)
  if kind == "workdir":
    try:
      config = restore.load_config(init)
    except FileNotFoundError as e:
      raise WeightsError(f"init={init!r}: {e}") from None
    augment = config.get("augment", {})
    mean, std = ((augment["mean"], augment["std"]) if augment.get("mean")
                 else data.dataset_stats(config["dataset"]))
  else:
    config = pretrained.read_info(init)
    mean, std = config["mean"], config["std"]
  model_kw = {k: pretrained.tuples(v) for k, v in config.get("model_kw", {}).items()}
  return Origin(config["model"], model_kw, tuple(mean), tuple(std))


def fit(source: Source, model: models.GatedMLPClassifier,
        report: Callable[[str], None] = print) -> dict[str, Any]:
  """The model's variables from ``source`` (numpy), checked array by array."""
  if source.kind == "timm":
    return {"params": timm_import.from_timm_state_dict(source.weights, model, report=report)}
  return pretrained.fit(source.weights, model, report=report)
