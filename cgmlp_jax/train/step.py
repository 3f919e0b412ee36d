"""Pure train and eval steps; the loop jits them over the mesh.

Augmentation runs inside the train step, on device, with per-example keys derived from the state's
key and the step number, so a resumed run draws exactly the numbers an uninterrupted one would.
Metrics come back as on-device sums (loss, top-1, top-5, count) that the loop adds up and fetches
once per log interval.

A step whose loss, gradients or updates are not finite changes nothing but the step counter: the state
never holds NaN/Inf, so no checkpoint can. The train metrics count such steps ("nonfinite") and keep
the first one's number ("first_nonfinite_step") and the last finite one's ("last_finite_step", 0
if none); the loop stops or skips on them (config ``skip_nonfinite_steps``, ``train/nonfinite.py``)
when it next reads the metrics, without a host sync per step.

A model with a BatchNorm stem (``conv_norm="batch"``) trains on the batch's statistics and the step
stores the updated running averages in ``state.batch_stats`` (kept unchanged by a skipped step);
under the data-parallel mesh the statistics are the global batch's. Evaluation uses the averages.
"""
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from cgmlp_jax import data as data_lib, models
from cgmlp_jax.train.state import TrainState

Metrics = dict[str, jax.Array]  # sums over examples; "count" is the number of examples
NO_STEP = jnp.iinfo(jnp.int32).max  # "first_nonfinite_step" when every step was finite


def zero_metrics(train: bool = False) -> Metrics:
  sums = {k: jnp.zeros((), jnp.float32) for k in ("loss", "top1", "top5", "count")}
  if train:
    sums.update(nonfinite=jnp.zeros((), jnp.int32),
                first_nonfinite_step=jnp.full((), NO_STEP, jnp.int32),
                last_finite_step=jnp.zeros((), jnp.int32))
  return sums


def label_rank(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Each label's 0-based rank among its row's logits, ties going to the lower class index.

  logits: (B, K), labels: (B,) -> (B,) int32. The label is in the top k iff its rank < k, the same
  verdict as ``jax.lax.top_k`` (which also puts the lower index first among equal values); but
  this is elementwise work and a row reduction, which stays sharded over the batch, where XLA
  gathers the whole batch's logits onto every device for ``top_k``.
  """
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)  # (B, 1)
  classes = jnp.arange(logits.shape[-1])
  ahead = (logits > label_logit) | ((logits == label_logit) & (classes < labels[:, None]))
  return jnp.sum(ahead, axis=-1, dtype=jnp.int32)


def _metric_sums(logits, labels, loss_per_example, weights) -> Metrics:
  # logits: (B, K) f32, labels: (B,) int, loss_per_example / weights: (B,)
  rank = label_rank(logits, labels)
  top1, top5 = (rank < 1).astype(jnp.float32), (rank < 5).astype(jnp.float32)
  return {"loss": jnp.sum(loss_per_example * weights), "top1": jnp.sum(top1 * weights),
          "top5": jnp.sum(top5 * weights), "count": jnp.sum(weights)}


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    augment_config: data_lib.AugmentConfig, num_classes: int,
                    label_smoothing: float) -> Callable:
  """``train_step(state, metrics, images_uint8 (B,H,W,C), labels (B,)) -> (state, metrics)``."""

  def train_step(state: TrainState, metrics: Metrics, images: jax.Array, labels: jax.Array):
    key = jax.random.fold_in(state.rng, state.step)
    augment_key, dropout_key = jax.random.split(key)
    onehot = jax.nn.one_hot(labels, num_classes)
    inputs, targets = data_lib.augment(augment_key, images, onehot, augment_config,
                                          dtype=model.dtype or jnp.float32)
    targets = optax.smooth_labels(targets, label_smoothing)  # (B, K)

    def loss_fn(params):
      kw = dict(train=True, rngs={"dropout": dropout_key})
      if state.batch_stats:  # a BatchNorm stem: normalise with this batch's statistics
        logits, updated = model.apply({"params": params, "batch_stats": state.batch_stats},
                                      inputs, mutable=["batch_stats"], **kw)
        batch_stats = updated["batch_stats"]
      else:
        logits, batch_stats = model.apply({"params": params}, inputs, **kw), state.batch_stats
      per_example = optax.softmax_cross_entropy(logits, targets)
      return jnp.mean(per_example), (logits, per_example, batch_stats)

    (loss, (logits, per_example, batch_stats)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    finite = (jnp.isfinite(loss) & jnp.isfinite(optax.tree.norm(grads))
              & jnp.isfinite(optax.tree.norm(updates)))
    keep_if_finite = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
    params, opt_state, batch_stats = jax.tree.map(
        keep_if_finite, (params, opt_state, batch_stats),
        (state.params, state.opt_state, state.batch_stats))
    sums = _metric_sums(logits, labels, per_example, jnp.ones_like(per_example))
    sums = jax.tree.map(lambda x: jnp.where(finite, x, 0.0), sums)
    metrics = {**jax.tree.map(jnp.add, {k: metrics[k] for k in sums}, sums),
               "nonfinite": metrics["nonfinite"] + (~finite).astype(jnp.int32),
               "first_nonfinite_step": jnp.where(
                   finite, metrics["first_nonfinite_step"],
                   jnp.minimum(metrics["first_nonfinite_step"], state.step + 1)),
               "last_finite_step": jnp.where(finite, state.step + 1, metrics["last_finite_step"])}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                         batch_stats=batch_stats), metrics

  return train_step


def make_eval_step(model: nn.Module, augment_config: data_lib.AugmentConfig,
                   flip: bool = False) -> Callable:
  """``eval_step(variables, images_uint8, labels, mask) -> metric sums`` over the real examples.

  ``variables``: the model's (``TrainState.variables``; a BatchNorm stem's running statistics are
  used), or its parameters alone for a model without BatchNorm (``models.as_variables``).

  ``flip``: test-time augmentation, the logits averaged over each image and its mirror image (the
  training flips images, so the model has learnt both; predictions become mirror-invariant).
  """

  def eval_step(variables, images: jax.Array, labels: jax.Array, mask: jax.Array) -> Metrics:
    variables = models.as_variables(variables)
    inputs = data_lib.normalize(images, augment_config, dtype=model.dtype or jnp.float32)
    logits = model.apply(variables, inputs, train=False)  # (B, K)
    if flip:
      mirrored = model.apply(variables, inputs[:, :, ::-1], train=False)
      logits = (logits + mirrored) / 2
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return _metric_sums(logits, labels, per_example, mask.astype(jnp.float32))

  return eval_step
