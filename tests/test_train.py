"""End-to-end tests of the training system on tiny mocked CIFAR-10 (8 fake CPU devices)."""
import functools
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from absl import flags
from ml_collections import config_flags

from cgmlp_jax import data as data_lib, parallel
from cgmlp_jax.train import restore
from cgmlp_jax.errors import ConfigError
from cgmlp_jax.train import config as config_lib, loop, optim, state as state_lib
from cgmlp_jax.train.checkpoint import CheckpointError, Checkpoints
from cgmlp_jax.train import step as step_lib
from tiny_run import NUM_EXAMPLES, final_params, run, tiny_config, whole_state



def test_train_and_evaluate_writes_metrics_checkpoints_and_summary(straight_run):
  workdir, summary, _ = straight_run
  assert summary["step"] == 2 * (NUM_EXAMPLES // 8) and summary["epochs"] == 2
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  splits = [l["split"] for l in lines]
  assert splits.count("val") == 2 and splits.count("test") == 1 and "train" in splits
  assert all(np.isfinite(l["loss"]) for l in lines)
  assert {"lr", "images_per_sec", "top5"} <= set(lines[0])
  assert 0.0 <= summary["test"]["top1"] <= summary["test"]["top5"] <= 1.0
  assert (workdir / "best").is_dir() and (workdir / "tensorboard").is_dir()
  assert json.loads((workdir / "config.json").read_text())["model"] == "test_cgmlp"
  steps = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [2, 4, 5, 6, 8, 10]  # every 2 steps and at each epoch end (5 steps/epoch)


def test_steps_compile_once_across_steps_epochs_and_partial_eval_batches(straight_run):
  # 10 train steps over 2 epochs (metrics reset at every log step), validation on 10 and test on
  # 40 examples in padded batches of 16: one program each.
  trainer = straight_run.trainer
  assert trainer.train_step._cache_size() == 1
  assert trainer.eval_step._cache_size() == 1
  assert trainer.record_validation_loss._cache_size() == 1


def test_resume_mid_epoch_reproduces_the_uninterrupted_run(straight_run, tmp_path, monkeypatch):
  workdir, summary, _ = straight_run
  resumed = tmp_path / "resumed"
  shutil.copytree(workdir, resumed)
  for step in ("8", "10"):  # as if the run had been killed at step 7, mid-epoch 2
    shutil.rmtree(resumed / "checkpoints" / step)
  shutil.rmtree(resumed / "best")
  monkeypatch.chdir(tmp_path)
  resumed_summary = run(tiny_config(), "resumed")  # a relative workdir, as users type it
  assert resumed_summary["step"] == summary["step"]
  jax.tree.map(np.testing.assert_array_equal, final_params(resumed), final_params(workdir))
  without_time = lambda history: [{k: v for k, v in r.items() if k != "wall_time_s"}  # noqa: E731
                                   for r in history]
  assert without_time(resumed_summary["history"]) == without_time(summary["history"])
  times = [r["wall_time_s"] for r in resumed_summary["history"]]
  assert times[1] > times[0] > 0  # training time accumulates across restarts


def test_finished_run_started_again_does_not_train_more(straight_run):
  workdir, summary, _ = straight_run
  again = run(tiny_config(), workdir)
  assert again["step"] == summary["step"]
  assert again["test"] == pytest.approx(summary["test"])


@pytest.fixture(scope="module")
def step_setup():
  config = tiny_config(label_smoothing=0.0)
  config.optimizer.learning_rate = 3e-3
  config.optimizer.schedule = "constant"
  config.optimizer.warmup_epochs = 0.0
  model = config_lib.build_model(config, num_classes=10)
  tx = optim.make_optimizer(config, optim.learning_rate_schedule(config, 10))
  augment = data_lib.AugmentConfig(image_size=16)
  state = jax.jit(functools.partial(state_lib.create, model, tx, 0))()
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (16, 16, 16, 3), dtype=np.uint8)
  labels = rng.integers(0, 10, (16,)).astype(np.int32)
  return model, tx, augment, state, images, labels


