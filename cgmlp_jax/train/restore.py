"""A training workdir's checkpoints read back for analysis: parameters, their shapes, progress.

Reports and visualisations run after training, often on another machine (a laptop, a CPU box)
with a different device count, so arrays come back as host numpy arrays rather than with the
sharding they were saved with, and only the part needed is read (the model's variables: its
parameters and a BatchNorm stem's running statistics, not the optimiser state). The model is
rebuilt from the run's ``config.json``, with the class count taken from the checkpointed head, so
no dataset has to be loaded.

Layout (written by ``cgmlp_jax.train.checkpoint``)::

    WORKDIR/config.json
    WORKDIR/best/<step>/{state,progress}         the best validation checkpoint (preferred)
    WORKDIR/checkpoints/<step>/{state,progress}  the latest few
"""
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from cgmlp_jax import models

CHECKPOINT_DIRS = ("best", "checkpoints")  # in order of preference


def _path(path: str | epath.PathLike) -> epath.Path:
  """Orbax needs absolute paths; remote ones (gs://...) already are."""
  path = str(path)
  return epath.Path(path if "://" in path else os.path.abspath(path))


def _existing(workdir: str | epath.PathLike) -> epath.Path:
  workdir = _path(workdir)
  if not workdir.is_dir():
    raise FileNotFoundError(f"Workdir {workdir} does not exist.")
  return workdir


def checkpoint_steps(directory: str | epath.PathLike) -> list[int]:
  """Steps of the complete checkpoints under ``directory`` (in-progress saves have a suffix)."""
  directory = _path(directory)
  if not directory.is_dir():
    return []
  return sorted(int(p.name) for p in directory.iterdir()
                if p.name.isdigit() and (p / "state").is_dir())


def find_checkpoint(workdir: str | epath.PathLike) -> epath.Path:
  """The step directory of the newest ``best/`` checkpoint, else of the newest ``checkpoints/``."""
  workdir = _existing(workdir)
  for sub in CHECKPOINT_DIRS:
    steps = checkpoint_steps(workdir / sub)
    if steps:
      return workdir / sub / str(steps[-1])
  raise FileNotFoundError(f"No checkpoint in {workdir}: expected {workdir / 'best'}/<step>/state "
                          f"or {workdir / 'checkpoints'}/<step>/state (written by training).")


def _variable_shapes(step_dir: str | epath.PathLike) -> dict[str, Any]:
  """The saved model variables (``params``, and ``batch_stats`` where there are some) as trees of
  ``jax.ShapeDtypeStruct``, read from metadata only."""
  path = _path(step_dir) / "state"
  if not path.is_dir():
    raise FileNotFoundError(f"No checkpoint state at {path}.")
  tree = ocp.PyTreeCheckpointHandler().metadata(path).tree
  if "params" not in tree:
    raise ValueError(f"The checkpoint at {path} has no 'params' (it holds {sorted(tree)}).")
  return {name: jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree[name])
          for name in ("params", "batch_stats") if jax.tree.leaves(tree.get(name, {}))}


def param_shapes(step_dir: str | epath.PathLike) -> dict[str, Any]:
  """The saved parameters as a tree of ``jax.ShapeDtypeStruct``, read from metadata only."""
  return _variable_shapes(step_dir)["params"]


def load_params(step_dir: str | epath.PathLike) -> dict[str, Any]:
  """The saved parameters as numpy arrays (the rest of the train state is not read)."""
  return _read(step_dir, {"params": param_shapes(step_dir)})["params"]


def load_variables(step_dir: str | epath.PathLike) -> dict[str, Any]:
  """The saved model variables as numpy arrays, what ``model.apply`` takes: ``{"params": ...}``,
  with ``"batch_stats"`` (a BatchNorm stem's running statistics) where the model has them."""
  return _read(step_dir, _variable_shapes(step_dir))


def _read(step_dir: str | epath.PathLike, item: dict[str, Any]) -> dict[str, Any]:
  """The parts ``item`` (a subtree of ShapeDtypeStructs) of a checkpoint's state, as numpy."""
  restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
  handler = ocp.PyTreeCheckpointHandler()
  try:
    restored = handler.restore(_path(step_dir) / "state", args=ocp.args.PyTreeRestore(
        item=item, restore_args=restore_args, partial_restore=True))
  finally:
    handler.close()
  return restored


def read_progress(step_dir: str | epath.PathLike) -> dict[str, Any]:
  """The checkpoint's JSON progress item: epoch history (with wall times), early stopping."""
  return ocp.JsonCheckpointHandler().restore(_path(step_dir) / "progress")


def load_config(workdir: str | epath.PathLike) -> dict[str, Any]:
  path = _existing(workdir) / "config.json"
  if not path.exists():
    raise FileNotFoundError(f"No config.json in {workdir} (training writes {path} at its start).")
  return json.loads(path.read_text())


def build_model(config: dict[str, Any], num_classes: int) -> models.GatedMLPClassifier:
  """The run's model from its config, in float32 whatever the training compute dtype was."""
  return models.pretrained.build(config, num_classes)


def load_model(workdir: str | epath.PathLike
               ) -> tuple[models.GatedMLPClassifier, dict[str, Any], dict[str, Any]]:
  """``(model, variables, config)`` of a workdir's preferred checkpoint (``find_checkpoint``).

  ``variables``: ``{"params": ...}``, and for a model with a BatchNorm stem its running statistics
  under ``"batch_stats"`` (``model.apply(variables, images)`` evaluates; the figures take them).
  """
  step_dir = find_checkpoint(workdir)
  config = load_config(workdir)
  variables = load_variables(step_dir)
  num_classes = variables["params"]["head"]["kernel"].shape[-1]  # Dense kernel: (d_model, K)
  return build_model(config, num_classes), variables, config
