"""The optimiser, built from the config: clipping -> AdamW [-> plateau scale] [-> absolute decay].

Weight decay comes in two conventions (``optimizer.weight_decay_mode``):
- ``"times_lr"`` (optax's, the default): ``p -= lr * (adam_update + weight_decay * p)``, the decay
  multiplied by the learning rate (schedule and plateau scale included);
- ``"absolute"`` (TensorFlow Addons' ``AdamW``, which the Keras CIFAR-100 example used):
  ``p -= lr * adam_update + weight_decay * p`` every step, not scaled by the learning rate, so a
  plateau halving leaves the decay as it is. At a constant learning rate ``lr`` the two agree when
  ``weight_decay_times_lr = weight_decay_absolute / lr``.
``optimizer.decay_mask`` picks what decays: ``"kernels"`` (every parameter with 2 or more dims:
biases and normalisation scales are spared) or ``"all"`` (as TF-Addons does).

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


def _decay_mask(config: ml_collections.ConfigDict):
  if config.optimizer.decay_mask == "all":
    return None
  return lambda params: jax.tree.map(lambda p: p.ndim > 1, params)


def _plateau(config: ml_collections.ConfigDict) -> optax.GradientTransformationExtraArgs:
  """A new best validation loss is one below ``(1 - plateau_rtol) * best - plateau_atol``
  (Keras' ``min_delta`` is ``plateau_atol`` with ``plateau_rtol=0``)."""
  opt = config.optimizer
  return contrib.reduce_on_plateau(factor=opt.plateau_factor, patience=opt.plateau_patience,
                                   rtol=opt.plateau_rtol, atol=opt.plateau_atol,
                                   accumulation_size=1)


def _scale_by_plateau(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Multiplies updates by the plateau scale; the state changes only in record_validation_loss."""

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: state.scale.astype(u.dtype) * u, updates), state

  return optax.GradientTransformation(_plateau(config).init, update)


def make_optimizer(config: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  """The run's optimiser around its learning-rate ``schedule`` (``learning_rate_schedule``)."""
  opt = config.optimizer
  parts = []
  if opt.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  times_lr = opt.weight_decay_mode == "times_lr"
  parts.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2,
                           eps=opt.eps, weight_decay=opt.weight_decay if times_lr else 0.0,
                           mask=_decay_mask(config)))
  if opt.schedule == "plateau":
    parts.append(_scale_by_plateau(config))
  if not times_lr and opt.weight_decay:
    # Updates are descent steps here (already times -lr): adding -wd * p subtracts wd * p.
    parts.append(optax.add_decayed_weights(-opt.weight_decay, mask=_decay_mask(config)))
  return optax.chain(*parts)


def _plateau_index(opt_state) -> int | None:
  found = [i for i, s in enumerate(opt_state) if isinstance(s, contrib.ReduceLROnPlateauState)]
  return found[0] if found else None


def record_validation_loss(config: ml_collections.ConfigDict, opt_state, val_loss: float):
  """Applies reduce-on-plateau's rule to this epoch's validation loss; a no-op otherwise."""
  if config.optimizer.schedule != "plateau":
    return opt_state
  i = _plateau_index(opt_state)
  _, plateau_state = _plateau(config).update({}, opt_state[i], value=val_loss)
  return (*opt_state[:i], plateau_state, *opt_state[i + 1:])


def plateau_scale(opt_state) -> jax.Array | float:
  """The current reduce-on-plateau factor on the learning rate (1.0 without the plateau)."""
  i = _plateau_index(opt_state)
  return 1.0 if i is None else opt_state[i].scale
