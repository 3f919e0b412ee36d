"""The train state: everything a step changes, as one pytree (checkpointed whole)."""
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


class TrainState(struct.PyTreeNode):
  step: jax.Array  # () int32: optimizer steps taken; also fixes the data position
  params: Any
  opt_state: Any
  rng: jax.Array  # (2,) uint32 raw key data; each step's key is fold_in(rng, step)


def create(model: nn.Module, tx: optax.GradientTransformation, seed: int,
           channels: int = 3) -> TrainState:
  """Initialises parameters and optimiser state (jit this with ``out_shardings``)."""
  init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
  images = jnp.zeros((1, model.image_size, model.image_size, channels), jnp.float32)
  params = model.init(init_key, images)["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=train_key)
