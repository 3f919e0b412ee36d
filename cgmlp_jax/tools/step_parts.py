"""What each part of the real train step costs: the step timed against itself with parts removed.

  python -m cgmlp_jax.tools.step_parts --config=configs/paper.py:model=gmlp_keras

The real step (``train/step.py``) does more than the work a framework comparison times
(``benchmarks/jax_gmlp.py``: float inputs already at the model's resolution, no dropout, a plain
update): it resizes and augments uint8 images on device, draws dropout masks, guards the update
against non-finite values and sums metrics. This compiles the config's step, the same step without
dropout, without flip and zoom, without both, and the bare update (the config's model without
dropout and its optimiser on normalised float inputs: no augmentation, guard or metrics), then
times them in interleaved rounds (``timing.interleaved_rates``) and prints each one's images/s and
its speed relative to the real step, round by round.
"""
import json
from typing import Callable

import jax
import optax
from absl import flags

from cgmlp_jax import cli, data as data_lib, parallel
from cgmlp_jax.tools import timing
from cgmlp_jax.tools.benchmark import define_setup_flags, synthetic_setup

FLAGS = flags.FLAGS

NO_DROPOUT = {"dropout_rate": 0.0, "head_dropout_rate": 0.0}  # model fields
NO_AUGMENT = {"augment.flip": False, "augment.zoom": 0.0, "augment.crop_padding": 0}
VARIANTS = {"real step": ({}, {}), "no dropout": (NO_DROPOUT, {}), "no flip/zoom": ({}, NO_AUGMENT),
            "no dropout, flip, zoom": (NO_DROPOUT, NO_AUGMENT)}
BARE = "bare update (same work)"


def _with(config, model_overrides: dict, overrides: dict):
  """A copy of ``config`` with model fields and dotted config fields overridden."""
  config = config.copy_and_resolve_references()
  config.update_from_flattened_dict(overrides)
  cli.apply_model_overrides(config, model_overrides)
  return config


def real_step(config, image_size: int, num_classes: int) -> Callable:
  """The config's train step, compiled, on one synthetic batch: a call runs one step."""
  trainer, _, images, labels, state, metrics = synthetic_setup(config, image_size, num_classes)
  compiled = trainer.train_step.lower(state, metrics, images, labels).compile()
  carry = [state, metrics]

  def step():
    carry[0], carry[1] = compiled(carry[0], carry[1], images, labels)
    return carry[1]

  return step


def _bare_update(config, image_size: int, num_classes: int) -> Callable:
  """The config's model (no dropout) and optimiser on normalised float inputs at its resolution."""
  trainer, split, images, labels, state, _ = synthetic_setup(_with(config, NO_DROPOUT, {}),
                                                             image_size, num_classes)
  model, tx, mesh = trainer.model, trainer.tx, trainer.mesh
  inputs = jax.jit(lambda x: data_lib.normalize(x, trainer.augment_config),
                   out_shardings=parallel.batch_sharded(mesh))(images)  # (B, S, S, C) f32

  def update(params, opt_state, inputs, labels):
    def loss(p):
      logits = model.apply({"params": p}, inputs, train=True)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  compiled = jax.jit(update, donate_argnums=(0, 1)).lower(
      state.params, state.opt_state, inputs, labels).compile()
  carry = [state.params, state.opt_state]

  def step():
    carry[0], carry[1] = compiled(carry[0], carry[1], inputs, labels)
    return carry[1]

  return step


def run(config, image_size: int, num_classes: int, steps: int, windows: int) -> dict:
  fns = {name: (real_step(_with(config, *overrides), image_size, num_classes), config.batch_size)
         for name, overrides in VARIANTS.items()}
  fns[BARE] = (_bare_update(config, image_size, num_classes), config.batch_size)
  rates = timing.interleaved_rates(fns, steps, windows)
  real = rates["real step"]
  return {name: {"images_per_s": rate.median, "images_per_s_quartiles": rate.quartiles,
                 "vs_real_step": rate.ratio(real).median,
                 "vs_real_step_quartiles": rate.ratio(real).quartiles}
          for name, rate in rates.items()}


def main(argv):
  del argv
  cli.setup_process(FLAGS.config, reads_data=False)  # synthetic data
  result = run(FLAGS.config, FLAGS.image_size, FLAGS.num_classes, FLAGS.steps, FLAGS.windows)
  print(f"{FLAGS.config.model}, batch {FLAGS.config.batch_size}, {jax.device_count()} x "
        f"{jax.devices()[0].device_kind}, {FLAGS.windows} rounds of {FLAGS.steps} steps")
  width = max(map(len, result))
  for name, r in result.items():
    (q1, q3), (v1, v3) = r["images_per_s_quartiles"], r["vs_real_step_quartiles"]
    print(f"  {name:<{width}}  {r['images_per_s']:7.1f} img/s ({q1:.1f}-{q3:.1f})  "
          f"x{r['vs_real_step']:.3f} ({v1:.3f}-{v3:.3f})")
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      json.dump(result, f, indent=2)


if __name__ == "__main__":
  define_setup_flags("time part by part")
  flags.DEFINE_integer("steps", 3, "Steps per timed window.")
  flags.DEFINE_integer("windows", 10, "Rounds; one window of each variant per round.")
  flags.DEFINE_string("out", None, "Write the figures to this JSON file.")
  cli.run(main)
