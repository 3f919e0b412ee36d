"""The optimiser, built from the config: clipping -> AdamW (masked decay) [-> plateau scale].

Weight decay follows optax's convention, ``p -= lr * (adam_update + weight_decay * p)``: the decay is
multiplied by the learning rate. Keras/TF-Addons AdamW instead subtracts ``weight_decay * p`` with no
learning-rate factor, so a Keras ``weight_decay=wd_k`` at learning rate ``lr`` corresponds to
optax ``weight_decay = wd_k / lr`` (e.g. the Keras example's 1e-4 at lr 3e-3 -> 1/30 ~= 0.033).
Decay is masked off biases and normalisation scales (every parameter with fewer than 2 dims).

``schedule="plateau"`` reproduces Keras' ``ReduceLROnPlateau(monitor="val_loss")``: the train step
only multiplies updates by the current scale, and once per epoch the loop feeds the validation loss
to ``record_validation_loss``, which runs ``optax.contrib.reduce_on_plateau``'s own rule on it.
"""
import jax
import ml_collections
import optax
from optax import contrib


def learning_rate_schedule(config: ml_collections.ConfigDict, steps_per_epoch: int) -> optax.Schedule:
  opt = config.optimizer
  warmup = int(opt.warmup_epochs * steps_per_epoch)
  if opt.schedule == "cosine":
    total = config.num_epochs * steps_per_epoch
    return optax.warmup_cosine_decay_schedule(
        0.0, opt.learning_rate, warmup_steps=warmup, decay_steps=max(total, warmup + 1),
        end_value=opt.min_learning_rate)
  if warmup == 0:
    return optax.constant_schedule(opt.learning_rate)
  return optax.join_schedules([optax.linear_schedule(0.0, opt.learning_rate, warmup),
                               optax.constant_schedule(opt.learning_rate)], [warmup])


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _plateau(config: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs:
  opt = config.optimizer
  return contrib.reduce_on_plateau(factor=opt.plateau_factor, patience=opt.plateau_patience,
                                   accumulation_size=1)


def _scale_by_plateau(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Multiplies updates by the plateau scale; the state changes only in record_validation_loss."""

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: state.scale.astype(u.dtype) * u, updates), state

  return optax.GradientTransformation(_plateau(config).init, update)


def make_optimizer(config: ml_collections.ConfigDict,
                   steps_per_epoch: int) -> optax.GradientTransformation:
  opt = config.optimizer
  parts = []
  if opt.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  parts.append(optax.adamw(learning_rate_schedule(config, steps_per_epoch), b1=opt.b1, b2=opt.b2,
                           eps=opt.eps, weight_decay=opt.weight_decay, mask=_decay_mask))
  if opt.schedule == "plateau":
    parts.append(_scale_by_plateau(config))
  return optax.chain(*parts)


def record_validation_loss(config: ml_collections.ConfigDict, opt_state, val_loss: float):
  """Applies reduce-on-plateau's rule to this epoch's validation loss; a no-op otherwise."""
  if config.optimizer.schedule != "plateau":
    return opt_state
  *rest, plateau_state = opt_state
  _, plateau_state = _plateau(config).update({}, plateau_state, value=val_loss)
  return (*rest, plateau_state)


def plateau_scale(opt_state) -> jax.Array | float:
  """The current reduce-on-plateau factor on the learning rate (1.0 without the plateau)."""
  last = opt_state[-1]
  return last.scale if isinstance(last, contrib.ReduceLROnPlateauState) else 1.0
