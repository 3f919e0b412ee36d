"""The optimiser: decay mask, schedules, and reduce-on-plateau driven by validation loss."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgmlp_jax.train import config as config_lib, optim


def _config(**optimizer):
  config = config_lib.base_config()
  config.num_epochs = 10
  config.optimizer.update(dict(grad_clip_norm=0.0, **optimizer))
  return config


def test_weight_decay_skips_biases_and_scales():
  config = _config(learning_rate=0.1, weight_decay=0.5, schedule="constant", warmup_epochs=0.0)
  tx = optim.make_optimizer(config, optim.learning_rate_schedule(config, 1))
  params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))}
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  np.testing.assert_allclose(updates["kernel"], -0.1 * 0.5 * np.ones((2, 2)))  # lr * wd * p
  np.testing.assert_array_equal(updates["bias"], 0.0)


def test_cosine_schedule_warms_up_then_decays_to_the_minimum():
  config = _config(learning_rate=1.0, warmup_epochs=1.0, min_learning_rate=0.1)
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=10)
  assert schedule(0) == 0.0 and schedule(10) == pytest.approx(1.0)
  assert schedule(100) == pytest.approx(0.1) and schedule(55) < schedule(20)


def test_plateau_halves_the_step_after_patience_bad_validation_epochs():
  config = _config(learning_rate=0.1, schedule="plateau", warmup_epochs=0.0, plateau_factor=0.5,
                   plateau_patience=2, weight_decay=0.0)
  tx = optim.make_optimizer(config, optim.learning_rate_schedule(config, 1))
  params = {"w": jnp.ones((3,))}
  state = tx.init(params)
  for val_loss in (1.0, 0.9, 0.95, 0.92):  # best 0.9, then two epochs without improvement
    assert optim.plateau_scale(state) == 1.0
    state = optim.record_validation_loss(config, state, val_loss)
  assert optim.plateau_scale(state) == pytest.approx(0.5)
  # The train step only applies the scale: many updates leave it unchanged.
  grads = {"w": jnp.ones((3,))}
  first, state = tx.update(grads, state, params)
  second, state = tx.update(grads, state, params)
  assert optim.plateau_scale(state) == pytest.approx(0.5)
  np.testing.assert_allclose(first["w"], -0.05, rtol=1e-5)  # Adam's first step is lr * sign


def test_record_validation_loss_is_a_no_op_without_the_plateau():
  config = _config()
  tx = optim.make_optimizer(config, optim.learning_rate_schedule(config, 1))
  state = tx.init({"w": jnp.ones(2)})
  assert optim.record_validation_loss(config, state, 3.0) is state
  assert optim.plateau_scale(state) == 1.0


def test_absolute_decay_hits_every_variable_and_ignores_the_plateau():
  # TF-Addons AdamW (the Keras example): p -= lr * adam + wd * p, biases included, and a
  # plateau halving scales only the Adam part.
  config = _config(learning_rate=0.1, weight_decay=1e-2, weight_decay_mode="absolute",
                   decay_mask="all", schedule="plateau", warmup_epochs=0.0, plateau_patience=0)
  tx = optim.make_optimizer(config, optim.learning_rate_schedule(config, 1))
  params = {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 3.0)}
  state = tx.init(params)
  state = optim.record_validation_loss(config, state, 1.0)  # patience 0: halves at once
  assert optim.plateau_scale(state) == pytest.approx(0.5)
  grads = jax.tree.map(jnp.ones_like, params)
  updates, _ = tx.update(grads, state, params)
  # Adam's first step is lr * sign(g) = 0.1, halved by the plateau; the decay is not.
  np.testing.assert_allclose(updates["kernel"], -0.05 - 1e-2 * 2.0, rtol=1e-5)
  np.testing.assert_allclose(updates["bias"], -0.05 - 1e-2 * 3.0, rtol=1e-5)


# The Keras example's published validation losses, epochs 1-50 (its keras-io training log): its
# ReduceLROnPlateau (patience 5, min_delta 1e-4) halved the rate after epochs 34, 41 and 49.
_KERAS_VAL_LOSS = (
    3.5629, 3.2899, 3.1152, 2.9771, 2.8807, 2.7246, 2.7022, 2.6289, 2.5353, 2.5271, 2.4553, 2.3841,
    2.4306, 2.4053, 2.3443, 2.3150, 2.3590, 2.3140, 2.3012, 2.3294, 2.2498, 2.2915, 2.2448, 2.2526,
    2.2430, 2.2053, 2.2313, 2.2392, 2.1600, 2.2069, 2.1929, 2.2176, 2.2321, 2.1895, 2.1024, 2.0712,
    2.1219, 2.0931, 2.0910, 2.1388, 2.1121, 2.1157, 2.1048, 2.0681, 2.0965, 2.0869, 2.1120, 2.1257,
    2.0961, 2.0897)


def test_the_paper_recipe_replays_the_keras_plateau_halvings():
  from configs import paper
  config = paper.get_config("model=gmlp_keras")
  tx = optim.make_optimizer(config, optim.learning_rate_schedule(config, 1))
  state, scale, halvings = tx.init({"w": jnp.ones((2, 2))}), 1.0, []
  for epoch, val_loss in enumerate(_KERAS_VAL_LOSS, start=1):
    state = optim.record_validation_loss(config, state, val_loss)
    if float(optim.plateau_scale(state)) != scale:
      scale = float(optim.plateau_scale(state))
      halvings.append(epoch)
  assert halvings == [34, 41, 49] and scale == pytest.approx(0.125)
