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
  tx = optim.make_optimizer(config, steps_per_epoch=1)
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
  tx = optim.make_optimizer(config, steps_per_epoch=1)
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
  tx = optim.make_optimizer(config, steps_per_epoch=1)
  state = tx.init({"w": jnp.ones(2)})
  assert optim.record_validation_loss(config, state, 3.0) is state
  assert optim.plateau_scale(state) == 1.0