def test_sharded_step_equals_single_device_step(step_setup):
  model, tx, augment, state, images, labels = step_setup
  train_step = step_lib.make_train_step(model, tx, augment, 10, 0.1)
  metrics = step_lib.zero_metrics(train=True)
  single_device = jax.devices()[0]
  ref_state, ref_metrics = jax.jit(train_step)(*jax.device_put((state, metrics, images, labels),
                                                               single_device))
  mesh = parallel.make_mesh()
  assert mesh.size == 8
  rep, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  sharded = jax.jit(train_step, in_shardings=(rep, rep, batch, batch), out_shardings=(rep, rep))
  out_state, out_metrics = sharded(state, metrics, *parallel.to_global(mesh, (images, labels)))
  assert out_state.params["head"]["kernel"].sharding.is_fully_replicated
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-5, rtol=1e-5),
               (out_state.params, out_metrics), (ref_state.params, ref_metrics))


def test_small_model_overfits_one_batch(step_setup):
  model, tx, augment, state, images, labels = step_setup
  no_augment = data_lib.AugmentConfig(image_size=16, crop_padding=0, flip=False)
  tx = optax.adam(1e-2)
  state = state.replace(opt_state=tx.init(state.params))
  train_step = jax.jit(step_lib.make_train_step(model, tx, no_augment, 10, 0.0))
  losses = []
  for _ in range(50):
    metrics = step_lib.zero_metrics(train=True)
    state, metrics = train_step(state, metrics, images, labels)
    losses.append(float(metrics["loss"] / metrics["count"]))
  assert losses[-1] < 0.1 * losses[0], losses


def test_evaluation_counts_every_example_once(step_setup):
  model, tx, augment, state, _, _ = step_setup
  labels = np.array([1] + [0] * 5 + [2] * 15, np.int32)  # 21 examples; example 0 is not class 0
  split = data_lib.ArraySplit(images=np.zeros((21, 16, 16, 3), np.uint8), labels=labels,
                              num_classes=10, class_names=tuple("abcdefghij"))
  eval_step = jax.jit(step_lib.make_eval_step(model, augment))
  # The zero-initialised head gives equal logits, so every prediction is class 0.
  result = loop.evaluate(eval_step, state.params, split, 16, parallel.make_mesh())
  assert result["top1"] == pytest.approx(5 / 21)
  assert result["loss"] == pytest.approx(np.log(10), rel=1e-5)


@pytest.fixture(scope="module")
def batchnorm_setup(step_setup):
  """``test_cgmlp_bn`` (a BatchNorm stem), its state under plain SGD, no augmentation."""
  *_, images, labels = step_setup
  model = config_lib.build_model(tiny_config(model="test_cgmlp_bn"), num_classes=10)
  tx = optax.sgd(0.1)
  state = jax.jit(functools.partial(state_lib.create, model, tx, 0))()
  no_augment = data_lib.AugmentConfig(image_size=16, crop_padding=0, flip=False)
  return model, tx, no_augment, state, images, labels


def test_batchnorm_step_on_the_mesh_uses_the_global_batch_statistics(batchnorm_setup):
  model, tx, no_augment, state, images, labels = batchnorm_setup
  assert set(state.variables) == {"params", "batch_stats"}
  train_step = step_lib.make_train_step(model, tx, no_augment, 10, 0.0)
  mesh = parallel.make_mesh()
  rep, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  sharded = jax.jit(train_step, in_shardings=(rep, rep, batch, batch), out_shardings=(rep, rep))
  out_state, metrics = sharded(state, step_lib.zero_metrics(train=True),
                               *parallel.to_global(mesh, (images, labels)))
  # Reference: the model applied to the whole batch of 16 at once, on one device.
  apply = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
  inputs = data_lib.normalize(images, no_augment)
  logits, updated = apply(state.variables, inputs)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
  assert float(metrics["loss"] / metrics["count"]) == pytest.approx(float(loss), rel=1e-5)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6),
               out_state.batch_stats, updated["batch_stats"])
  # ... and not what one device's 2 examples would give.
  _, local = apply(state.variables, inputs[:2])
  assert not np.allclose(out_state.batch_stats["stem"]["norm0"]["mean"],
                         local["batch_stats"]["stem"]["norm0"]["mean"], rtol=1e-3)
  assert not np.allclose(out_state.batch_stats["stem"]["norm0"]["mean"], 0.0)


