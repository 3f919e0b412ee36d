"""The train state: everything a step changes, as one pytree (checkpointed whole).

``batch_stats`` holds a BatchNorm stem's running statistics (``conv_norm="batch"``); for every
other model it is ``{}``, which checkpoints leave out (train/checkpoint.py), so their tree is the
one this state had before the field existed and older checkpoints restore unchanged.
"""
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
  batch_stats: Any = struct.field(default_factory=dict)  # model.apply's "batch_stats", or {}

  @property
  def variables(self) -> dict[str, Any]:
    """The model's variables: what ``model.apply`` (and the eval step) takes."""
    if self.batch_stats:
      return {"params": self.params, "batch_stats": self.batch_stats}
    return {"params": self.params}


def create(model: nn.Module, tx: optax.GradientTransformation, seed: int,
           channels: int = 3, variables: dict[str, Any] | None = None) -> TrainState:
  """Initialises parameters, BatchNorm statistics (if any) and optimiser state (jit this with
  ``out_shardings``); ``variables``: start from these instead (fine-tuning, ``train.init_from``)."""
  init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
  if variables is None:
    images = jnp.zeros((1, model.image_size, model.image_size, channels), jnp.float32)
    variables = model.init(init_key, images)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=train_key, batch_stats=variables.get("batch_stats", {}))
