"""Tests for cgmlp_jax.tools.visualize (and its CLI, images, restore): every figure is written with the
expected size, checkpoints round-trip into the figures, and bad arguments give clear errors.

One tiny model, one batch shape: the figure functions cache their compiled computations per
model, so after the first test nothing compiles again.
"""
import json
import re

import flax.linen as nn
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from matplotlib import image as mpimg

from cgmlp_jax import data
from cgmlp_jax import models
from cgmlp_jax.tools import visualize
from cgmlp_jax.tools.visualize import __main__ as visualize_cli
from cgmlp_jax.tools.visualize import images as images_lib
from cgmlp_jax.train import restore
from cgmlp_jax.models import stems
from cgmlp_jax.train.checkpoint import Checkpoints
from cgmlp_jax.train.state import TrainState

NUM_CLASSES = 10
CLASS_NAMES = tuple(f"name{k}" for k in range(NUM_CLASSES))
# test_cgmlp: 16x16 inputs, one conv layer (8 filters, 16x16 map), blocks: token, channel.
EXPECTED = {  # figure -> (files, (height, width) in pixels)
    "feature_maps": (["feature_maps_img0_layer0.png", "feature_maps_img1_layer0.png"], (270, 1400)),
    "saliency": (["saliency_img0.png", "saliency_img1.png"], (460, 1600)),
    "token_gating": (["token_gating_block0.png"], (870, 920)),
    "channel_gating": (["channel_gating_block1.png"], (540, 640)),
}


@pytest.fixture(scope="module")
def model():
  return models.get("test_cgmlp", num_classes=NUM_CLASSES)


@pytest.fixture(scope="module")
def params(model):
  return visualize_cli.fresh_params(model)


@pytest.fixture(scope="module")
def images():
  return np.random.default_rng(0).integers(0, 256, (2, 20, 20, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def figures(model, params, images, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("figures"))
  shown = dict(labels=[3, 4], class_names=CLASS_NAMES)
  return {
      "feature_maps": visualize.feature_maps(model, params, images, out, **shown),
      "saliency": visualize.saliency(model, params, images, out, **shown),
      "token_gating": visualize.token_gating(params, out),
      "channel_gating": visualize.channel_gating(params, out),
  }


@pytest.fixture(scope="module")
def workdir(model, params, tmp_path_factory):
  """A workdir as training writes it: config.json, best/7 and checkpoints/9 (older params)."""
  root = tmp_path_factory.mktemp("run")
  (root / "config.json").write_text(json.dumps(
      {"model": "test_cgmlp", "model_kw": {}, "dataset": "cifar10", "data_dir": str(root),
       "augment": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}))
  older = jax.tree.map(lambda x: x + 1.0, params)
  for sub, step, p in (("best", 7, params), ("checkpoints", 9, older)):
    state = {"step": np.int32(step), "params": p, "opt_state": {"count": np.int32(step)},
             "rng": np.zeros(2, np.uint32)}
    with ocp.CheckpointManager(root / sub, item_names=("state", "progress")) as manager:
      manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 progress=ocp.args.JsonSave({"history": []})))
      manager.wait_until_finished()
  return root


def _files(tmp_path, arrays):
  paths = [str(tmp_path / f"in{i}.png") for i in range(len(arrays))]
  for path, x in zip(paths, arrays):
    mpimg.imsave(path, x)  # written as RGBA, as most PNGs are
  return paths


@pytest.mark.parametrize("kind", visualize.KINDS)
def test_figures_written_with_expected_sizes(figures, kind):
  names, (height, width) = EXPECTED[kind]
  assert [p.rsplit("/", 1)[-1] for p in figures[kind]] == names
  for path in figures[kind]:
    assert mpimg.imread(path).shape == (height, width, 4)


def test_feature_map_titles_name_every_stem_norm():
  assert set(visualize.STEM_LAYER_OPS) == set(stems.NORMS)
  assert visualize.STEM_LAYER_OPS["none"] == "conv + ReLU"


