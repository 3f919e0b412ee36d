"""Orbax checkpoints: the latest few (for resume) and the best by validation metric (for test).

``workdir/checkpoints/<step>``  : saved every ``checkpoint_every_steps``, at epoch ends and at the
                                  end; the last ``keep`` are kept. Resume reads the newest.
``workdir/best/<step>``         : the state with the best validation metric so far (one kept).

Each checkpoint holds two items: ``state`` (the TrainState pytree, sharded arrays, written by every
process) and ``progress`` (a small JSON dict: epoch history and early-stopping bookkeeping). The
state is written as a dict of its fields, less ``batch_stats`` when it is empty (every model without
a BatchNorm stem), so such checkpoints keep the tree they had before the field existed: old ones
restore, and ``state/batch_stats`` exists exactly for models with BatchNorm.
Saves are asynchronous; ``wait()`` before reading them back or exiting.

Failures never cost work: orbax writes a step to a temporary directory and renames it when complete,
so a failed save (disk full, permissions) leaves the earlier checkpoints as they were, and a
checkpoint that does not fit the model or cannot be read raises ``CheckpointError`` naming its
path and the mismatch; nothing is deleted.
"""
import dataclasses
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from cgmlp_jax.errors import UserError
from cgmlp_jax.train.state import TrainState

ITEMS = ("state", "progress")


class CheckpointError(UserError, RuntimeError):
  """A checkpoint could not be written, read, or does not fit the model being trained."""


def _flat_shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): (tuple(x.shape), str(x.dtype))
          for path, x in leaves}


def params_mismatch(stored: Any, wanted: Any, limit: int = 10) -> list[str]:
  """How stored parameter metadata differs from the model's (names, shapes, dtypes)."""
  stored, wanted = _flat_shapes(stored), _flat_shapes(wanted)
  lines = [f"{name}: in the checkpoint, not in the model" for name in sorted(set(stored) - set(wanted))]
  lines += [f"{name}: in the model, not in the checkpoint" for name in sorted(set(wanted) - set(stored))]
  lines += [f"{name}: checkpoint {stored[name][0]} {stored[name][1]}, model {wanted[name][0]} "
            f"{wanted[name][1]}" for name in sorted(set(stored) & set(wanted))
            if stored[name] != wanted[name]]
  return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def _stored(state: Any) -> Any:
  """The tree written for ``state`` (a TrainState, or its abstract twin): a dict of its fields,
  without ``batch_stats`` if that holds nothing. Other trees are written as they are."""
  if not isinstance(state, TrainState):
    return state
  tree = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
  if not jax.tree.leaves(tree["batch_stats"]):
    del tree["batch_stats"]
  return tree


def _manager(directory: epath.Path, keep: int) -> ocp.CheckpointManager:
  """An asynchronous manager whose multi-host barriers are named after its directory.

  Each manager's background save announces its start and end through barriers whose names carry
  no step (orbax's ``MultihostSynchronizedValue``). Two managers with the same names, saving at
  the same time (the latest and the best checkpoint at the end of an epoch), join one barrier from
  two threads and fail with "Barrier ... is already ongoing"; the prefix keeps them apart.
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=True,
      # A step directory that cannot be created (no permission) fails the save at once; created
      # in the background, it left the save's other threads waiting 300 s for it at exit.
      async_options=ocp.AsyncOptions(create_directories_asynchronously=False),
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          barrier_sync_key_prefix=directory.name))
  return ocp.CheckpointManager(directory, options=options, item_names=ITEMS)


class _QuietFailedSaves(logging.Filter):
  """Drops orbax's error records that carry a traceback (dozens of lines per failed save): the
  failure comes back as an exception, which ``Checkpoints`` turns into one ``CheckpointError``."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and record.exc_info
                and f"{os.sep}orbax{os.sep}" in record.pathname)


def _quiet_failed_saves() -> None:
  logger = logging.getLogger("absl")  # orbax logs through absl's logger
  if not any(isinstance(f, _QuietFailedSaves) for f in logger.filters):
    logger.addFilter(_QuietFailedSaves())


