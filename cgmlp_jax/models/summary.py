"""Size and cost of a model: parameter count and forward GFLOPs, without allocating weights.

``python -m cgmlp_jax.models.summary [--num_classes=1000]`` prints the registry's variant table.
"""
import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from cgmlp_jax.models import registry
from cgmlp_jax.models.classifier import GatedMLPClassifier


def _dummy_images(model: GatedMLPClassifier, batch: int = 1) -> jax.ShapeDtypeStruct:
  return jax.ShapeDtypeStruct((batch, model.image_size, model.image_size, 3), jnp.float32)


def count_params(model: GatedMLPClassifier) -> int:
  shapes = jax.eval_shape(model.init, jax.random.key(0), _dummy_images(model))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))


def forward_gflops(model: GatedMLPClassifier) -> float:
  """XLA's FLOP count of one image's forward pass (a multiply-add counts 2)."""
  params = jax.eval_shape(model.init, jax.random.key(0), _dummy_images(model))
  compiled = jax.jit(model.apply).lower(params, _dummy_images(model)).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"]) / 1e9


def table(num_classes: int = 1000) -> str:
  rows = []
  for name in registry.VARIANTS:
    m = registry.get(name, num_classes=num_classes)
    stem = (f"conv {'+'.join(str(f) for f, _, _ in m.conv_layers)}, patch {m.patch_size}"
            if m.conv_layers else f"patch {m.patch_size}")
    if m.conv_layers and m.conv_norm != "group":  # the default, not shown
      stem += f", {m.conv_norm} norm"
    axes = m.axes if isinstance(m.axes, str) else "/".join(m.axes)
    rows.append(f"| `{name}` | {m.image_size}x{m.image_size} | {m.num_tokens} | {stem} | "
                f"{m.d_model} | {m.d_ffn} | {m.depth} | {axes} | {count_params(m):,} | "
                f"{forward_gflops(m):.3f} |")
  return "\n".join(rows)


def define_flags(values: flags.FlagValues) -> None:
  flags.DEFINE_integer("num_classes", 1000, "Classes of the head whose parameters and FLOPs are "
                       "counted.", flag_values=values)


if __name__ == "__main__":
  # Here only: the models import nothing outside models/ (tests/test_layering.py).
  from cgmlp_jax import cli  # noqa: PLC0415
  args, _ = cli.parse_flags(None, define_flags, "python -m cgmlp_jax.models.summary", __doc__)
  print(table(args.num_classes))