def test_saliency_maps(model, params, images):
  x, display = images_lib.preprocess(images, model.image_size)
  assert x.shape == display.shape == (2, 16, 16, 3) and 0 <= display.min() <= display.max() <= 1
  maps, preds = visualize.saliency_maps(model, params, x)
  assert maps.shape == (2, 16, 16) and not np.any(maps)  # a zero-initialised head: no gradient
  head = np.random.default_rng(1).normal(size=params["head"]["kernel"].shape)
  trained = {**params, "head": {**params["head"], "kernel": head.astype(np.float32)}}
  maps, preds = visualize.saliency_maps(model, trained, x)
  logits, _ = visualize._stem_activations(model, trained, x)  # compiled already
  np.testing.assert_array_equal(preds, np.argmax(logits, axis=-1))
  assert np.all(maps >= 0) and np.all(np.sum(maps, axis=(1, 2)) > 0)


def test_smoothgrad_and_token_grad_cam(model, params, images):
  x, _ = images_lib.preprocess(images, model.image_size)
  head = np.random.default_rng(1).normal(size=params["head"]["kernel"].shape)
  trained = {**params, "head": {**params["head"], "kernel": head.astype(np.float32)}}
  key = jax.random.key(0)
  smooth = np.asarray(visualize.smoothgrad_maps(model, trained, x, key))
  assert smooth.shape == (2, 16, 16) and np.all(smooth >= 0) and np.all(smooth.sum((1, 2)) > 0)
  # Without noise, SmoothGrad is |gradient| summed over RGB: the plain gradient's magnitude.
  plain = np.asarray(visualize.smoothgrad_maps(model, trained, x, key, noise=0.0))
  pred = np.argmax(model.apply({"params": trained}, x), axis=-1)
  gradient = jax.grad(lambda z: model.apply({"params": trained}, z)[np.arange(2), pred].sum())(x)
  np.testing.assert_allclose(plain, np.abs(np.asarray(gradient)).sum(-1), rtol=1e-4, atol=1e-6)
  cam = np.asarray(visualize.token_grad_cam(model, trained, x))
  assert cam.shape == (2, 16, 16) and cam.min() >= 0 and np.allclose(cam.max(axis=(1, 2)), 1)
  # Grad-CAM by hand: the last block's tokens weighted by the mean gradient of the logit.
  logits, state = model.apply({"params": trained}, x, mutable=["intermediates"])
  tokens = state["intermediates"]["block1"]["output"][0]  # (2, 16, 16): 4x4 tokens, d_model 16
  pred = np.argmax(logits, axis=-1)

  def logit_of_tokens(t):  # the layers after the last block, on its output
    y = nn.LayerNorm(epsilon=1e-6).apply({"params": trained["norm"]}, t).mean(axis=1)
    return (y @ trained["head"]["kernel"] + trained["head"]["bias"])[np.arange(2), pred].sum()

  grads = jax.grad(logit_of_tokens)(tokens)
  coarse = np.maximum(np.einsum("bnd,bd->bn", tokens, grads.mean(axis=1)), 0).reshape(2, 4, 4)
  expected = jax.image.resize(coarse, (2, 16, 16), "bilinear")
  expected = expected / np.asarray(expected).max(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(cam, expected, rtol=1e-4, atol=1e-5)


def test_gating_blocks_and_positions(params, tmp_path):
  assert visualize.gating_blocks(params, "token") == [0]
  assert visualize.gating_blocks(params, "channel") == [1]
  paths = visualize.token_gating(params, str(tmp_path), positions=[0, 5, 15])
  assert mpimg.imread(paths[0]).shape == (610, 660, 4)  # 2 x 2 panels


def test_checkpoint_round_trip(workdir, model, params):
  assert restore.find_checkpoint(workdir) == workdir / "best" / "7"  # best before latest
  assert restore.checkpoint_steps(workdir / "checkpoints") == [9]
  loaded, variables, config = restore.load_model(workdir)
  assert loaded == model and config["dataset"] == "cifar10"
  jax.tree.map(np.testing.assert_array_equal, variables, {"params": jax.device_get(params)})


def test_checkpoint_from_a_relative_workdir(workdir, params, monkeypatch):
  monkeypatch.chdir(workdir.parent)
  _, variables, _ = restore.load_model(workdir.name)  # orbax itself needs absolute paths
  jax.tree.map(np.testing.assert_array_equal, variables["params"], jax.device_get(params))


def test_feature_maps_of_a_batchnorm_model_use_its_checkpointed_statistics(images, tmp_path):
  model = models.get("test_cgmlp_bn", num_classes=NUM_CLASSES)
  params = visualize_cli.fresh_variables(model)["params"]
  stats = {"stem": {"norm0": {"mean": np.full(8, 0.5, np.float32),
                              "var": np.full(8, 4.0, np.float32)}}}
  (tmp_path / "config.json").write_text(json.dumps({"model": "test_cgmlp_bn", "model_kw": {}}))
  checkpoints = Checkpoints(tmp_path, keep=1)  # as training writes them
  checkpoints.save(3, TrainState(step=np.int32(3), params=params, opt_state={},
                                 rng=np.zeros(2, np.uint32), batch_stats=stats), {"history": []})
  checkpoints.close()
  loaded, variables, _ = restore.load_model(tmp_path)
  assert loaded == model
  jax.tree.map(np.testing.assert_array_equal, variables,
               {"params": jax.device_get(params), "batch_stats": stats})
  x, _ = images_lib.preprocess(images, model.image_size)
  _, acts = visualize._stem_activations(model, variables, x)
  conv = stems.Conv(8, 3, use_bias=False).apply({"params": params["stem"]["conv0"]}, x)
  np.testing.assert_allclose(acts["layer0"], np.maximum((conv - 0.5) / np.sqrt(4.0 + 1e-5), 0),
                             rtol=1e-5, atol=1e-5)  # normalised with the running statistics
  out = tmp_path / "out"
  visualize_cli.main(["--workdir", str(tmp_path), "--images", ",".join(_files(tmp_path, images)),
                      "--what", "feature_maps", "--out", str(out)])
  names, shape = EXPECTED["feature_maps"]
  assert sorted(p.name for p in out.iterdir()) == names
  assert all(mpimg.imread(out / name).shape == (*shape, 4) for name in names)


def test_cli_from_checkpoint_and_files(workdir, images, tmp_path, capsys):
  out = tmp_path / "out"
  visualize_cli.main(["--workdir", str(workdir), "--images", ",".join(_files(tmp_path, images)),
                      "--what", "saliency,channel_gating", "--out", str(out)])
  printed = capsys.readouterr().out.split()
  expected = EXPECTED["saliency"][0] + EXPECTED["channel_gating"][0]
  assert [p.rsplit("/", 1)[-1] for p in printed] == expected
  assert sorted(p.name for p in out.iterdir()) == sorted(expected)


def test_cli_fresh_model_skips_what_does_not_apply(tmp_path, capsys):
  visualize_cli.main(["--model", "test_cgmlp", "--num_classes", "10", "--blocks", "0",
                      "--out", str(tmp_path)])
  out = capsys.readouterr().out
  assert "Skipping feature_maps: no images" in out
  assert "Skipping channel_gating: no channel-gating blocks selected" in out
  assert [p.name for p in tmp_path.iterdir()] == ["token_gating_block0.png"]


def test_from_dataset_reads_only_the_needed_slice(monkeypatch):
  read, labels_on_disk = [], np.arange(6, dtype=np.int32)  # a split of 6 examples

  def load_split(name, split, data_dir=None):
    read.append(split)
    sliced = re.fullmatch(r"\w+\[(\d+):(\d+)\]", split)
    labels = labels_on_disk[int(sliced[1]):int(sliced[2])] if sliced else labels_on_disk
    return data.ArraySplit(images=labels.astype(np.uint8).reshape(-1, 1, 1, 1), labels=labels,
                           num_classes=10, class_names=CLASS_NAMES)

  monkeypatch.setattr(data, "load_split", load_split)
  images, labels, names = images_lib.from_dataset("cifar10", "test", [5, 2])
  assert read == ["test[2:6]"] and labels.tolist() == [5, 2] and names == CLASS_NAMES
  images, labels, _ = images_lib.from_dataset("cifar10", "train[:90%]", [4, 1])
  assert read[-1] == "train[:90%]" and labels.tolist() == [4, 1]
  with pytest.raises(ValueError, match="Index 9 is out of range: split 'test' of 'cifar10' has "
                                       "6 examples"):
    images_lib.from_dataset("cifar10", "test", [1, 9])  # reads test[1:10], gets 5


@pytest.mark.parametrize("shape, match", [
    ((16, 20, 3), r"shape \(16, 20, 3\): it is not square"),
    ((16, 16), r"shape \(16, 16\) and dtype uint8; expected uint8 RGB"),
    ((16, 16, 4), r"shape \(16, 16, 4\)"),
])
def test_bad_images(model, params, shape, match):
  with pytest.raises(ValueError, match=match):
    visualize.saliency(model, params, [np.zeros(shape, np.uint8)], "unused")


def test_bad_arguments(model, params, images, tmp_path):
  with pytest.raises(ValueError, match=r"Unknown stem layer\(s\) \[5\]; valid: \[0\]"):
    visualize.feature_maps(model, params, images, str(tmp_path), layers=[5])
  with pytest.raises(ValueError, match=r"Unknown channel-gating block\(s\) \[0\]; valid: \[1\]"):
    visualize.channel_gating(params, str(tmp_path), blocks=[0])
  with pytest.raises(ValueError, match=r"Unknown token position\(s\) \[16\]; valid: \[0, .* 15\]"):
    visualize.token_gating(params, str(tmp_path), positions=[16])
  with pytest.raises(ValueError, match="no conv stem"):
    visualize.feature_maps(models.get("test_gmlp", num_classes=10), None, images, str(tmp_path))
  with pytest.raises(ValueError, match="no token-gating blocks"):
    visualize.token_gating({"block0": params["block1"]}, str(tmp_path))
  with pytest.raises(FileNotFoundError, match=f"No checkpoint in {tmp_path}"):
    restore.load_model(tmp_path)
  with pytest.raises(FileNotFoundError, match="missing does not exist"):
    restore.load_model(tmp_path / "missing")


def test_cli_errors(workdir, tmp_path, capsys):
  def error(*argv):
    with pytest.raises(SystemExit):
      visualize_cli.main([*argv, "--out", str(tmp_path)])
    return capsys.readouterr().err

  assert "Workdir /nonexistent does not exist" in error("--workdir", "/nonexistent")
  assert "Unknown stem layer(s) [5]; valid: [0]" in error(
      "--workdir", str(workdir), "--what", "feature_maps", "--layers", "5", "--images",
      *_files(tmp_path, [np.zeros((16, 16, 3), np.uint8)]))
  assert "feature_maps needs images" in error("--workdir", str(workdir), "--what", "feature_maps")
  assert "unknown figure(s) ['maps']" in error("--workdir", str(workdir), "--what", "maps")
  assert "--model needs --num_classes" in error("--model", "test_cgmlp")
  assert "Unknown block(s) [4]" in error("--workdir", str(workdir), "--blocks", "4")
  assert "Exactly one of (workdir, model)" in error("--indices", "0")
  assert "Exactly one of (workdir, model)" in error("--workdir", str(workdir), "--model", "x")
  assert "At most one of (images, indices)" in error("--model", "test_cgmlp", "--images", "a.png",
                                                     "--indices", "0")
  assert "flag --layers=1,x: expected comma-separated integers" in error(
      "--workdir", str(workdir), "--layers", "1,x")
  assert "Unexpected argument(s) b.png" in error("--workdir", str(workdir), "--images", "a.png",
                                                 "b.png")  # lists are comma-separated
