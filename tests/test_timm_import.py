"""Tests of models.timm_import: timm's gMLP state dict (names, shapes) -> params, no torch."""
import math

import jax
import numpy as np
import pytest
from scipy.special import erf

from cgmlp_jax import models
from cgmlp_jax.models import timm_import

NUM_CLASSES = 10


def _model(num_classes=NUM_CLASSES, **overrides):
  return models.get("test_gmlp", num_classes=num_classes,
                    **{"gate_norm_eps": 1e-5, **overrides})


def _timm_state_dict(model, num_classes=None, seed=0):
  """Random tensors with timm's MlpMixer gMLP names and (PyTorch) shapes."""
  rng = np.random.default_rng(seed)
  d, f, n, p = model.d_model, model.d_ffn, model.num_tokens, model.patch_size
  k = num_classes or model.num_classes
  shapes = {"stem.proj.weight": (d, 3, p, p), "stem.proj.bias": (d,),
            "norm.weight": (d,), "norm.bias": (d,), "head.weight": (k, d), "head.bias": (k,)}
  for i in range(model.depth):
    t = f"blocks.{i}."
    shapes.update({t + "norm.weight": (d,), t + "norm.bias": (d,),
                   t + "mlp_channels.fc1.weight": (f, d), t + "mlp_channels.fc1.bias": (f,),
                   t + "mlp_channels.gate.norm.weight": (f // 2,),
                   t + "mlp_channels.gate.norm.bias": (f // 2,),
                   t + "mlp_channels.gate.proj.weight": (n, n),
                   t + "mlp_channels.gate.proj.bias": (n,),
                   t + "mlp_channels.fc2.weight": (d, f // 2), t + "mlp_channels.fc2.bias": (d,)})
  state = {}
  for name, shape in shapes.items():
    scale = 1.0 if name.endswith("norm.weight") else 0.3
    state[name] = (scale * rng.standard_normal(shape)).astype(np.float32)
  return state


def _layer_norm(x, w, b, eps):
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * w + b


def _timm_forward(state, images_nchw, depth, patch, gate_eps=1e-5):
  """timm's MlpMixer gMLP forward in numpy, float64, on NCHW images."""
  s = {k: v.astype(np.float64) for k, v in state.items()}
  x = images_nchw.astype(np.float64)
  b, c, h, w = x.shape
  x = x.reshape(b, c, h // patch, patch, w // patch, patch).transpose(0, 2, 4, 1, 3, 5)
  x = x.reshape(b, (h // patch) * (w // patch), c * patch * patch)  # row-major patch grid
  x = x @ s["stem.proj.weight"].reshape(s["stem.proj.weight"].shape[0], -1).T + s["stem.proj.bias"]
  for i in range(depth):
    t = f"blocks.{i}."
    y = _layer_norm(x, s[t + "norm.weight"], s[t + "norm.bias"], 1e-6)
    y = y @ s[t + "mlp_channels.fc1.weight"].T + s[t + "mlp_channels.fc1.bias"]
    y = 0.5 * y * (1 + erf(y / math.sqrt(2)))  # nn.GELU (exact)
    u, v = np.split(y, 2, axis=-1)
    v = _layer_norm(v, s[t + "mlp_channels.gate.norm.weight"],
                    s[t + "mlp_channels.gate.norm.bias"], gate_eps)
    # proj(v.transpose(-1, -2)).transpose(-1, -2): nn.Linear over the token axis.
    v = (v.transpose(0, 2, 1) @ s[t + "mlp_channels.gate.proj.weight"].T
         + s[t + "mlp_channels.gate.proj.bias"]).transpose(0, 2, 1)
    y = (u * v) @ s[t + "mlp_channels.fc2.weight"].T + s[t + "mlp_channels.fc2.bias"]
    x = x + y
  x = _layer_norm(x, s["norm.weight"], s["norm.bias"], 1e-6)
  return x.mean(axis=1) @ s["head.weight"].T + s["head.bias"]


def test_every_param_comes_from_the_right_tensor():
  model = _model()
  state = _timm_state_dict(model)
  params = models.from_timm_state_dict(state, model)
  images = np.zeros((1, 16, 16, 3), np.float32)
  expected = model.init(jax.random.key(0), images)["params"]
  assert jax.tree.structure(params) == jax.tree.structure(expected)
  jax.tree.map(lambda a, b: np.testing.assert_equal(a.shape, b.shape), params, expected)
  np.testing.assert_array_equal(params["stem"]["patch_proj"]["kernel"],
                                state["stem.proj.weight"].transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(params["stem"]["patch_proj"]["kernel"][1, 2, 0, 3],
                                state["stem.proj.weight"][3, 0, 1, 2])
  b1 = params["block1"]
  np.testing.assert_array_equal(b1["proj_in"]["kernel"],
                                state["blocks.1.mlp_channels.fc1.weight"].T)
  np.testing.assert_array_equal(b1["proj_out"]["kernel"],
                                state["blocks.1.mlp_channels.fc2.weight"].T)
  np.testing.assert_array_equal(b1["gating"]["kernel"],
                                state["blocks.1.mlp_channels.gate.proj.weight"])
  np.testing.assert_array_equal(b1["gating"]["bias"], state["blocks.1.mlp_channels.gate.proj.bias"])
  np.testing.assert_array_equal(b1["gating"]["norm"]["scale"],
                                state["blocks.1.mlp_channels.gate.norm.weight"])
  np.testing.assert_array_equal(params["block0"]["norm"]["bias"], state["blocks.0.norm.bias"])
  np.testing.assert_array_equal(params["norm"]["scale"], state["norm.weight"])
  np.testing.assert_array_equal(params["head"]["kernel"], state["head.weight"].T)
  np.testing.assert_array_equal(params["head"]["bias"], state["head.bias"])
  # Each parameter from exactly one tensor: all leaves distinct.
  leaves = [np.asarray(x) for x in jax.tree.leaves(params)]
  assert len(leaves) == len(state)
  assert len({x.tobytes() for x in leaves}) == len(leaves)


@pytest.mark.parametrize("gate_eps", [1e-5, 1e-6])
def test_converted_model_computes_timms_forward(gate_eps):
  model = _model(gate_norm_eps=gate_eps)
  state = _timm_state_dict(model, seed=1)
  # Small gate-norm variance makes the eps visible: 1e-5 vs 1e-6 must matter.
  for i in range(model.depth):
    state[f"blocks.{i}.mlp_channels.fc1.weight"][model.d_ffn // 2:] *= 0.01
    state[f"blocks.{i}.mlp_channels.fc1.bias"][model.d_ffn // 2:] *= 0.01
  params = models.from_timm_state_dict(state, model, report=None)
  images = np.asarray(jax.random.normal(jax.random.key(2), (3, 16, 16, 3)))
  logits = np.asarray(jax.jit(model.apply)({"params": params}, images))
  expected = _timm_forward(state, images.transpose(0, 3, 1, 2), model.depth, model.patch_size,
                           gate_eps=gate_eps)
  np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
  other = _timm_forward(state, images.transpose(0, 3, 1, 2), model.depth, model.patch_size,
                        gate_eps=1e-6 if gate_eps == 1e-5 else 1e-5)
  assert np.abs(logits - other).max() > 1e-3  # the reference is sensitive to the gate's eps


def test_imagenet_variants_use_timms_gate_eps_and_others_keep_1e_6():
  for name in ("gmlp_ti16", "gmlp_s16", "gmlp_b16"):
    assert models.get(name, num_classes=1000).gate_norm_eps == 1e-5
  for name in ("gmlp_paper", "gmlp_keras", "cgmlp_2conv", "gmlp_small", "test_gmlp"):
    assert models.get(name, num_classes=10).gate_norm_eps == 1e-6


@pytest.mark.parametrize("edit, named", [
    (lambda s: s.pop("blocks.1.mlp_channels.gate.proj.bias"),
     "blocks.1.mlp_channels.gate.proj.bias"),
    (lambda s: s.update({"blocks.2.norm.weight": np.ones(16, np.float32)}), "blocks.2.norm.weight"),
    (lambda s: s.update({"blocks.0.mlp_channels.fc1.weight": np.ones((16, 32), np.float32)}),
     "blocks.0.mlp_channels.fc1.weight: (16, 32)"),
    (lambda s: s.update({"blocks.0.mlp_channels.gate.proj.weight": np.ones((4, 4), np.float32)}),
     "blocks.0.mlp_channels.gate.proj.weight: (4, 4)"),
])
def test_missing_extra_or_misshaped_tensors_raise_naming_them(edit, named):
  model = _model()
  state = _timm_state_dict(model)
  edit(state)
  with pytest.raises(ValueError, match="do not fit") as info:
    models.from_timm_state_dict(state, model)
  assert named in str(info.value)
  assert isinstance(info.value, timm_import.WeightsError)


def test_a_model_timm_has_no_weights_for_is_refused():
  model = models.get("test_cgmlp", num_classes=NUM_CLASSES)
  with pytest.raises(ValueError, match="conv stem"):
    models.from_timm_state_dict({}, model)


def test_a_head_of_another_size_is_reinitialised_and_reported():
  model = _model()
  state = _timm_state_dict(model, num_classes=1000)
  lines = []
  params = models.from_timm_state_dict(state, model, report=lines.append)
  assert lines == ["timm import: head re-initialised to zeros (1000 classes in the weights, "
                   "10 in the model)."]
  assert params["head"]["kernel"].shape == (model.d_model, NUM_CLASSES)
  np.testing.assert_array_equal(params["head"]["kernel"], 0.0)
  np.testing.assert_array_equal(params["head"]["bias"], 0.0)
  np.testing.assert_array_equal(params["norm"]["bias"], state["norm.bias"])
  with pytest.raises(ValueError, match="head.weight"):
    models.from_timm_state_dict(state, model, allow_head_mismatch=False)


def test_a_gate_eps_other_than_timms_is_reported():
  model = _model(gate_norm_eps=1e-6)
  lines = []
  models.from_timm_state_dict(_timm_state_dict(model), model, report=lines.append)
  assert len(lines) == 1 and "gate_norm_eps is 1e-06" in lines[0]


def test_npz_round_trip_through_load_state_dict(tmp_path):
  model = _model()
  state = _timm_state_dict(model)
  path = tmp_path / "gmlp.npz"
  np.savez(path, **state)
  loaded = models.load_state_dict(path)
  assert sorted(loaded) == sorted(state)
  for name, value in state.items():
    np.testing.assert_array_equal(loaded[name], value)
  params = models.from_timm_state_dict(loaded, model, report=None)
  np.testing.assert_array_equal(params["block0"]["proj_in"]["kernel"],
                                state["blocks.0.mlp_channels.fc1.weight"].T)


def test_load_state_dict_errors(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match="No weights file"):
    models.load_state_dict(tmp_path / "absent.npz")
  other = tmp_path / "weights.pt"
  other.write_bytes(b"")
  with pytest.raises(ValueError, match=r"\.npz or \.safetensors"):
    models.load_state_dict(other)
  st = tmp_path / "weights.safetensors"
  st.write_bytes(b"")
  monkeypatch.setitem(__import__("sys").modules, "safetensors.numpy", None)
  with pytest.raises(ValueError, match="pip install safetensors"):
    models.load_state_dict(st)