class Checkpoints:
  """A failed asynchronous save is reported, naming its own step, when the next save or ``wait``
  looks at it, before another save starts: a save started after a failed one left threads waiting
  300 s for a step directory that never came, and the error named the later step."""

  def __init__(self, workdir: str | epath.PathLike, keep: int):
    workdir = epath.Path(workdir)
    self.latest = _manager(workdir / "checkpoints", keep)
    self.best = _manager(workdir / "best", 1)
    self._in_flight: dict[str, int] = {}  # manager directory -> step of its unfinished save
    self._failed = False
    _quiet_failed_saves()

  def _failed_save(self, manager: ocp.CheckpointManager, step: int | None, error: Exception):
    self._failed = True
    kept = [s for s in manager.all_steps() if s != step]
    return CheckpointError(
        f"Saving checkpoint {'step ' + str(step) + ' ' if step is not None else ''}to "
        f"{manager.directory} failed ({type(error).__name__}: {error}). The earlier checkpoints "
        f"{kept} are intact; free disk space or fix the workdir, then run again to resume from "
        f"step {max(kept) if kept else 0}.")

  def _finish(self, manager: ocp.CheckpointManager) -> None:
    """Waits for ``manager``'s save in flight; ``CheckpointError`` naming its step if it failed."""
    try:
      manager.wait_until_finished()
    except Exception as e:
      raise self._failed_save(manager, self._in_flight.get(str(manager.directory)), e) from e
    self._in_flight.pop(str(manager.directory), None)

  def _save(self, manager: ocp.CheckpointManager, step: int, state: Any, progress: dict) -> None:
    self._finish(manager)  # before starting another: a failed save stops the run here
    if step in manager.all_steps():
      return
    try:
      manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(_stored(state)),
                                                 progress=ocp.args.JsonSave(progress)))
    except Exception as e:
      raise self._failed_save(manager, step, e) from e
    self._in_flight[str(manager.directory)] = step

  def save(self, step: int, state: Any, progress: dict) -> None:
    self._save(self.latest, step, state, progress)

  def save_best(self, step: int, state: Any, progress: dict) -> None:
    self._save(self.best, step, state, progress)

  @staticmethod
  def _restore(manager: ocp.CheckpointManager, abstract_state: Any) -> tuple[Any, dict] | None:
    step = manager.latest_step()
    if step is None:
      return None
    path = manager.directory / str(step)
    advice = (f"Nothing was changed in {manager.directory.parent}. Use the config that wrote it, "
              f"a new --workdir, or --config.on_bad_checkpoint=fresh to train from scratch in "
              f"{manager.directory.parent / 'fresh'}.")
    try:
      stored = ocp.StandardCheckpointHandler().metadata(path / "state").tree
    except Exception as e:
      raise CheckpointError(f"Checkpoint {path} cannot be read, it may be truncated or corrupt "
                            f"({type(e).__name__}: {e}). {advice}") from e
    mismatch = params_mismatch(stored.get("params", {}), abstract_state.params)
    mismatch += [f"batch_stats/{line}" for line in params_mismatch(  # BatchNorm statistics
        stored.get("batch_stats", {}), getattr(abstract_state, "batch_stats", {}))]
    if mismatch:
      raise CheckpointError(f"Checkpoint {path} does not fit the model of this config:\n  "
                            + "\n  ".join(mismatch) + f"\n{advice}")
    try:
      restored = manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(_stored(abstract_state)),
          progress=ocp.args.JsonRestore()))
    except Exception as e:
      raise CheckpointError(f"Checkpoint {path} could not be restored, it may be truncated, "
                            f"corrupt or from another optimiser ({type(e).__name__}: {e}). "
                            f"{advice}") from e
    state = restored.state
    if isinstance(abstract_state, TrainState):  # fields not stored keep their (empty) value
      state = abstract_state.replace(**state)
    return state, restored.progress

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    """The newest checkpoint as ``(state, progress)``, or None for a fresh workdir.

    ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` with shardings: arrays come back
    laid out for the current mesh, whatever the device count that wrote them.
    """
    return self._restore(self.latest, abstract_state)

  def restore_best(self, abstract_state: Any) -> tuple[Any, dict] | None:
    return self._restore(self.best, abstract_state)

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def wait(self) -> None:
    for manager in (self.latest, self.best):
      self._finish(manager)

  def close(self) -> None:
    """Finishes pending saves; a failure already reported is not raised again."""
    for manager in (self.latest, self.best):
      try:
        manager.close()
      except Exception:
        if not self._failed:
          raise
