"""A training workdir's best weights -> a small params-only file to publish (models.pretrained).

    python -m cgmlp_jax.tools.export_weights runs/c100_fast/cgmlp_2conv --name cgmlp_2conv_small.cifar100 \
        [--out weights] [--records docs/log/c100_fast/cgmlp_2conv] [--command "python launch.py ..."]

writes ``OUT/NAME.msgpack`` (the model's variables in float32: no optimiser state, a few MB) and
``OUT/NAME.json``: the model and its overrides, class count, input size and normalisation, the
dataset, the checkpoint's epoch with its validation top-1 / top-5, the seed, the weights it was
fine-tuned from (``init``), the command and run records it came from, the parameter count, the
file's size and sha256.

A published file is never replaced by mistake: an existing NAME is refused unless ``--force``, and
so is (always) a NAME whose model part, before its first ``.``, is not the exported model: the
variant its config names, or a variant of the same architecture (``cgmlp_2conv_bn_small.cifar10``
for ``cgmlp_2conv_small`` with the overrides that make it the BatchNorm variant).
"""
import os

import jax
import numpy as np
from absl import flags

from cgmlp_jax import cli, models
from cgmlp_jax.errors import WeightsError
from cgmlp_jax.models import pretrained
from cgmlp_jax.train import init_from, restore

_NOT_ARCHITECTURE = ("num_classes", "dtype")  # fields a run sets, not the variant


def _architecture(model: models.GatedMLPClassifier) -> dict:
  return {f: pretrained.tuples(getattr(model, f)) for f in models.FIELDS
          if f not in _NOT_ARCHITECTURE}


def check_name(name: str, model: models.GatedMLPClassifier, config: dict) -> None:
  """``WeightsError`` unless ``name``'s model part names the exported model (module docstring)."""
  part = name.split(".", 1)[0]
  if part == config["model"]:
    return
  if part in models.VARIANTS and _architecture(models.get(part, num_classes=model.num_classes)) \
      == _architecture(model):
    return
  overrides = f" with model_kw {config['model_kw']}" if config.get("model_kw") else ""
  raise WeightsError(f"--name {name!r} names the model {part!r}, but {config['model']!r}"
                     f"{overrides} is exported; name it {config['model']}.DATASET (e.g. "
                     f"{config['model']}.{config['dataset']}).")


def check_free(out: str, name: str, force: bool) -> None:
  """``WeightsError`` if ``out/name`` is published already, unless ``force``."""
  existing = [f"{out}/{name}{suffix}" for suffix in (pretrained.SUFFIX, ".json")
              if os.path.exists(f"{out}/{name}{suffix}")]
  if existing and not force:
    raise WeightsError(f"{existing[0]} exists; choose another --name, or pass --force to replace "
                       f"it.")


def export(workdir: str, name: str, out: str = "weights", records: str = "",
           command: str = "", force: bool = False) -> dict:
  """Writes the files and returns the recorded info; refuses a taken or mismatched ``name``."""
  check_free(out, name, force)
  step_dir = restore.find_checkpoint(workdir)
  model, variables, config = restore.load_model(workdir)
  check_name(name, model, config)
  step = int(step_dir.name)
  epoch = next((r for r in restore.read_progress(step_dir)["history"] if r["step"] == step), {})
  origin = init_from.origin(workdir)  # the model's input normalisation, as training resolved it
  info = {
      "name": name, "model": config["model"], "model_kw": config.get("model_kw", {}),
      "num_classes": model.num_classes, "image_size": model.image_size,
      "parameters": int(sum(np.size(a) for a in jax.tree.leaves(variables["params"]))),
      "dataset": config["dataset"], "mean": list(origin.mean), "std": list(origin.std),
      "epoch": epoch.get("epoch"), "step": step,
      "val_top1": epoch.get("val_top1"), "val_top5": epoch.get("val_top5"),
      "seed": config.get("seed"), "init": config.get("init", ""), "command": command,
      "records": records,
  }
  return pretrained.save(f"{out}/{name}{pretrained.SUFFIX}", variables, info)


@cli.one_line_errors
def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_string("name", None, "NAME of the published pair, MODEL.DATASET, e.g. "
                      "cgmlp_2conv_small.cifar100 (required).", required=True, flag_values=values)
  flags.DEFINE_string("out", "weights", "Directory of the published weights.", flag_values=values)
  flags.DEFINE_string("records", "", "Where the run's records are committed (recorded).",
                      flag_values=values)
  flags.DEFINE_string("command", "", "The command that trained it (recorded).", flag_values=values)
  flags.DEFINE_boolean("force", False, "Replace existing weights of NAME.", flag_values=values)


def main(argv: list[str] | None = None) -> None:
  args, workdirs = cli.parse_flags(argv, define_flags, "python -m cgmlp_jax.tools.export_weights",
                                   __doc__, ("WORKDIR", "the training workdir to export"))
  if len(workdirs) != 1:
    cli.fail(f"export_weights exports one WORKDIR at a time; got {len(workdirs)}.")
  try:
    info = export(workdirs[0], args.name, args.out, args.records, args.command, args.force)
  except FileNotFoundError as e:  # no such workdir, or no checkpoint in it
    cli.fail(str(e))
  print(f"{args.out}/{info['file']}: {info['bytes'] / 2**20:.1f} MiB, {info['parameters']:,} "
        f"parameters, val top-1 {info['val_top1']}, sha256 {info['sha256']}")


if __name__ == "__main__":
  cli.one_line_errors(main)()
