"""Paired A/B of one of the step's speed-ups inside the real train step (BENCHMARKS.md).

  python benchmarks/step_ab.py --change=dropout_masks --models=gmlp_keras,cgmlp_keras_2conv

For each model of ``configs/paper.py`` compiles the real train step twice, A with the function the
change replaced and B with this codebase's, then times all of them in interleaved rounds and
prints each one's images/s and B/A round by round (medians with quartiles). ``--change``:
``dropout_masks`` (A: ``jax.random.bernoulli``, Threefry per element as ``flax.linen.Dropout``;
B: ``models/dropout.py``'s hashed masks) or ``gelu`` (A: ``jax.nn.gelu``'s erfc; B:
``models/blocks.gelu``'s erf) or ``conv_kernel_grad`` (A: JAX's own backward pass of the stems'
im2col convolution; B: ``models/stems.conv_im2col``'s, kernel gradient as ``patches^T @ grad``)
or ``token_mix`` (A: the gating unit's token projection as one contraction; B: ``models/gating.
token_mix``'s batched matmul) or ``dropout_hash`` (A: each element's bits as MurmurHash3's
fmix32 applied twice; B: ``models/dropout``'s one lowbias32) or ``keras_resample`` (A: Keras'
flip, resize and zoom as three resamplings; B: ``data/augment._random_zoom_keras``'s one).
"""
import importlib
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
from absl import app, flags

from cgmlp_jax import cli
from cgmlp_jax.models import blocks, dropout, gating, stems
from cgmlp_jax.tools import step_parts, timing

augment = importlib.import_module("cgmlp_jax.data.augment")  # the package exports a function so named


def _fmix32(h):
  h = (h ^ (h >> 16)) * jnp.uint32(0x85EBCA6B)
  h = (h ^ (h >> 13)) * jnp.uint32(0xC2B2AE35)
  return h ^ (h >> 16)


def _fmix32_twice(key, shape):
  """The dropout bits before: ``fmix32(fmix32(index ^ s0) + s1)``, two Threefry seed words."""
  seed = jax.random.bits(key, (2,), jnp.uint32)
  return _fmix32(_fmix32(dropout.global_index(shape) ^ seed[0]) + seed[1])


def _three_resamplings(u_flip, u_zoom, image, cfg):
  """Keras' flip, resize and zoom one after the other, as before."""
  if cfg.flip:
    image = augment._random_flip(u_flip, image)  # noqa: SLF001
  image = augment._resize(image, cfg.image_size)  # noqa: SLF001
  size = cfg.image_size
  factor = 1.0 - cfg.zoom + 2.0 * cfg.zoom * u_zoom
  rows = augment._zoom_rows(factor[0], jnp.eye(size))  # noqa: SLF001
  cols = augment._zoom_rows(factor[1], jnp.eye(size))  # noqa: SLF001
  return jnp.einsum("ij,jkc,lk->ilc", rows, image, cols, precision=jax.lax.Precision.HIGHEST)


# name -> (module, attribute, what the attribute was before the change)
CHANGES = {
    "dropout_masks": (dropout, "bernoulli_mask",
                      lambda key, rate, shape: jax.random.bernoulli(key, 1.0 - rate, shape)),
    "gelu": (blocks, "gelu", lambda x: jax.nn.gelu(x, approximate=False)),
    "conv_kernel_grad": (stems, "conv_im2col",
                         lambda x, kernel: stems._im2col(x, kernel.shape[0])  # noqa: SLF001
                         @ kernel.reshape(-1, kernel.shape[-1])),
    "token_mix": (gating, "token_mix", lambda v, kernel: jnp.einsum("bnc,mn->bmc", v, kernel)),
    "dropout_hash": (dropout, "hashed_bits", _fmix32_twice),
    "keras_resample": (augment, "_random_zoom_keras", _three_resamplings),
}
flags.DEFINE_enum("change", None, list(CHANGES), "The change to time.", required=True)
flags.DEFINE_list("models", ["gmlp_keras", "cgmlp_keras_2conv", "cgmlp_keras_1conv"],
                  "configs/paper.py models.")
flags.DEFINE_integer("steps", 3, "Steps per timed window.")
flags.DEFINE_integer("rounds", 8, "Rounds; one window of each step per round.")
FLAGS = flags.FLAGS

CONFIG = pathlib.Path(__file__).resolve().parent.parent / "configs" / "paper.py"


def main(_):
  spec = importlib.util.spec_from_file_location("paper", CONFIG)
  paper = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(paper)
  module, name, before = CHANGES[FLAGS.change]
  after, fns = getattr(module, name), {}
  for model in FLAGS.models:
    config = paper.get_config(f"model={model}")
    if not fns:
      cli.setup_process(config, reads_data=False)
    for side, fn in (("A", before), ("B", after)):
      setattr(module, name, fn)  # read when the step is traced, i.e. compiled, here
      try:
        fns[model, side] = (step_parts.real_step(config, 32, 100), config.batch_size)
      finally:
        setattr(module, name, after)
  rates = timing.interleaved_rates(fns, FLAGS.steps, FLAGS.rounds)
  print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, {FLAGS.rounds} rounds of "
        f"{FLAGS.steps} steps; {FLAGS.change}: A = before, B = now")
  for model in FLAGS.models:
    a, b = rates[model, "A"], rates[model, "B"]
    print(f"  {model}: A {a} img/s; B {b} img/s; B/A {b.ratio(a)}")


if __name__ == "__main__":
  app.run(main)