def test_skipped_nonfinite_step_keeps_the_batch_statistics(batchnorm_setup):
  model, _, no_augment, state, images, labels = batchnorm_setup
  tx = optax.sgd(float("nan"))  # every update non-finite
  train_step = jax.jit(step_lib.make_train_step(model, tx, no_augment, 10, 0.0))
  out_state, metrics = train_step(state, step_lib.zero_metrics(train=True), images, labels)
  assert int(metrics["nonfinite"]) == 1 and int(out_state.step) == 1
  jax.tree.map(np.testing.assert_array_equal, out_state.variables, state.variables)


def test_checkpoints_of_models_without_batchnorm_keep_their_tree(step_setup, batchnorm_setup,
                                                                tmp_path):
  """No ``batch_stats`` is written for them, and checkpoints written before the field existed
  (a state of step, params, opt_state, rng) restore; not into a model with BatchNorm, though."""
  _, _, _, state, _, _ = step_setup
  assert state.batch_stats == {} and set(state.variables) == {"params"}
  abstract = jax.eval_shape(lambda: state)
  old = {"step": state.step, "params": state.params, "opt_state": state.opt_state,
         "rng": state.rng}
  with ocp.CheckpointManager(tmp_path / "old" / "checkpoints", item_names=("state", "progress")
                             ) as manager:  # as the code before BatchNorm wrote them
    manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(old),
                                            progress=ocp.args.JsonSave({"history": []})))
  restored, _ = Checkpoints(tmp_path / "old", keep=1).restore_latest(abstract)
  assert isinstance(restored, state_lib.TrainState) and restored.batch_stats == {}
  jax.tree.map(np.testing.assert_array_equal, restored, state)
  checkpoints = Checkpoints(tmp_path / "new", keep=1)
  checkpoints.save(3, state, {"history": []})
  checkpoints.close()
  stored = ocp.StandardCheckpointHandler().metadata(tmp_path / "new" / "checkpoints" / "3" /
                                                    "state").tree
  assert set(stored) == set(old)
  bn_state, checkpoints = batchnorm_setup[3], Checkpoints(tmp_path / "new", keep=1)
  with pytest.raises(CheckpointError, match=r"does not fit the model(.|\n)*batch_stats/stem/norm0/"
                                            r"mean: in the model, not in the checkpoint"):
    checkpoints.restore_latest(jax.eval_shape(lambda: bn_state))
  checkpoints.close()


def test_batchnorm_run_checkpoints_its_statistics_and_resumes_exactly(tmp_path, monkeypatch):
  config = tiny_config(model="test_cgmlp_bn", num_epochs=1)  # checkpoints at steps 2, 4, 5
  summary = run(config, tmp_path / "straight")
  final = restore.load_variables(tmp_path / "straight" / "checkpoints" / "5")
  mean = final["batch_stats"]["stem"]["norm0"]["mean"]
  assert mean.shape == (8,) and np.all(np.isfinite(mean)) and np.any(mean != 0)
  # Restored mid-epoch, training continues from the checkpointed statistics as if never stopped.
  shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
  for step in ("4", "5"):
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / step)
  shutil.rmtree(tmp_path / "resumed" / "best")
  resumed = run(config, tmp_path / "resumed")
  jax.tree.map(np.testing.assert_array_equal,
               restore.load_variables(tmp_path / "resumed" / "checkpoints" / "5"), final)
  assert resumed["test"] == pytest.approx(summary["test"])  # evaluated with the statistics


def test_label_rank_agrees_with_top_k_including_ties():
  rng = np.random.default_rng(0)
  logits = rng.integers(0, 4, (64, 10)).astype(np.float32)  # many ties
  logits[0] = 0.0  # all classes tied: top_k ranks class 0 first
  labels = rng.integers(0, 10, (64,))
  rank = np.asarray(step_lib.label_rank(logits, labels))
  order = np.asarray(jax.lax.top_k(logits, 10)[1])  # (B, 10), lower index first among ties
  np.testing.assert_array_equal(rank, np.argmax(order == labels[:, None], axis=-1))
  assert rank[0] == labels[0]


