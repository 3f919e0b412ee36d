"""timm's gMLP weights -> this package's parameters.

timm's gMLP (``timm.models.mlp_mixer.MlpMixer`` with ``block_layer=SpatialGatingBlock``,
``mlp_layer=GatedMlp``: ``gmlp_ti16_224``, ``gmlp_s16_224``, ``gmlp_b16_224``) computes the same
function as a ``GatedMLPClassifier`` with a patch stem, token gating, ``block_style="gmlp"``, a
final LayerNorm and ``gate_norm_eps=1e-5`` (timm's gating LayerNorm keeps PyTorch's default eps; its
block and final norms use 1e-6, as here). The ImageNet variants are built that way::

    from cgmlp_jax import models
    model = models.get("gmlp_s16", num_classes=100)          # 224x224 inputs, NHWC
    state = models.timm_import.load_state_dict("gmlp_s16_224.safetensors")  # or a .npz
    params = models.from_timm_state_dict(state, model)        # head: 1000 -> 100, re-initialised
    logits = model.apply({"params": params}, images)

Layouts: ``nn.Linear`` weights ``(out, in)`` become kernels ``(in, out)``; the patch conv's ``OIHW``
kernel becomes ``HWIO`` (``stems.Conv``); the gate's token projection ``proj.weight``
``(N_out, N_in)`` is this package's gate kernel as is (``einsum("bnc,mn->bmc")``). timm feeds NCHW images and
flattens the patch grid row-major, as the stem here does with NHWC images: the same token order.
The state dict is a local ``.npz`` or ``.safetensors`` file (e.g. one written from
``timm.create_model(name, pretrained=True).state_dict()`` with numpy), or ``download`` fetches timm's
own file from the Hugging Face Hub (``huggingface_hub``; cached; no torch needed)::

    state = models.timm_import.load_state_dict(
        models.timm_import.download("timm/gmlp_s16_224.ra3_in1k"))
"""
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Mapping

import jax.numpy as jnp
import numpy as np

from cgmlp_jax.errors import WeightsError
from cgmlp_jax.models.classifier import GatedMLPClassifier
from cgmlp_jax.models.gating import TIMM_GATE_NORM_EPS
from cgmlp_jax.models.pretrained import check_fits, expected_variables


def _linear(w: np.ndarray) -> np.ndarray:
  return w.T  # (out, in) -> (in, out)


def _conv(w: np.ndarray) -> np.ndarray:
  return w.transpose(2, 3, 1, 0)  # OIHW -> HWIO


def _same(w: np.ndarray) -> np.ndarray:
  return w


def _timm_shape(convert: Callable, shape: tuple[int, ...]) -> tuple[int, ...]:
  """The shape in timm's layout of a parameter of ``shape`` in this package's layout."""
  if convert is _linear:
    return tuple(shape[::-1])
  if convert is _conv:
    return tuple(shape[i] for i in (3, 2, 0, 1))  # HWIO -> OIHW
  return tuple(shape)


def _name_map(depth: int) -> dict[str, tuple[tuple[str, ...], Callable]]:
  """timm tensor name -> (path in this package's params, layout conversion)."""
  names = {"stem.proj.weight": (("stem", "patch_proj", "kernel"), _conv),
           "stem.proj.bias": (("stem", "patch_proj", "bias"), _same),
           "norm.weight": (("norm", "scale"), _same),
           "norm.bias": (("norm", "bias"), _same),
           "head.weight": (("head", "kernel"), _linear),
           "head.bias": (("head", "bias"), _same)}
  for i in range(depth):
    t, o = f"blocks.{i}.", f"block{i}"
    names.update({
        t + "norm.weight": ((o, "norm", "scale"), _same),
        t + "norm.bias": ((o, "norm", "bias"), _same),
        t + "mlp_channels.fc1.weight": ((o, "proj_in", "kernel"), _linear),
        t + "mlp_channels.fc1.bias": ((o, "proj_in", "bias"), _same),
        t + "mlp_channels.gate.norm.weight": ((o, "gating", "norm", "scale"), _same),
        t + "mlp_channels.gate.norm.bias": ((o, "gating", "norm", "bias"), _same),
        t + "mlp_channels.gate.proj.weight": ((o, "gating", "kernel"), _same),
        t + "mlp_channels.gate.proj.bias": ((o, "gating", "bias"), _same),
        t + "mlp_channels.fc2.weight": ((o, "proj_out", "kernel"), _linear),
        t + "mlp_channels.fc2.bias": ((o, "proj_out", "bias"), _same),
    })
  return names


def _check_model(model: GatedMLPClassifier) -> None:
  problems = []
  if model.conv_layers:
    problems.append("a conv stem (timm's gMLP has a patch stem)")
  if set(model.block_axes) != {"token"}:
    problems.append(f"gating axes {model.block_axes} (timm's gMLP gates over tokens)")
  if model.block_style != "gmlp":
    problems.append(f"block_style={model.block_style!r} (timm's is 'gmlp')")
  if not model.final_norm:
    problems.append("final_norm=False (timm has a final LayerNorm)")
  if problems:
    raise WeightsError("timm's gMLP weights need a gMLP model (e.g. models.get('gmlp_s16', ...)); "
                       "this one has " + "; ".join(problems) + ".")


