"""Everything compiled for a run, built once from the config: model, optimiser, mesh, shardings,
and the jitted init / train / eval functions. The loop and the benchmark share it, so what the
benchmark measures is exactly the step that trains.
"""
import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import optax

from cgmlp_jax import data as data_lib, parallel
from cgmlp_jax.train import config as config_lib, optim, state as state_lib, step as step_lib


@dataclasses.dataclass(frozen=True)
class Trainer:
  model: nn.Module
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  augment_config: data_lib.AugmentConfig
  mesh: jax.sharding.Mesh
  abstract_state: Any  # TrainState of ShapeDtypeStructs carrying their shardings
  # () -> a fresh state; (variables) -> a state starting from those weights (train.init_from)
  init: Callable[..., state_lib.TrainState]
  # (state, metrics, images uint8 (B,H,W,C), labels (B,)) -> (state, metrics); donates both.
  train_step: Callable
  # (variables (TrainState.variables), images, labels, mask) -> metric sums
  eval_step: Callable
  # (opt_state, val_loss) -> opt_state: the per-epoch reduce-on-plateau update
  record_validation_loss: Callable


def build(config: ml_collections.ConfigDict, num_classes: int, steps_per_epoch: int) -> Trainer:
  model = config_lib.build_model(config, num_classes)
  augment_config = config_lib.augment_config(config, model.image_size)
  schedule = optim.learning_rate_schedule(config, steps_per_epoch)
  tx = optim.make_optimizer(config, schedule)
  mesh = parallel.make_mesh()
  rep, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)

  create = functools.partial(state_lib.create, model, tx, config.seed,
                             channels=len(augment_config.mean))
  abstract = jax.eval_shape(create)
  shardings = jax.tree.map(lambda _: rep, abstract)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                          abstract, shardings)
  train_step = step_lib.make_train_step(model, tx, augment_config, num_classes,
                                        config.label_smoothing)
  return Trainer(
      model=model, tx=tx, schedule=schedule,
      augment_config=augment_config, mesh=mesh, abstract_state=abstract,
      init=jax.jit(lambda variables=None: create(variables=variables), out_shardings=shardings),
      train_step=jax.jit(train_step, in_shardings=(shardings, rep, batch, batch),
                         out_shardings=(shardings, rep), donate_argnums=(0, 1)),
      eval_step=jax.jit(step_lib.make_eval_step(model, augment_config, config.eval_flip),
                        out_shardings=rep),
      record_validation_loss=jax.jit(functools.partial(optim.record_validation_loss, config),
                                     out_shardings=shardings.opt_state, donate_argnums=0))
