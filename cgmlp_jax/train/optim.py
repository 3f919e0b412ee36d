"""The optimiser, built from the config: clipping -> AdamW (masked decay) [-> reduce on plateau].

Weight decay follows optax's convention, ``p -= lr * (adam_update + weight_decay * p)``: the decay is
multiplied by the learning rate. Keras/TF-Addons AdamW instead subtracts ``weight_decay * p`` with no
learning-rate factor, so a Keras ``weight_decay=wd_k`` at learning rate ``lr`` corresponds to
optax ``weight_decay = wd_k / lr`` (e.g. the Keras example's 1e-4 at lr 3e-3 -> 1/30 ~= 0.033).
Decay is masked off biases and normalisation scales (every parameter with fewer than 2 dims).
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
  # "constant" and "plateau" (whose reductions are a separate transformation) warm up linearly.
  return optax.join_schedules(
      [optax.linear_schedule(0.0, opt.learning_rate, max(warmup, 1)),
       optax.constant_schedule(opt.learning_rate)], [max(warmup, 1)])


def _decay_mask(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def make_optimizer(config: ml_collections.ConfigDict,
                   steps_per_epoch: int) -> optax.GradientTransformationExtraArgs:
  """The step calls ``update(grads, state, params, value=loss)``; ``value`` feeds the plateau."""
  opt = config.optimizer
  parts = []
  if opt.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  parts.append(optax.adamw(learning_rate_schedule(config, steps_per_epoch), b1=opt.b1, b2=opt.b2,
                           eps=opt.eps, weight_decay=opt.weight_decay, mask=_decay_mask))
  if opt.schedule == "plateau":
    # Judged once per epoch on the epoch-mean training loss (optax accumulates `value`).
    parts.append(contrib.reduce_on_plateau(
        factor=opt.plateau_factor, patience=opt.plateau_patience,
        accumulation_size=steps_per_epoch))
  return optax.chain(*parts)


def plateau_scale(opt_state) -> jax.Array | float:
  """The current reduce-on-plateau factor on the learning rate (1.0 without the plateau)."""
  for s in opt_state:
    if isinstance(s, contrib.ReduceLROnPlateauState):
      return s.scale
  return 1.0
