"""Paired A/B of the dropout mask generator inside the real train step (BENCHMARKS.md).

  python benchmarks/dropout_masks.py --models=gmlp_keras,cgmlp_keras_2conv --rounds=8

For each model of ``configs/paper.py`` compiles the real train step twice, A with
``jax.random.bernoulli`` masks (Threefry per element, as ``flax.linen.Dropout``) and B with this
codebase's hashed masks (``cgmlp_jax/models/dropout.py``), then times all of them in interleaved
rounds and prints each one's images/s and B/A round by round (medians with quartiles).
"""
import importlib.util
import pathlib

import jax
from absl import app, flags

from cgmlp_jax import cli
from cgmlp_jax.models import dropout
from cgmlp_jax.tools import step_parts, timing

flags.DEFINE_list("models", ["gmlp_keras", "cgmlp_keras_2conv", "cgmlp_keras_1conv"],
                  "configs/paper.py models.")
flags.DEFINE_integer("steps", 3, "Steps per timed window.")
flags.DEFINE_integer("rounds", 8, "Rounds; one window of each step per round.")
FLAGS = flags.FLAGS

CONFIG = pathlib.Path(__file__).resolve().parent.parent / "configs" / "paper.py"


def threefry_mask(key, rate, shape):
  return jax.random.bernoulli(key, 1.0 - rate, shape)


def main(_):
  spec = importlib.util.spec_from_file_location("paper", CONFIG)
  paper = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(paper)
  hashed_mask, fns = dropout.bernoulli_mask, {}
  for model in FLAGS.models:
    config = paper.get_config(f"model={model}")
    if not fns:
      cli.setup_process(config, reads_data=False)
    for side, mask in (("A", threefry_mask), ("B", hashed_mask)):
      dropout.bernoulli_mask = mask  # read when the step is traced, i.e. compiled, here
      try:
        fns[model, side] = (step_parts.real_step(config, 32, 100), config.batch_size)
      finally:
        dropout.bernoulli_mask = hashed_mask
  rates = timing.interleaved_rates(fns, FLAGS.steps, FLAGS.rounds)
  print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, {FLAGS.rounds} rounds of "
        f"{FLAGS.steps} steps; A = Threefry masks, B = hashed masks")
  for model in FLAGS.models:
    a, b = rates[model, "A"], rates[model, "B"]
    print(f"  {model}: A {a} img/s; B {b} img/s; B/A {b.ratio(a)}")


if __name__ == "__main__":
  app.run(main)
