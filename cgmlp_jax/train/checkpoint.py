"""Orbax checkpoints: the latest few (for resume) and the best by validation metric (for test).

``workdir/checkpoints/<step>``  : saved every ``checkpoint_every_steps``, at epoch ends and at the
                                  end; the last ``keep`` are kept. Resume reads the newest.
``workdir/best/<step>``         : the state with the best validation metric so far (one kept).

Each checkpoint holds two items: ``state`` (the TrainState pytree, sharded arrays, written by every
process) and ``progress`` (a small JSON dict: epoch history and early-stopping bookkeeping).
Saves are asynchronous; ``wait()`` before reading them back or exiting.
"""
from typing import Any

import orbax.checkpoint as ocp
from etils import epath

ITEMS = ("state", "progress")


def _manager(directory: epath.Path, keep: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True)
  return ocp.CheckpointManager(directory, options=options, item_names=ITEMS)


class Checkpoints:
  def __init__(self, workdir: str | epath.PathLike, keep: int):
    workdir = epath.Path(workdir)
    self.latest = _manager(workdir / "checkpoints", keep)
    self.best = _manager(workdir / "best", 1)

  @staticmethod
  def _save(manager: ocp.CheckpointManager, step: int, state: Any, progress: dict) -> None:
    if step in manager.all_steps():
      return
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                               progress=ocp.args.JsonSave(progress)))

  def save(self, step: int, state: Any, progress: dict) -> None:
    self._save(self.latest, step, state, progress)

  def save_best(self, step: int, state: Any, progress: dict) -> None:
    self._save(self.best, step, state, progress)

  @staticmethod
  def _restore(manager: ocp.CheckpointManager, abstract_state: Any) -> tuple[Any, dict] | None:
    step = manager.latest_step()
    if step is None:
      return None
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), progress=ocp.args.JsonRestore()))
    return restored.state, restored.progress

  def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
    """The newest checkpoint as ``(state, progress)``, or None for a fresh workdir.

    ``abstract_state`` is a pytree of ``jax.ShapeDtypeStruct`` with shardings: arrays come back
    laid out for the current mesh, whatever the device count that wrote them.
    """
    return self._restore(self.latest, abstract_state)

  def restore_best(self, abstract_state: Any) -> tuple[Any, dict] | None:
    return self._restore(self.best, abstract_state)

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()
