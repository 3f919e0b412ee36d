"""The ``python -m cgmlp_jax.tools.visualize`` command line: loads a model and images, draws figures.

The model is a training workdir's best (else latest) checkpoint, rebuilt from its config.json and
shown inputs normalised with the run's mean and std, or a registry variant with fresh weights.
Images are dataset examples (``--indices``; with ``--workdir`` the run's dataset by default) or
files. Without ``--what`` every figure that applies to the model and inputs is drawn and the others
are skipped with a note; a figure asked for by name that cannot be drawn is an error.
"""
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import tensorflow_datasets as tfds
from absl import flags

from cgmlp_jax import data
from cgmlp_jax import cli, models
from cgmlp_jax.tools import visualize
from cgmlp_jax.tools.visualize import images as images_lib
from cgmlp_jax.train import restore


class _ListOf(flags.ListParser):
  """A comma-separated list (empty items dropped) whose items ``convert`` checks and converts
  (ValueError: bad items)."""

  def __init__(self, convert: Callable[[list[str]], list]):
    super().__init__()
    self.convert = convert

  def parse(self, argument):
    return self.convert([item for item in super().parse(argument) if item != ""])


def _ints(items: list[str]) -> list[int]:
  try:
    return [int(t) for t in items]
  except ValueError:
    raise ValueError("expected comma-separated integers") from None


def _kinds(items: list[str]) -> list[str]:
  unknown = sorted(set(items) - set(visualize.KINDS))
  if unknown:
    raise ValueError(f"unknown figure(s) {unknown}; choose from {visualize.KINDS}")
  return items


def define_flags(values: flags.FlagValues) -> None:
  def define_list(name: str, convert: Callable[[list[str]], list], description: str):
    flags.DEFINE(_ListOf(convert), name, None, description, flag_values=values,
                 serializer=flags.CsvListSerializer(","))

  flags.DEFINE_string("workdir", None, "Training workdir: its best, else latest, checkpoint (this "
                      "or --model).", flag_values=values)
  flags.DEFINE_string("model", None, "Registry variant with fresh weights (this or --workdir): "
                      + ", ".join(models.VARIANTS) + ".", flag_values=values)
  flags.mark_flags_as_mutual_exclusive(["workdir", "model"], required=True, flag_values=values)
  flags.DEFINE_integer("num_classes", None, "With --model; default: the dataset's.",
                       flag_values=values)
  flags.DEFINE_integer("seed", 0, "Initialisation seed with --model.", flag_values=values)
  flags.DEFINE_list("images", None, "Square RGB image files (PNG, JPEG), comma-separated (this or "
                    "--indices).", flag_values=values)
  define_list("indices", _ints, "Example indices of --dataset, e.g. 0,1,2 (this or --images).")
  flags.mark_flags_as_mutual_exclusive(["images", "indices"], flag_values=values)
  flags.DEFINE_string("dataset", None, "TFDS dataset of --indices (default: the run's).",
                      flag_values=values)
  flags.DEFINE_string("split", "test", "TFDS split of --indices.", flag_values=values)
  flags.DEFINE_string("data_dir", None, "TFDS data directory (default: the run's, else TFDS's).",
                      flag_values=values)
  define_list("what", _kinds, f"Comma-separated subset of {', '.join(visualize.KINDS)} (default: "
              "all that apply).")
  define_list("layers", _ints, "Conv-stem layers for feature_maps (default: all).")
  define_list("blocks", _ints, "Blocks for the gating figures (default: all).")
  define_list("positions", _ints, "Output tokens (flat indices) for token_gating.")
  flags.DEFINE_integer("max_channels", 32, "Feature-map channels drawn.", flag_values=values)
  flags.DEFINE_string("out", None, "Directory for the PNGs (required).", required=True,
                      flag_values=values)


def _class_names(dataset: str, data_dir: str | None) -> tuple[str, ...] | None:
  """Class names from the dataset's metadata (no data read); None if it is unknown here."""
  try:
    return tuple(tfds.builder(dataset, data_dir=data_dir).info.features["label"].names)
  except (tfds.core.DatasetNotFoundError, KeyError, AttributeError):
    return None


def _inputs(args: flags.FlagValues, config: dict[str, Any]):
  """``(images or None, labels or None, class names or None)``."""
  dataset = args.dataset or config.get("dataset")
  data_dir = args.data_dir or config.get("data_dir")
  if args.indices is not None:
    if not dataset:
      raise ValueError("--indices needs --dataset (or a --workdir whose config names one).")
    return images_lib.from_dataset(dataset, args.split, args.indices, data_dir=data_dir)
  if args.images:
    return (images_lib.read_files(args.images), None,
            _class_names(dataset, data_dir) if dataset else None)
  return None, None, None