def _get(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def _shape(a: Any) -> tuple[int, ...]:
  return tuple(np.shape(a))


def from_timm_state_dict(state_dict: Mapping[str, Any], model: GatedMLPClassifier, *,
                         allow_head_mismatch: bool = True,
                         report: Callable[[str], None] | None = print) -> dict[str, Any]:
  """The ``params`` of ``model`` from a timm gMLP ``state_dict`` (names -> numpy arrays).

  Every parameter is assigned from exactly one tensor; missing, extra or mis-shaped tensors raise a
  ``WeightsError`` (a ``ValueError``) that lists them all. A head of another class count (e.g. the
  file's 1000 ImageNet classes into a 100-class model) is, with ``allow_head_mismatch``,
  re-initialised to zeros (this package's head init) and reported as one line through ``report``;
  so is a ``gate_norm_eps`` other than timm's 1e-5 (the outputs then differ slightly from timm's).
  """
  _check_model(model)
  expected = expected_variables(model)["params"]
  names = _name_map(model.depth)
  state = {k: np.asarray(v) for k, v in state_dict.items()}
  missing = sorted(set(names) - set(state))
  extra = sorted(set(state) - set(names))
  misshaped, head_mismatch = [], None
  for name in sorted(set(names) & set(state)):
    path, convert = names[name]
    want, got = _get(expected, path).shape, _shape(convert(state[name]))
    if want == got:
      continue
    if name.startswith("head.") and allow_head_mismatch and (
        (name == "head.weight" and got[:1] == want[:1] and len(got) == 2) or
        (name == "head.bias" and len(got) == 1)):
      head_mismatch = state["head.bias"].shape[0] if "head.bias" in state else got[-1]
      continue
    misshaped.append(f"{name}: {_shape(state[name])}, expected {_timm_shape(convert, want)}")
  check_fits("The timm state dict's tensors", model, missing, extra, misshaped)
  params: dict[str, Any] = {}
  for name, (path, convert) in names.items():
    leaf = _get(expected, path)
    if head_mismatch is not None and name.startswith("head."):
      value = np.zeros(leaf.shape, leaf.dtype)
    else:
      value = np.ascontiguousarray(convert(state[name]))
    _set(params, path, jnp.asarray(value, dtype=leaf.dtype))
  notes = []
  if head_mismatch is not None:
    notes.append(f"timm import: head re-initialised to zeros ({head_mismatch} classes in the "
                 f"weights, {model.num_classes} in the model).")
  if model.gate_norm_eps != TIMM_GATE_NORM_EPS:
    notes.append(f"timm import: the model's gate_norm_eps is {model.gate_norm_eps:g}, timm's "
                 f"{TIMM_GATE_NORM_EPS:g}; outputs differ slightly from timm's.")
  if report is not None:
    for note in notes:
      report(note)
  return params


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Tensor name -> numpy array from a local ``.npz`` or ``.safetensors`` file."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise WeightsError(f"No weights file at {path}.")
  if path.endswith(".npz"):
    with np.load(path, allow_pickle=False) as data:
      return {k: data[k] for k in data.files}
  if path.endswith(".safetensors"):
    try:
      from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise WeightsError(f"Reading {path} needs the safetensors package: pip install "
                         f"safetensors (or convert it to .npz).") from None
    return dict(load_file(path))
  raise WeightsError(f"Unknown weights format {path!r}: use a .npz or .safetensors file.")


HF_FILENAME = "model.safetensors"  # timm's weights file in each of its Hub repositories
_PROBE_TIMEOUT_S = 5.0


def download(repo_id: str, filename: str = HF_FILENAME) -> str:
  """The local path of ``filename`` of Hub repository ``repo_id`` (e.g.
  ``"timm/gmlp_s16_224.ra3_in1k"``), from the Hub cache or downloaded into it.

  Offline, fails in seconds (not after the Hub client's minute of retries) with the URL to fetch
  by hand and what to do with the file.
  """
  try:
    from huggingface_hub import constants, hf_hub_download  # pylint: disable=import-outside-toplevel
    from huggingface_hub.errors import LocalEntryNotFoundError  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise WeightsError(f"Downloading {repo_id} needs huggingface_hub and safetensors: pip install "
                       f"huggingface_hub safetensors.") from None
  try:
    return hf_hub_download(repo_id, filename, local_files_only=True)
  except LocalEntryNotFoundError:
    pass  # not in the cache yet
  url = f"{constants.ENDPOINT}/{repo_id}/resolve/main/{filename}"
  by_hand = f"fetch {url} on a machine with internet and give that file's path instead"
  try:
    urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=_PROBE_TIMEOUT_S)
  except urllib.error.HTTPError:
    pass  # the host answered (a missing repository is reported by the download below)
  except (urllib.error.URLError, OSError) as e:
    reason = getattr(e, "reason", e)
    raise WeightsError(f"Cannot download {repo_id}: {urllib.parse.urlsplit(url).netloc} is "
                       f"unreachable ({type(reason).__name__}; is this machine offline?); "
                       f"{by_hand}.") from None
  try:
    return hf_hub_download(repo_id, filename)
  except Exception as e:  # noqa: BLE001  (the Hub client's many error types: one line for all)
    raise WeightsError(f"Downloading {url} failed ({type(e).__name__}: "
                       f"{' '.join(str(e).split())[:200]}); {by_hand}.") from None