def test_flip_evaluation_is_mirror_invariant(step_setup):
  model, _, augment, state, images, labels = step_setup
  params = jax.tree.map(lambda x: x + 0.1 * np.sin(np.arange(x.size).reshape(x.shape)),
                        state.params)  # no zero-initialised head: predictions depend on the image
  mask = np.ones_like(labels)
  evaluate = {flip: jax.jit(step_lib.make_eval_step(model, augment, flip)) for flip in (0, 1)}
  loss = {(flip, mirror): float(evaluate[flip](params, images[:, :, ::-1] if mirror else images,
                                               labels, mask)["loss"])
          for flip in (0, 1) for mirror in (0, 1)}
  assert loss[1, 0] == pytest.approx(loss[1, 1], rel=1e-5)
  assert loss[0, 0] != pytest.approx(loss[0, 1], rel=1e-3)
  assert loss[1, 0] <= (loss[0, 0] + loss[0, 1]) / 2 + 1e-4  # cross-entropy: convex in the logits


@pytest.mark.parametrize("overrides, message", [
    (dict(batch_size=12), r"batch_size=12 is not divisible by the 8 devices"),
    (dict(eval_batch_size=20), r"eval_batch_size=20 is not divisible by the 8 devices"),
    (dict(model="gmlp_tiny"), r"Unknown model variant 'gmlp_tiny'"),
    (dict(model_kw={"image_size": 18}), r"Patch size 2 does not divide the 9x9"),
    (dict(dtype="float16"), r"dtype='float16'"),
    (dict(holdout_fraction=1.0), r"holdout_fraction must be in \[0, 1\)"),
    (dict(num_epochs=0), r"num_epochs must be positive"),
    (dict(holdout_fraction=0.0), r"'plateau' and early_stopping.patience > 0 need a validation"),
    (dict(cpu_devices=-1), r"cpu_devices must be >= 0"),
    (dict(eval_batch_size=0), r"eval_batch_size must be positive"),
    (dict(max_steps_ahead=0), r"max_steps_ahead must be positive"),
    (dict(optimizer=dict(learning_rate=-1e-3)), r"learning_rate=-0.001 cannot train; it must be > 0"),
    (dict(optimizer=dict(weight_decay=-0.1)), r"weight_decay=-0.1 cannot train; it must be >= 0"),
    (dict(label_smoothing=1.0), r"label_smoothing=1.0 cannot train; it must be in \[0, 1\)"),
    (dict(model_kw=dict(drop_path_rate=1.0)), r"model_kw.drop_path_rate=1.0 cannot train"),
    (dict(model_kw=dict(dropout_rate=-0.1)), r"model_kw.dropout_rate=-0.1 cannot train"),
    (dict(augment=dict(zoom=1.5)), r"zoom must be in \[0, 1\)"),
    # Refused here, before the workdir or the data, since issue 29:
    (dict(optimizer=dict(learning_rate=float("nan"))),
     r"optimizer.learning_rate=nan cannot train; it must be a finite number"),
    (dict(optimizer=dict(learning_rate=float("inf"))), r"learning_rate=inf cannot train"),
    (dict(augment=dict(mean=(0.5, float("nan"), 0.5))), r"augment.mean=\(0.5, nan, 0.5\)"),
    (dict(model_kw=dict(num_classes=10)),
     r"model_kw.num_classes cannot be set: it is the dataset's class count"),
    (dict(seed=-1), r"seed must be an integer >= 0; got -1"),
    (dict(skip_nonfinite_limit=0), r"skip_nonfinite_limit must be an integer >= 1"),
    (dict(input="stream"), r"input='stream' crops on the host"),
    (dict(train_split="train[:50%]"), r"Cannot hold out a fraction of the already sliced"),
    (dict(augment=dict(mean=(0.5,), std=(0.25,))),
     r"cifar10 images have 3 channels but the normalisation has 1, augment.mean / augment.std"),
    (dict(dataset="kmnist"), r"kmnist images have 1 channels but the normalisation has 3, its "
                             r"default \(ImageNet's"),
])
def test_bad_configs_fail_before_any_data_or_compile(overrides, message, tmp_path):
  config = tiny_config()
  config.early_stopping.patience = 2
  config.update(overrides)
  with pytest.raises(ConfigError, match=message):
    loop.train_and_evaluate(config, str(tmp_path))  # no mock_data: would fail on data if reached
  assert not list(tmp_path.iterdir())  # nothing written


