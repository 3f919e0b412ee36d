"""The run directory: created and probed before any expensive work, its config history kept.

``workdir/config.json`` is the config of the latest start. When a start's config differs from the
recorded one, the start is refused before any data is read (``on_config_change="error"``), or the
differences are printed and the older file is kept as ``config.previous-N.json`` (``"warn"``), so a
resumed run never silently changes its recipe. The config is recorded only once the checkpoints
have been opened, so a start that fails on them leaves the workdir as it was.
"""
import json
import os

import jax
import ml_collections
from etils import epath

from cgmlp_jax.train import restore
from cgmlp_jax.errors import UserError


class WorkdirError(UserError, RuntimeError):
  """The workdir cannot be used (not creatable, not writable, or a refused config change)."""


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      flat.update(_flatten(value, f"{prefix}{key}."))
    else:
      flat[prefix + key] = value
  return flat


def config_diff(old: dict, new: dict) -> list[str]:
  """``["key: old -> new", ...]`` for every field that differs (dotted keys for nested fields)."""
  old, new = _flatten(old), _flatten(new)
  missing = object()
  return [f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}"
          for key in sorted(set(old) | set(new)) if old.get(key, missing) != new.get(key, missing)]


def prepare(workdir: str | os.PathLike) -> epath.Path:
  """The run's workdir as an absolute path (orbax needs one; remote ones such as gs://... are),
  created and probed."""
  workdir = epath.Path(workdir if "://" in str(workdir) else os.path.abspath(workdir))
  probe_writable(workdir)
  return workdir


def probe_writable(workdir: epath.Path) -> None:
  """Creates ``workdir`` and writes/deletes a file in it (every process: all write checkpoints)."""
  probe = workdir / f".write_probe_{jax.process_index()}"
  if workdir.exists() and not workdir.is_dir():
    raise WorkdirError(f"Workdir {workdir} is a file, not a directory; choose another --workdir.")
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise WorkdirError(f"Workdir {workdir} is not writable ({type(e).__name__}: {e}). Fix its "
                       f"permissions or free space, or choose another --workdir.") from e


def _recorded_diff(workdir: epath.Path, config: ml_collections.ConfigDict) -> list[str]:
  path = workdir / "config.json"
  if not path.exists():
    return []
  return config_diff(json.loads(path.read_text()), json.loads(config.to_json_best_effort()))


# Fields that place a step in the data: a checkpoint's data position is its step, so a resume with
# another value of any of them would train other examples than the ones its step count says.
DATA_POSITION_FIELDS = ("batch_size", "dataset", "train_split", "holdout_fraction")


def check_data_position(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
  """Refuses to resume checkpoints with another batch size (or train set) than wrote them.

  32 -> 64 ended a run without training its last epoch while ``summary.json`` said it had;
  32 -> 16 trained half an epoch twice. Whatever ``on_config_change`` says, this is refused.
  """
  path = workdir / "config.json"
  if not path.exists() or not restore.checkpoint_steps(workdir / "checkpoints"):
    return
  recorded = json.loads(path.read_text())
  for field in DATA_POSITION_FIELDS:
    old, new = recorded.get(field, config[field]), config[field]
    if old != new:
      raise WorkdirError(
          f"{field} changed from {old!r} to {new!r} since the checkpoints in {workdir} were "
          f"written; their data position counts steps of {field}={old!r}, so resuming would "
          f"mistrain its epochs. Resume with --config.{field}={old}, or start a new --workdir "
          f"(--config.init={workdir} starts from its weights).")


def check_config_change(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
  """Refuses (``on_config_change="error"``) a config that differs from the recorded one, and
  (always) a resume whose data position would be wrong (``check_data_position``)."""
  check_data_position(workdir, config)
  diff = _recorded_diff(workdir, config)
  if diff and config.on_config_change == "error":
    lines = "\n  ".join(diff)
    raise WorkdirError(f"The config differs from the one recorded in {workdir / 'config.json'}:"
                       f"\n  {lines}\nUse a new --workdir, or set --config.on_config_change=warn "
                       f"to go on with the new config.")


def record_config(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
  """Writes ``config.json``; a differing older one is kept as ``config.previous-N.json``."""
  if jax.process_index() != 0:
    return
  path = workdir / "config.json"
  diff = _recorded_diff(workdir, config)
  if diff:
    n = 1 + sum(1 for _ in workdir.glob("config.previous-*.json"))
    path.rename(workdir / f"config.previous-{n}.json")
    lines = "\n  ".join(diff)
    print(f"WARNING: the config differs from the one recorded in {path} (now kept as "
          f"config.previous-{n}.json):\n  {lines}", flush=True)
  path.write_text(config.to_json_best_effort(indent=2))