def _model(args: flags.FlagValues, class_names):
  """``(model, variables)``: a checkpoint's, or a variant's fresh ones."""
  if args.workdir:
    model, variables, _ = restore.load_model(args.workdir)
    return model, variables
  num_classes = args.num_classes or (len(class_names) if class_names else None)
  if not num_classes:
    raise ValueError("--model needs --num_classes (or --indices of a dataset, which gives it).")
  model = models.get(args.model, num_classes=num_classes)
  return model, fresh_variables(model, args.seed)


@functools.partial(jax.jit, static_argnames="model")
def _init(model: models.GatedMLPClassifier, key: jax.Array) -> dict[str, Any]:
  dummy = jnp.zeros((1, model.image_size, model.image_size, 3), jnp.float32)
  return model.init(key, dummy)


def fresh_variables(model: models.GatedMLPClassifier, seed: int = 0) -> dict[str, Any]:
  """Newly initialised variables: parameters, and for a BatchNorm stem its initial statistics
  (mean 0, variance 1). The key is an "rbg" one: the same initialisers, another random stream,
  and on CPU the init compiles several times faster than with the default threefry."""
  return _init(model, jax.random.key(seed, impl="rbg"))


def fresh_params(model: models.GatedMLPClassifier, seed: int = 0) -> dict[str, Any]:
  """Newly initialised parameters (``fresh_variables``' ``"params"``)."""
  return fresh_variables(model, seed)["params"]


def run(args: flags.FlagValues) -> list[str]:
  """Draws the figures ``args`` ask for; returns the PNG paths."""
  config = restore.load_config(args.workdir) if args.workdir else {}
  images, labels, class_names = _inputs(args, config)
  model, variables = _model(args, class_names)
  params = variables["params"]
  augment = config.get("augment", {})
  mean, std = data.dataset_stats(config.get("dataset", "cifar10"))
  norm = dict(mean=augment.get("mean") or mean, std=augment.get("std") or std)
  gating = {axis: visualize.gating_blocks(params, axis) for axis in ("token", "channel")}
  if args.blocks is not None:
    unknown = sorted(set(args.blocks) - set(gating["token"] + gating["channel"]))
    if unknown:
      raise ValueError(f"Unknown block(s) {unknown}; token-gating blocks: {gating['token']}, "
                       f"channel-gating blocks: {gating['channel']}.")
    gating = {axis: [b for b in blocks if b in args.blocks] for axis, blocks in gating.items()}

  skip = {kind: "no images (give --indices or --images)" for kind in ("feature_maps", "saliency")
          if images is None}
  if not model.conv_layers:
    skip.setdefault("feature_maps", "the model has no conv stem")
  for axis in ("token", "channel"):
    if not gating[axis]:
      skip[f"{axis}_gating"] = f"no {axis}-gating blocks" + (" selected" if args.blocks else "")

  paths = []
  for kind in args.what or visualize.KINDS:
    if kind in skip and not args.what:
      print(f"Skipping {kind}: {skip[kind]}.")
      continue
    if kind in ("feature_maps", "saliency") and images is None:
      raise ValueError(f"{kind} needs images: give --indices (of --dataset) or --images.")
    shown = dict(labels=labels, class_names=class_names, **norm)
    if kind == "feature_maps":
      paths += visualize.feature_maps(model, variables, images, args.out, layers=args.layers,
                                      max_channels=args.max_channels, **shown)
    elif kind == "saliency":
      paths += visualize.saliency(model, variables, images, args.out, **shown)
    else:
      axis = kind.split("_")[0]
      blocks = gating[axis] or args.blocks  # none selected: the API says which are valid
      extra = dict(positions=args.positions) if axis == "token" else {}
      paths += getattr(visualize, kind)(params, args.out, blocks=blocks, **extra)
  return paths


def main(argv: list[str] | None = None) -> None:
  args, _ = cli.parse_flags(argv, define_flags, "python -m cgmlp_jax.tools.visualize",
                            visualize.__doc__)
  try:
    paths = run(args)
  except (ValueError, FileNotFoundError) as e:
    cli.fail(" ".join(str(e).split()))
  print("\n".join(paths))


if __name__ == "__main__":
  main()