def test_unknown_config_fields_are_rejected():
  config = tiny_config()
  with config.unlocked():
    config.optimizer.lerning_rate = 1.0
  with pytest.raises(ValueError, match=r"Unknown config field 'optimizer.lerning_rate'"):
    config_lib.validate(config)
  with pytest.raises(AttributeError):
    config_lib.base_config().lock().batchsize = 3  # locked configs reject new keys outright


def test_missing_dataset_fails_before_the_model_is_built(tmp_path, monkeypatch):
  config = tiny_config(dataset="cifar10", data_dir=str(tmp_path / "empty"))
  config.download = False  # the test must not download CIFAR-10 on a machine with internet
  built = []
  monkeypatch.setattr(config_lib, "build_model", lambda *a, **k: built.append(1))
  monkeypatch.setattr(config_lib, "validate", lambda c: None)
  with pytest.raises(data_lib.DataError, match=r"tfds build cifar10"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not built


@pytest.mark.parametrize("path, arg, model", [
    ("configs/cgmlp.py", None, "cgmlp_2conv"),
    ("configs/cgmlp.py", "convs=1", "cgmlp_1conv"),
    ("configs/cgmlp.py", "mixed,small", "cgmlp_2conv_mixed_small"),
    ("configs/gmlp.py", "small", "gmlp_small"),
    ("configs/paper.py", "model=gmlp", "gmlp_paper"),
    ("configs/paper.py", "model=cgmlp_1conv,small", "cgmlp_1conv_small"),
    ("configs/paper.py", "model=cgmlp_keras_2conv,epochs=60,stop_on=none", "cgmlp_keras_2conv"),
    ("configs/cpu_track.py", "model=gmlp", "gmlp_small"),
    ("configs/imagenet.py", "variant=ti16,dataset=imagenette", "gmlp_ti16"),
    ("configs/search_winner.py", "dataset=cifar100", "cgmlp_2conv_bn_small"),
])
def test_config_files_parse_override_and_validate(path, arg, model):
  argv = ["launch.py", f"--config={path}" + (f":{arg}" if arg else ""), "--config.num_epochs=3"]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True,
                                  sys_argv=argv)  # overrides are found in argv, as in launch.py
  flag_values(argv)
  config = flag_values.config
  assert config.model == model and config.num_epochs == 3
  config_lib.validate(config)


def test_config_argument_errors():
  with pytest.raises(ValueError, match=r"Unknown config argument 'conv'"):
    config_lib.parse_arg("conv=1", convs=2)


def test_channel_count_mismatch_fails_before_the_model_is_built(tmp_path):
  config = tiny_config()
  config.augment.mean, config.augment.std = (0.5,), (0.25,)
  with pytest.raises(ValueError, match=r"cifar10 images have 3 channels but the normalisation has 1"):
    run(config, tmp_path)


def test_normalisation_is_the_datasets_own_unless_set():
  config = tiny_config()
  for dataset, mean in (("cifar10", 0.4914), ("cifar100", 0.5071), ("cifar100:3.0.2", 0.5071),
                        ("some_new_dataset", 0.485)):  # unknown: ImageNet's, the documented fallback
    config.dataset = dataset
    assert config_lib.augment_config(config, 16).mean[0] == mean
  config.augment.mean, config.augment.std = (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)
  assert config_lib.augment_config(config, 16).std == (0.2, 0.2, 0.2)


SPLIT_CPU_SCRIPT = """
import jax
from cgmlp_jax import parallel
assert parallel.split_cpu({n}) is {set_here}
assert jax.device_count() == {expected}, jax.device_count()
assert parallel.split_cpu(5) is False  # backends running: their devices stay
assert jax.device_count() == {expected}
"""


