"""The JAX side of the PyTorch comparison in BENCHMARKS.md (see ``benchmarks/torch_gmlp.py``).

  python benchmarks/jax_gmlp.py [--model=gmlp_paper] [--cpu_devices=2]

Times this codebase's model with the same work as the PyTorch script: random float32 inputs
already on device, no augmentation, no dropout, plain AdamW, batch 128; the forward pass, the
gradient, and the whole update are timed separately (median of timed windows), so the three
phases can be compared with PyTorch's. On a CPU-only host the batch is split over
``--cpu_devices`` JAX devices, as in training (``config.cpu_devices``, ``parallel.split_cpu``).
``python -m cgmlp_jax.tools.benchmark`` times the real train step (augmentation, dropout, the
non-finite guard and metrics included).
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags

from cgmlp_jax import models, parallel
from cgmlp_jax.tools import timing

flags.DEFINE_string("model", "gmlp_paper", "Model variant.")
flags.DEFINE_integer("batch", 128, "Batch size.")
flags.DEFINE_integer("steps", 8, "Steps per timed window.")
flags.DEFINE_integer("windows", 5, "Timed windows; the median is reported.")
flags.DEFINE_integer("cpu_devices", 2, "CPU-only hosts: JAX devices the batch is split over.")
FLAGS = flags.FLAGS


def main(_):
  parallel.split_cpu(FLAGS.cpu_devices)
  mesh = parallel.make_mesh()
  model = models.get(FLAGS.model, num_classes=100, dropout_rate=0.0, head_dropout_rate=0.0)
  rng = np.random.default_rng(0)
  images, labels = jax.device_put(
      (rng.standard_normal((FLAGS.batch, model.image_size, model.image_size, 3), np.float32),
       rng.integers(0, 100, FLAGS.batch)), parallel.batch_sharded(mesh))
  params = jax.device_put(model.init(jax.random.key(0), images[:1])["params"],
                          parallel.replicated(mesh))
  tx = optax.adamw(3e-3, weight_decay=1e-4)

  def loss(p, images, labels):  # data as arguments: closed-over arrays would lose their sharding
    logits = model.apply({"params": p}, images, train=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

  def update(p, opt_state, images, labels):
    updates, opt_state = tx.update(jax.grad(loss)(p, images, labels), opt_state, p)
    return optax.apply_updates(p, updates), opt_state

  forward, gradient = jax.jit(loss), jax.jit(jax.grad(loss))
  train_step = jax.jit(update, donate_argnums=(0, 1))
  carry = (jax.tree.map(jnp.copy, params), tx.init(params))  # donated, so not `params` itself

  def step():
    nonlocal carry
    carry = train_step(*carry, images, labels)
    return carry

  print(f"{FLAGS.model}, batch {FLAGS.batch}, {jax.device_count()} x {jax.devices()[0].platform}")
  for name, fn in (("forward", lambda: forward(params, images, labels)),
                   ("forward+backward", lambda: gradient(params, images, labels)),
                   ("train step (AdamW)", step)):
    rate = timing.rate(fn, FLAGS.batch, FLAGS.steps, FLAGS.windows)
    q1, q3 = rate.quartiles
    print(f"  {name}: {FLAGS.batch / rate.median * 1e3:.0f} ms, {rate.median:.1f} img/s "
          f"(quartiles {q1:.1f}-{q3:.1f})")


if __name__ == "__main__":
  app.run(main)
