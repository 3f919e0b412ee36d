"""Weights in and out: published params files, fitting weights onto a model, ``config.init``
(fine-tuning from a workdir, a published file or a timm state dict), configs/finetune.py."""
import hashlib
import json
import pathlib
import re
import urllib.error

import jax
import numpy as np
import pytest
from flax import traverse_util

from cgmlp_jax import models
from cgmlp_jax.tools import export_weights
from cgmlp_jax.train import restore
from cgmlp_jax.errors import ConfigError, WeightsError
from cgmlp_jax.tools.export_weights import export
from cgmlp_jax.models import pretrained, timm_import
from cgmlp_jax.train import init_from, trainer as trainer_lib
from configs import finetune
from test_timm_import import _timm_state_dict
from tiny_run import run, tiny_config

IMAGES = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
INFO = dict(model_kw={}, mean=[0.5] * 3, std=[0.25] * 3)


def _init(name, num_classes=10, seed=0):
  model = models.get(name, num_classes=num_classes)
  return model, jax.tree.map(np.asarray, model.init(jax.random.key(seed), IMAGES))


def _flat(tree):
  return traverse_util.flatten_dict(jax.tree.map(np.asarray, dict(tree)))


def _assert_same(a, b):
  a, b = _flat(a), _flat(b)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=str(key))


def test_published_file_round_trips_with_its_model_and_checksum(tmp_path, monkeypatch):
  model, variables = _init("test_cgmlp_bn")
  info = pretrained.save(tmp_path / "tiny.c10.msgpack", variables,
                         dict(INFO, model="test_cgmlp_bn", num_classes=10, val_top1=0.5))
  assert info["sha256"] == pretrained.sha256(tmp_path / "tiny.c10.msgpack")
  monkeypatch.setenv("CGMLP_JAX_WEIGHTS", str(tmp_path))
  assert pretrained.available() == ["tiny.c10"]
  loaded, loaded_variables, loaded_info = pretrained.load("tiny.c10")
  assert loaded == model and loaded_info["val_top1"] == 0.5
  _assert_same(loaded_variables, variables)  # params and the BatchNorm statistics
  np.testing.assert_allclose(loaded.apply(loaded_variables, IMAGES),
                             model.apply(variables, IMAGES), rtol=1e-6)

  with open(tmp_path / "tiny.c10.msgpack", "ab") as f:
    f.write(b"\0")
  with pytest.raises(WeightsError, match="sha256"):
    pretrained.load("tiny.c10")
  with pytest.raises(WeightsError, match=r"available: tiny\.c10"):
    pretrained.load("tiny.c100")


def test_fit_reinitialises_another_head_and_lists_what_does_not_fit():
  _, variables = _init("test_cgmlp", num_classes=10)
  model100 = models.get("test_cgmlp", num_classes=100)
  notes = []
  fitted = pretrained.fit(variables, model100, report=notes.append)
  assert notes == ["init: head re-initialised to zeros (10 classes in the weights, 100 in the "
                   "model)."]
  assert fitted["params"]["head"]["kernel"].shape == (16, 100)
  assert not fitted["params"]["head"]["kernel"].any()
  without_head = lambda tree: traverse_util.unflatten_dict(  # noqa: E731
      {k: v for k, v in _flat(tree).items() if "head" not in k})
  _assert_same(without_head(fitted), without_head(variables))
  with pytest.raises(WeightsError, match=r"missing \[.*gating.*unexpected \[.*stem/conv0.*"
                                         r"mis-shaped \[.*patch_proj"):
    pretrained.fit(variables, models.get("test_gmlp", num_classes=10))