@pytest.mark.parametrize("n, xla_flags, set_here, expected", [
    (3, "", True, 3),
    (0, "", False, 1),  # 0: JAX's default
    (3, "--xla_force_host_platform_device_count=2", False, 2),  # the user's XLA_FLAGS win
])
def test_split_cpu_sets_the_cpu_device_count_only_before_jax_starts(n, xla_flags, set_here,
                                                                   expected):
  # A fresh interpreter: this one's backends already run with the tests' 8 devices.
  env = {**os.environ, "XLA_FLAGS": xla_flags, "JAX_PLATFORMS": "cpu"}
  script = SPLIT_CPU_SCRIPT.format(n=n, set_here=set_here, expected=expected)
  result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=120, cwd=pathlib.Path(__file__).parent.parent)
  assert result.returncode == 0, result.stderr[-2000:]


def test_a_nan_gradient_leaves_the_whole_state_bit_identical(step_setup, monkeypatch):
  """Adam's moments included: an infinite learning rate (finite gradients) left them finite
  whether or not the step kept them, so only a NaN gradient tells."""
  model, tx, augment, state, images, labels = step_setup
  zeros = step_lib.zero_metrics(train=True)
  state, _ = jax.jit(step_lib.make_train_step(model, tx, augment, 10, 0.0))(
      state, zeros, images, labels)  # moments no longer zero
  cross_entropy = optax.softmax_cross_entropy
  monkeypatch.setattr(optax, "softmax_cross_entropy",
                      lambda logits, labels: cross_entropy(logits * jnp.nan, labels))
  nan_step = jax.jit(step_lib.make_train_step(model, tx, augment, 10, 0.0))
  out, metrics = nan_step(state, zeros, images, labels)
  assert (int(metrics["nonfinite"]), int(metrics["first_nonfinite_step"])) == (1, 2)
  assert int(metrics["last_finite_step"]) == 0 and int(out.step) == 2
  jax.tree.map(np.testing.assert_array_equal, out.replace(step=state.step), state)


def _plateau_replay(losses, factor, patience, rtol):
  """Keras' ReduceLROnPlateau(monitor="val_loss") on recorded losses: the scale it ends at."""
  best, waited, scale = float("inf"), 0, 1.0
  for loss in losses:
    if loss < (1 - rtol) * best:
      best, waited = loss, 0
      continue
    waited += 1
    if waited >= patience:
      scale, waited = scale * factor, 0
  return scale


def _plateau_scale(workdir):
  leaves = jax.tree_util.tree_flatten_with_path(whole_state(workdir)["opt_state"])[0]
  return next(float(x) for path, x in leaves  # the plateau's: not a moment of a norm's scale
              if jax.tree_util.keystr(path).endswith("['scale']") and np.ndim(x) == 0)


def test_early_stopping_and_the_plateau_fire_and_a_resume_after_a_bad_epoch_matches(tmp_path):
  """Both rules fire in 4 of 5 epochs (a learning rate high enough for validation loss to rise).
  The run resumed after its first bad epoch stops at the same epoch with the same scale, best,
  test result and parameters: early stopping's state is restored, the plateau fed the loss."""
  config = tiny_config(num_epochs=5)
  config.optimizer.learning_rate, config.optimizer.warmup_epochs = 0.1, 0.0
  config.early_stopping.update(metric="val_loss", mode="min", patience=2)
  straight = run(config, tmp_path / "straight")
  history = straight["history"]
  losses = [r["val_loss"] for r in history]
  assert straight["best"]["stopped"] and len(history) == 4  # stopped early, at epoch 4 of 5
  scale = _plateau_scale(tmp_path / "straight")
  assert scale == _plateau_replay(losses, 0.5, 1, 1e-4) < 0.5  # fired twice
  first_bad = next(r for i, r in enumerate(history) if i and r["val_loss"] >= min(losses[:i]))
  assert first_bad["epoch"] < 4

  shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
  for path in (tmp_path / "resumed" / "checkpoints").iterdir():
    if path.name.isdigit() and int(path.name) > first_bad["step"]:
      shutil.rmtree(path)
  (tmp_path / "resumed" / "summary.json").unlink()
  resumed = run(config, tmp_path / "resumed")
  assert [r["epoch"] for r in resumed["history"]] == [r["epoch"] for r in history]
  assert resumed["best"] == straight["best"] and resumed["test"] == straight["test"]
  assert _plateau_scale(tmp_path / "resumed") == scale
  jax.tree.map(np.testing.assert_array_equal, final_params(tmp_path / "resumed"),
               final_params(tmp_path / "straight"))
