"""The points of a sweep: a config file's ``get_sweep(ARGS)`` -> named override sets -> commands.

A point is a dict of dotted config field -> value (``{"model_kw.depth": 6}``), checked against the
base config (``get_config(ARGS)``) and named by what differs from it (``depth6_axes-alternate``;
``base`` for the base itself), which names its workdir. ``grid`` and ``sample`` build points from a
space of values; ``command`` is the ``python launch.py ...`` line that trains one.
"""
import copy
import dataclasses
import hashlib
import itertools
import json
import os
import random
import re
import shlex
from typing import Any, Sequence

import ml_collections

from cgmlp_jax import cli, models
from cgmlp_jax.errors import ConfigError

# Short names of fields in workdir names; other fields go by their last dotted component.
ABBREVIATIONS = {"model_kw.conv_layers": "conv", "model_kw.patch_size": "patch",
                 "model_kw.d_model": "dm", "model_kw.d_ffn": "ffn", "model_kw.depth": "depth",
                 "model_kw.axes": "axes", "model_kw.drop_path_rate": "sd",
                 "model_kw.dropout_rate": "drop", "model_kw.head_dropout_rate": "hdrop",
                 "model_kw.conv_norm": "norm", "optimizer.learning_rate": "lr",
                 "optimizer.weight_decay": "wd", "optimizer.warmup_epochs": "warmup",
                 "label_smoothing": "ls", "batch_size": "bs", "num_epochs": "ep"}
MAX_NAME = 96


def grid(space: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
  """Every combination of the values in ``space`` (dotted field -> values), as points."""
  keys = list(space)
  return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]