def test_finetuning_starts_from_a_workdir_and_trains(straight_run, tmp_path, capfd):
  source = restore.load_variables(restore.find_checkpoint(straight_run.workdir))
  config = tiny_config(init=str(straight_run.workdir), num_epochs=1)
  # The state starts from the source's weights, sharded like a fresh one.
  trainer = trainer_lib.build(config, num_classes=10, steps_per_epoch=5)
  state = trainer.init(init_from.fit(init_from.read(config.init), trainer.model))
  _assert_same({"params": state.params}, source)
  assert state.params["head"]["kernel"].sharding == trainer.abstract_state.params["head"][
      "kernel"].sharding
  # A whole run from weights far from any init (a published-format file): it trains on from them.
  rng = np.random.default_rng(1)
  far = jax.tree.map(lambda a: a + rng.normal(0, 0.5, a.shape).astype(a.dtype), source)
  pretrained.save(tmp_path / "far.msgpack", far, dict(INFO, model="test_cgmlp", num_classes=10))
  run(tiny_config(init=str(tmp_path / "far.msgpack"), num_epochs=1), tmp_path / "ft")
  assert "Starting from the weights of init=" in capfd.readouterr().out
  tuned = restore.load_variables(restore.find_checkpoint(tmp_path / "ft"))
  distance = lambda a, b: sum(float(np.sum((x - y) ** 2))  # noqa: E731
                              for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  assert distance(tuned, far) < 0.01 * distance(source, far)


def test_init_from_a_timm_file_and_an_offline_hub_name(tmp_path, monkeypatch):
  model = models.get("test_gmlp", num_classes=10, gate_norm_eps=1e-5)
  state_dict = _timm_state_dict(model, num_classes=1000)
  np.savez(tmp_path / "gmlp.npz", **state_dict)
  source = init_from.read(str(tmp_path / "gmlp.npz"))
  _assert_same(init_from.fit(source, model, report=None),
               {"params": timm_import.from_timm_state_dict(state_dict, model, report=None)})

  import huggingface_hub  # pylint: disable=import-outside-toplevel

  def not_cached(repo_id, filename, local_files_only=False, **_):
    assert local_files_only, "must not try to download after the host probe failed"
    raise huggingface_hub.errors.LocalEntryNotFoundError("not cached")

  def offline(*_, **__):
    raise urllib.error.URLError(OSError("Name or service not known"))

  monkeypatch.setattr(huggingface_hub, "hf_hub_download", not_cached)
  monkeypatch.setattr("urllib.request.urlopen", offline)
  with pytest.raises(WeightsError) as error:
    init_from.read("hf-hub:timm/gmlp_s16_224.ra3_in1k")
  message = str(error.value)
  assert "\n" not in message and "offline" in message
  assert "https://huggingface.co/timm/gmlp_s16_224.ra3_in1k/resolve/main/model.safetensors" \
      in message


def test_finetune_config_takes_the_model_and_normalisation_of_its_weights(straight_run, tmp_path):
  config = finetune.get_config(f"init={straight_run.workdir},dataset=cifar100")
  assert (config.model, config.dataset, config.init) == ("test_cgmlp", "cifar100",
                                                         str(straight_run.workdir))
  assert tuple(config.augment.mean) == (0.4914, 0.4822, 0.4465)  # CIFAR-10's: the source's
  timm = finetune.get_config(f"init={tmp_path}/gmlp_b16_224.augreg.safetensors")
  assert (timm.model, tuple(timm.augment.mean)) == ("gmlp_b16", (0.485, 0.456, 0.406))
  assert timm.optimizer.learning_rate == 1e-4
  with pytest.raises(ConfigError, match="needs init="):
    finetune.get_config("dataset=cifar10")
  with pytest.raises(ConfigError, match="neither a workdir"):
    finetune.get_config(f"init={tmp_path}/missing")


def test_export_writes_the_best_checkpoint_with_its_record(straight_run, tmp_path):
  info = export(str(straight_run.workdir), "test_cgmlp.c10", out=str(tmp_path), command="cmd")
  best = straight_run.summary["best"]
  assert info["step"] == best["best_step"] and info["val_top1"] == pytest.approx(best["best"])
  assert (info["model"], info["num_classes"], info["command"]) == ("test_cgmlp", 10, "cmd")
  model, variables, _ = pretrained.load(tmp_path / "test_cgmlp.c10.msgpack")
  _, source, _ = restore.load_model(straight_run.workdir)
  assert model.num_classes == 10
  _assert_same(variables, source)


def _readme_weights():
  """``{name: parameter count}`` from README "Pretrained weights"'s table."""
  text = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
  return {m.group(1): int(m.group(2).replace(",", ""))
          for m in re.finditer(r"^\| `([\w.]+)` \| [^|]+ \| ([\d,]+) \|", text, re.MULTILINE)}


def test_every_published_file_matches_its_checksum_loads_and_has_the_readme_parameter_count(
    monkeypatch):
  """The checksum by hashlib here, not by the function under test (a change of hash function in
  pretrained.sha256 would pass a test comparing it with itself)."""
  monkeypatch.delenv("CGMLP_JAX_WEIGHTS", raising=False)
  readme = _readme_weights()
  names = pretrained.available()
  assert names and sorted(readme) == names
  for name in names:
    path = pretrained.weights_dir() / f"{name}.msgpack"
    info = json.loads(path.with_suffix(".json").read_text())
    assert hashlib.sha256(path.read_bytes()).hexdigest() == info["sha256"], name
    _, variables, _ = pretrained.load(name)
    count = sum(np.size(a) for a in jax.tree.leaves(variables["params"]))
    assert count == readme[name] == info["parameters"], name
    export_weights.check_name(name, pretrained.build(info), info)  # its name fits its model


def test_a_weights_file_of_random_bytes_without_a_checksum_is_one_line(tmp_path):
  path = tmp_path / "junk.c10.msgpack"
  path.write_bytes(np.random.default_rng(0).bytes(1000))
  path.with_suffix(".json").write_text(json.dumps(dict(INFO, model="test_cgmlp", num_classes=10)))
  with pytest.raises(WeightsError, match=r"junk.c10.msgpack is not a weights file \("):
    pretrained.load(path)
  path.write_bytes(b"\x07")  # msgpack for the number 7
  with pytest.raises(WeightsError, match=r"junk.c10.msgpack is not a weights file: it holds no "
                                         r"'params'"):
    pretrained.load(path)


def test_export_refuses_a_taken_name_unless_forced_and_a_name_of_another_model(straight_run,
                                                                              tmp_path):
  """A 3,290-parameter test model used to replace cgmlp_2conv_small.cifar10, exit status 0."""
  workdir = str(straight_run.workdir)
  first = export(workdir, "test_cgmlp.c10", out=str(tmp_path))
  before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
  with pytest.raises(WeightsError, match=r"test_cgmlp.c10.msgpack exists; choose another --name, "
                                         r"or pass --force to replace it"):
    export(workdir, "test_cgmlp.c10", out=str(tmp_path), command="again")
  assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
  assert export(workdir, "test_cgmlp.c10", out=str(tmp_path), force=True)["sha256"] \
      == first["sha256"]
  for name, part in (("cgmlp_2conv_small.cifar10", "cgmlp_2conv_small"),
                     ("test_gmlp.c10", "test_gmlp"), ("tiny.c10", "tiny")):
    with pytest.raises(WeightsError, match=rf"--name '{name}' names the model '{part}', but "
                                           r"'test_cgmlp' is exported"):
      export(workdir, name, out=str(tmp_path), force=True)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["test_cgmlp.c10.json",
                                                        "test_cgmlp.c10.msgpack"]
