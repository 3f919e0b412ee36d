"""Trained weights as small params-only files, and fitting any weights onto a model.

This codebase's published CIFAR weights live outside the package, in the repository's ``weights/``
folder (or a folder named by ``CGMLP_JAX_WEIGHTS``), one pair of files per name::

    weights/cgmlp_2conv_small.cifar100.msgpack   the model's variables, flax.serialization msgpack
    weights/cgmlp_2conv_small.cifar100.json      model, classes, normalisation, accuracy, sha256

Loading one builds its model too::

    from cgmlp_jax import models
    model, variables, info = models.pretrained.load("cgmlp_2conv_small.cifar100")
    logits = model.apply(variables, (images / 255 - info["mean"]) / info["std"])  # (B, 32, 32, 3)

``fit`` puts weights of one run onto another run's model (fine-tuning): every array must match,
except a head of another class count, which is re-initialised (zeros, this package's head init).
"""
import hashlib
import json
import os
import pathlib
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization, traverse_util

from cgmlp_jax.errors import WeightsError
from cgmlp_jax.models.classifier import GatedMLPClassifier
from cgmlp_jax.models.registry import get

SUFFIX = ".msgpack"
HEAD = ("params", "head")  # the classifier's Dense: kernel (d_model, K), bias (K,)


class Pretrained(NamedTuple):
  model: GatedMLPClassifier
  variables: dict[str, Any]  # {"params": ...} (+ "batch_stats" for a BatchNorm stem), numpy
  info: dict[str, Any]  # the .json beside the weights


def weights_dir() -> pathlib.Path:
  """``$CGMLP_JAX_WEIGHTS``, else the repository's ``weights/`` folder."""
  default = pathlib.Path(__file__).resolve().parents[2] / "weights"
  return pathlib.Path(os.environ.get("CGMLP_JAX_WEIGHTS", default))


def available(directory: str | os.PathLike | None = None) -> list[str]:
  """The names of the weights in ``directory`` (default ``weights_dir()``)."""
  directory = pathlib.Path(directory or weights_dir())
  return sorted(p.name[:-len(SUFFIX)] for p in directory.glob("*" + SUFFIX)) \
      if directory.is_dir() else []


def sha256(path: str | os.PathLike) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      digest.update(chunk)
  return digest.hexdigest()


def save(path: str | os.PathLike, variables: Mapping[str, Any], info: dict[str, Any]) -> dict:
  """Writes ``variables`` to ``path`` (``NAME.msgpack``) and ``info`` plus the file's sha256 and
  size to ``NAME.json`` beside it; returns that info. ``info`` needs ``model`` (a registry name),
  ``model_kw`` (its overrides) and ``num_classes``."""
  path = pathlib.Path(path)
  if path.suffix != SUFFIX:
    raise WeightsError(f"Weights file {path} must end in {SUFFIX}.")
  missing = {"model", "model_kw", "num_classes"} - set(info)
  if missing:
    raise WeightsError(f"Weights info needs {sorted(missing)}.")
  host = jax.tree.map(lambda a: np.asarray(a, np.float32), dict(variables))
  path.parent.mkdir(parents=True, exist_ok=True)
  _write_atomically(path, serialization.msgpack_serialize(host))
  info = {**info, "file": path.name, "bytes": path.stat().st_size, "sha256": sha256(path)}
  _write_atomically(path.with_suffix(".json"), (json.dumps(info, indent=2) + "\n").encode())
  return info


def _write_atomically(path: pathlib.Path, data: bytes) -> None:
  """A file replaced (``--force``) is the old one or the new one, never a cut one."""
  temporary = path.with_name(path.name + ".tmp")
  temporary.write_bytes(data)
  os.replace(temporary, path)


def _locate(name_or_path: str | os.PathLike) -> pathlib.Path:
  path = pathlib.Path(name_or_path)
  if path.suffix == SUFFIX:
    if not path.is_file():
      raise WeightsError(f"No weights file at {path}.")
    return path
  path = weights_dir() / (str(name_or_path) + SUFFIX)
  if not path.is_file():
    raise WeightsError(
        f"No published weights {str(name_or_path)!r} in {path.parent} (available: "
        f"{', '.join(available()) or 'none'}); fetch NAME.msgpack and NAME.json from the "
        f"cgmlp_jax repository's weights/ folder into it, or set CGMLP_JAX_WEIGHTS to their folder.")
  return path


def read_info(name_or_path: str | os.PathLike) -> dict[str, Any]:
  """The ``.json`` record of published weights (a name or a ``.msgpack`` path), without loading."""
  info_path = _locate(name_or_path).with_suffix(".json")
  if not info_path.is_file():
    raise WeightsError(f"No {info_path.name} beside the weights (written by save(): the model "
                       f"and class count to build).")
  try:
    info = json.loads(info_path.read_text())
  except ValueError as e:
    raise WeightsError(f"{info_path} is not a weights record (JSON: {e}); fetch it "
                       f"again.") from None
  missing = sorted({"model", "num_classes"} - set(info)) if isinstance(info, dict) else ["model"]
  if missing:
    raise WeightsError(f"{info_path} is not a weights record: it lacks {missing}; fetch it again.")
  return info