def sample(points: list[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
  """``n`` of ``points`` at random (the same ones for the same seed), in their order."""
  if n <= 0 or n >= len(points):
    return list(points)
  return [points[i] for i in sorted(random.Random(seed).sample(range(len(points)), n))]


# --- Points: names, resolved configs, commands -------------------------------------------------

@dataclasses.dataclass
class Point:
  name: str  # the workdir's name under the sweep's root
  overrides: dict[str, Any]  # the fields that differ from the base, sorted
  config: ml_collections.ConfigDict  # the base with the overrides applied

  @property
  def differs(self) -> str:
    return ", ".join(f"{k}={_literal(v)}" for k, v in self.overrides.items()) or "(the base)"


def _plain(value: Any) -> Any:
  """Lists (JSON, ConfigDict) as tuples, for comparing values."""
  return tuple(_plain(v) for v in value) if isinstance(value, (list, tuple)) else value


def _literal(value: Any) -> str:
  """A Python literal without spaces, as a ``--config.FIELD=`` value (bare for a string)."""
  if isinstance(value, str):
    return value
  if isinstance(value, (list, tuple)):
    items = [json.dumps(v) if isinstance(v, str) else _literal(v) for v in value]
    return "(" + ",".join(items) + ("," if len(items) == 1 else "") + ")"
  return repr(value)


def _name_value(value: Any) -> str:
  """``(64, 3, 2)`` -> ``64x3x2``, a tuple of tuples or strings joined by ``-``, () -> ``none``."""
  if isinstance(value, (list, tuple)):
    numbers = all(isinstance(v, (int, float)) for v in value)
    return ("x" if numbers else "-").join(_name_value(v) for v in value) or "none"
  if isinstance(value, float):
    return f"{value:g}"
  return str(value)


def point_name(overrides: dict[str, Any]) -> str:
  """A short, filesystem-safe, deterministic name for what a point changes: ``depth6``,
  ``conv64x3x2-128x3x1_patch2``, ``axes-alternate``, ``lr0.002``; ``base`` for nothing."""
  parts = []
  for key in sorted(overrides):
    abbr = ABBREVIATIONS.get(key, key.rsplit(".", 1)[-1])
    text = _name_value(overrides[key])
    part = abbr + (text if text[:1].isdigit() else "-" + text)
    parts.append(re.sub(r"[^A-Za-z0-9.+-]", "-", part))
  name = "_".join(parts)
  if len(name) > MAX_NAME:
    name = name[:MAX_NAME - 9] + "-" + hashlib.sha1(name.encode()).hexdigest()[:8]
  return name or "base"


def _base_value(base: ml_collections.ConfigDict, key: str, base_model) -> Any:
  *parents, leaf = key.split(".")
  if parents == ["model_kw"]:
    return getattr(base_model, leaf)  # the variant's value where the config file sets none
  node = base
  for part in parents:
    node = node[part]
  return node[leaf]


def _set(config: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """``config.<key> = value`` for a dotted key; an unknown field is a ConfigError (did you mean)."""
  from cgmlp_jax.train import config as config_lib  # noqa: PLC0415  (after the malloc setup)
  *parents, leaf = key.split(".")
  if parents == ["model_kw"]:  # any model field, listed by the config file or not
    if leaf not in models.FIELDS:
      raise config_lib.unknown_field(key, models.FIELDS, "model field")
    config.model_kw[leaf] = value
    return
  node = config
  for i, part in enumerate(parents):
    if not isinstance(node.get(part), ml_collections.ConfigDict):
      raise config_lib.unknown_field(".".join(parents[:i + 1]), node.keys())
    node = node[part]
  if leaf not in node:
    raise config_lib.unknown_field(key, node.keys())
  node[leaf] = value


def points(spec: str) -> list[Point]:
  """The points of ``--config=spec``'s ``get_sweep``, each resolved and its model checked."""
  from cgmlp_jax.train import config as config_lib  # noqa: PLC0415
  base = cli.load_config_file(spec)
  path, _, arg = spec.partition(":")
  module = _config_module(path)
  if not hasattr(module, "get_sweep"):
    raise ConfigError(f"{path} has no get_sweep(arg) returning the sweep's points.")
  try:
    raw = module.get_sweep(arg) if arg else module.get_sweep()
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(f"--config={spec}: {e}") from None
  base_model = config_lib.build_model(base, num_classes=2)
  out, seen = [], {}
  for i, overrides in enumerate(raw):
    try:
      differs = {k: overrides[k] for k in sorted(overrides)
                 if _plain(overrides[k]) != _plain(_base_value(base, k, base_model))}
    except (KeyError, AttributeError):
      differs = dict(sorted(overrides.items()))  # an unknown field: _set names it
    config = copy.deepcopy(base)
    try:
      with config.unlocked():
        for key, value in differs.items():
          _set(config, key, value)
      config_lib.build_model(config, num_classes=2)  # sizes that do not fit, unknown axes
    except (ValueError, TypeError) as e:
      raise ConfigError(f"Sweep point {i} ({overrides}): {e}") from None
    name = point_name(differs)
    if name in seen:
      raise ConfigError(f"Sweep points {seen[name]} and {i} are the same point ({name!r}; "
                        f"{overrides}); drop one.")
    seen[name] = i
    out.append(Point(name, differs, config))
  if not out:
    raise ConfigError(f"--config={spec}: get_sweep returned no points.")
  return out


def _config_module(path: str):
  import importlib.util  # noqa: PLC0415
  loader_spec = importlib.util.spec_from_file_location("_cgmlp_jax_sweep_config", path)
  module = importlib.util.module_from_spec(loader_spec)
  loader_spec.loader.exec_module(module)
  return module


def command(spec: str, root: str, point: Point, stop_after_epochs: int = 0) -> list[str]:
  """The point's ``python launch.py ...`` command line (``stop_after_epochs``: a screening run)."""
  argv = ["python", "launch.py", f"--config={spec}",
          f"--workdir={os.path.join(root, point.name)}"]
  argv += [f"--config.{k}={_literal(v)}" for k, v in point.overrides.items()]
  if stop_after_epochs:
    argv.append(f"--config.stop_after_epochs={stop_after_epochs}")
  return argv


def shell(argv: list[str]) -> str:
  return " ".join(shlex.quote(a) for a in argv)
