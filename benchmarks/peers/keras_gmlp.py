"""Peer benchmark: a Keras 3 gMLP on TensorFlow, as in the public Keras CIFAR-100 gMLP example.

  DIR/keras/bin/python benchmarks/peers/keras_gmlp.py --shape=gmlp_paper [--jit_compile=auto]

Run from the venv that benchmarks/peers/setup.sh makes (tensorflow-cpu + keras, the project venv's
versions); run.py runs it. The model follows the Keras example's structure (written here, not
copied): non-overlapping patches (reshape + transpose, the same values as extract_patches) ->
Dense(d_model) -> gMLP blocks -> GlobalAveragePooling1D -> Dense(100). Its block: ``n =
LayerNorm(x)`` (eps 1e-6), ``Dense(d_ffn)``, exact GELU, the spatial gating unit (split, LayerNorm
of the gate half, a Dense over the token axis with bias 1), ``Dense(d_model)``, and the residual
added to ``n``, as in the example. No dropout layers (the example's 0.2 is off, for the same work
as ``benchmarks/jax_gmlp.py``), no augmentation; random float32 inputs already tensors, batch 128,
AdamW(lr 3e-3, weight_decay 1e-4), sparse categorical cross-entropy on logits.

The step is Keras' own compiled train step, ``model.train_on_batch`` (a ``tf.function``; with
``--jit_compile=true`` compiled by XLA, ``false``: the TensorFlow graph with oneDNN kernels,
``auto``: Keras' choice, which the output states). Threads: TensorFlow intra-op and inter-op pools
set to ``--threads``. Timing: the median of ``--windows`` windows of ``--steps`` steps after one
warm-up window (which also traces and compiles). Prints one JSON line (the last line of output).
"""
import argparse
import json
import os

from common import CLASSES, SHAPES, matmul_gflops, median_rate  # this directory's common.py

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def build(shape: dict):
  import keras
  from keras import layers, ops

  class GMLPLayer(layers.Layer):
    """n = LayerNorm(x); n + Dense_d(SGU(GELU(Dense_f(n)))), the Keras example's block."""

    def __init__(self, tokens: int, d_model: int, d_ffn: int, **kwargs):
      super().__init__(**kwargs)
      self.norm = layers.LayerNormalization(epsilon=1e-6)
      self.proj_in = layers.Dense(d_ffn)
      self.gate_norm = layers.LayerNormalization(epsilon=1e-6)
      self.token_proj = layers.Dense(tokens, bias_initializer="ones")
      self.proj_out = layers.Dense(d_model)

    def call(self, x):  # (B, N, D)
      n = self.norm(x)
      y = keras.activations.gelu(self.proj_in(n), approximate=False)
      u, v = ops.split(y, 2, axis=-1)
      v = ops.transpose(self.token_proj(ops.transpose(self.gate_norm(v), (0, 2, 1))), (0, 2, 1))
      return n + self.proj_out(u * v)

  size, patch, d_model = shape["image"], shape["patch"], shape["d_model"]
  grid = size // patch
  inputs = keras.Input((size, size, 3))
  x = layers.Reshape((grid, patch, grid, patch, 3))(inputs)
  x = layers.Permute((1, 3, 2, 4, 5))(x)
  x = layers.Reshape((grid * grid, patch * patch * 3))(x)
  x = layers.Dense(d_model)(x)
  for _ in range(shape["depth"]):
    x = GMLPLayer(grid * grid, d_model, shape["d_ffn"])(x)
  x = layers.GlobalAveragePooling1D()(x)
  return keras.Model(inputs, layers.Dense(CLASSES)(x))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--shape", choices=sorted(SHAPES), default="gmlp_paper")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=8, help="Steps per timed window.")
  parser.add_argument("--windows", type=int, default=5, help="Timed windows (median reported).")
  parser.add_argument("--threads", type=int, default=2, help="TF intra-op and inter-op threads.")
  parser.add_argument("--jit_compile", choices=("auto", "true", "false"), default="auto")
  parser.add_argument("--matmul", type=int, default=2048, help="n of the n x n matmul peak; 0: skip.")
  args = parser.parse_args()

  import tensorflow as tf
  tf.config.threading.set_intra_op_parallelism_threads(args.threads)
  tf.config.threading.set_inter_op_parallelism_threads(args.threads)
  import keras
  keras.utils.set_random_seed(0)

  peak = None
  if args.matmul:
    a = tf.random.uniform((args.matmul, args.matmul))
    matmul = tf.function(lambda a: tf.linalg.matmul(a, a))
    peak = matmul_gflops(lambda: matmul(a).numpy(), args.matmul)  # .numpy(): waits for it

  shape = SHAPES[args.shape]
  model = build(shape)
  jit = {"auto": "auto", "true": True, "false": False}[args.jit_compile]
  model.compile(optimizer=keras.optimizers.AdamW(learning_rate=3e-3, weight_decay=1e-4),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=jit)
  rng = tf.random.Generator.from_seed(0)
  images = rng.normal((args.batch, shape["image"], shape["image"], 3))
  labels = rng.uniform((args.batch,), 0, CLASSES, dtype=tf.int32)

  def step():
    model.train_on_batch(images, labels)  # returns the loss as a NumPy value: synchronous

  rate, rates = median_rate(step, args.batch, args.steps, args.windows)
  print(json.dumps({
      "impl": f"Keras {keras.__version__} / TensorFlow {tf.__version__}, train_on_batch, "
              f"jit_compile={model.jit_compile}",
      "shape": args.shape, "train_images_per_s": rate, "windows_images_per_s": rates,
      "step_ms": 1e3 * args.batch / rate, "matmul_peak_gflops": peak,
      "params": model.count_params(),
      "settings": {"batch": args.batch, "dtype": "float32", "dropout": "off",
                   "augmentation": "off", "optimizer": "AdamW(3e-3, wd 1e-4)",
                   "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                   "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
                   "mode": f"tf.function via train_on_batch, jit_compile={model.jit_compile} "
                           f"(asked: {args.jit_compile})",
                   "jit_compile": model.jit_compile, "steps": args.steps,
                   "windows": args.windows,
                   "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(default)"),
                   "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", "")},
  }))


if __name__ == "__main__":
  main()