def tuples(value: Any) -> Any:
  """JSON lists back to the tuples model fields hold (hashable, as jit needs)."""
  return tuple(tuples(v) for v in value) if isinstance(value, list) else value


def build(info: Mapping[str, Any], num_classes: int | None = None) -> GatedMLPClassifier:
  """The model of a weights record (``model``, ``model_kw``), with its own class count or another."""
  overrides = {k: tuples(v) for k, v in info.get("model_kw", {}).items()}
  return get(info["model"], num_classes=num_classes or info["num_classes"], **overrides)


def load(name_or_path: str | os.PathLike, verify: bool = True) -> Pretrained:
  """``(model, variables, info)`` of published weights: a name (``available()``) or a path to a
  ``.msgpack`` with its ``.json``. ``verify`` checks the file's sha256 against the record."""
  path = _locate(name_or_path)
  info = read_info(path)
  if verify and info.get("sha256") and sha256(path) != info["sha256"]:
    raise WeightsError(f"{path} does not match the sha256 in {path.with_suffix('.json').name} "
                       f"(a truncated or changed file): fetch it again.")
  variables = read_variables(path)
  model = build(info)
  return Pretrained(model, fit(variables, model, report=None), info)


def read_variables(path: pathlib.Path) -> dict[str, Any]:
  """The variables of a ``.msgpack`` weights file; ``WeightsError`` for anything else (a cut,
  changed or foreign file whose record has no sha256 to catch it)."""
  try:
    variables = serialization.msgpack_restore(path.read_bytes())
  except Exception as e:  # noqa: BLE001  (msgpack raises many kinds on random bytes)
    raise WeightsError(f"{path} is not a weights file ({type(e).__name__}: {e}); fetch it "
                       f"again, or write it with models.pretrained.save.") from None
  if not isinstance(variables, dict) or not isinstance(variables.get("params"), dict):
    raise WeightsError(f"{path} is not a weights file: it holds no 'params'; fetch it again, or "
                       f"write it with models.pretrained.save.")
  return variables


def expected_variables(model: GatedMLPClassifier) -> dict[str, Any]:
  """The model's variables as ShapeDtypeStructs (nothing computed)."""
  images = jax.ShapeDtypeStruct((1, model.image_size, model.image_size, 3), jnp.float32)
  return jax.eval_shape(model.init, jax.random.key(0), images)


def check_fits(source: str, model: GatedMLPClassifier, missing: list[str], extra: list[str],
               misshaped: list[str]) -> None:
  """One ``WeightsError`` naming every array of ``source`` that does not fit ``model``, if any."""
  if missing or extra or misshaped:
    parts = [f"missing {missing}" if missing else "", f"unexpected {extra}" if extra else "",
             f"mis-shaped [{'; '.join(misshaped)}]" if misshaped else ""]
    raise WeightsError(f"{source} do not fit the model (d_model={model.d_model}, d_ffn="
                       f"{model.d_ffn}, {model.num_tokens} tokens, {model.depth} blocks, "
                       f"{model.num_classes} classes): " + "; ".join(p for p in parts if p) + ".")


def fit(variables: Mapping[str, Any], model: GatedMLPClassifier, *,
        report: Callable[[str], None] | None = print) -> dict[str, Any]:
  """``variables`` (``params`` and any ``batch_stats``) checked against ``model``'s, as numpy.

  A missing, extra or mis-shaped array is a ``WeightsError`` listing them all; a head of another
  class count is re-initialised to zeros (this package's head init), reported through ``report``.
  """
  want = traverse_util.flatten_dict(expected_variables(model))
  got = traverse_util.flatten_dict(
      {k: v for k, v in dict(variables).items() if k in ("params", "batch_stats")})
  missing = sorted("/".join(k) for k in set(want) - set(got))
  extra = sorted("/".join(k) for k in set(got) - set(want))
  misshaped, head_classes = [], None
  for key in sorted(set(want) & set(got)):
    have, need = np.shape(got[key]), want[key].shape
    if have == need:
      continue
    if key[:2] == HEAD and have[:-1] == need[:-1]:
      head_classes = have[-1]
      continue
    misshaped.append(f"{'/'.join(key)}: {have}, expected {need}")
  check_fits("The weights", model, missing, extra, misshaped)
  out = {key: (np.zeros(spec.shape, spec.dtype) if head_classes and key[:2] == HEAD
               else np.asarray(got[key], spec.dtype)) for key, spec in want.items()}
  if head_classes and report is not None:
    report(f"init: head re-initialised to zeros ({head_classes} classes in the weights, "
           f"{model.num_classes} in the model).")
  return traverse_util.unflatten_dict(out)
