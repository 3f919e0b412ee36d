"""Tests of cgmlp_jax.models on tiny variants (16x16 images), CPU, a few seconds in all."""
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from cgmlp_jax import models
from cgmlp_jax.models import blocks, gating

NUM_CLASSES = 10


def _images(size=16, batch=4, seed=0):
  return jax.random.normal(jax.random.key(seed), (batch, size, size, 3))


def _randomise_head(params, seed=1):
  """The head is zero-initialised, which blocks gradients to everything below it at init."""
  head = params["head"]
  key = jax.random.key(seed)
  head = {"kernel": 0.1 * jax.random.normal(key, head["kernel"].shape), "bias": head["bias"]}
  return {**params, "head": head}


@pytest.fixture(scope="module")
def cgmlp():
  model = models.get("test_cgmlp", num_classes=NUM_CLASSES)
  params = jax.jit(model.init)(jax.random.key(0), _images())["params"]
  return model, _randomise_head(params)


@pytest.mark.parametrize("axes", ["token", "channel", "alternate", ("channel", "token")])
def test_output_shapes_for_every_axis_pattern(axes):
  model = models.get("test_cgmlp", num_classes=NUM_CLASSES, axes=axes)
  logits, variables = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x), _images())
  assert logits.shape == (4, NUM_CLASSES) and logits.dtype == jnp.float32
  has_token_kernel = ["kernel" in variables["params"][f"block{i}"]["gating"] for i in range(2)]
  assert has_token_kernel == [a == "token" for a in models.resolve_axes(axes, 2)]


@pytest.mark.parametrize("size", [8, 16, 24, 40])
def test_channel_only_model_runs_at_several_image_sizes(size):
  model = models.get("test_cgmlp", num_classes=NUM_CLASSES, axes="channel", image_size=size)
  logits, _ = jax.eval_shape(  # shapes only: no compile per size
      lambda x: model.init_with_output(jax.random.key(0), x), _images(size))
  assert logits.shape == (4, NUM_CLASSES)


def test_parameter_counts_by_hand_and_published():
  # test_gmlp: 16x16 input, patch 4 -> N=16 tokens, D=16, F=32, 2 blocks, 10 classes.
  #   stem: 4*4*3*16 + 16                          =    784
  #   block: LN 2*16 + Dense 16*32+32 + SGU LN 2*16 + token kernel 16*16 + bias 16
  #          + Dense 16*16+16                      =  1,152 (x2 = 2,304)
  #   final LN 2*16 + head 16*10+10               =    202
  assert _count("test_gmlp", NUM_CLASSES) == 784 + 2 * 1152 + 202
  # The gMLP paper's ImageNet models (6M / 20M / 73M); the PyTorch port (timm) counts
  # 19,422,656 for gmlp_s16_224.
  assert _count("gmlp_s16", 1000) == 19_422_656
  assert round(_count("gmlp_ti16", 1000) / 1e6) == 6
  assert round(_count("gmlp_b16", 1000) / 1e6) == 73
  # The paper's CIFAR-100 gMLP (Keras example): 64 tokens, d_model 256, d_ffn 512, 4 blocks.
  block = 2 * 256 + 256 * 512 + 512 + 2 * 256 + 64 * 64 + 64 + 256 * 256 + 256
  stem = 8 * 8 * 3 * 256 + 256
  assert _count("gmlp_paper", 100) == stem + 4 * block + 2 * 256 + 256 * 100 + 100
  # The Keras example itself (model.summary() there: 885,348): no LayerNorm before pooling.
  assert _count("gmlp_keras", 100) == stem + 4 * block + 256 * 100 + 100 == 885_348
  # The paper's CgMLPs on it: only the stem differs (3x3 convs without bias + GroupNorm, then a
  # 4x4 resp. 2x2 patch projection of the pooled 64-channel map onto the same 8x8 tokens).
  head = 256 * 100 + 100
  stem_1conv = 3 * 3 * 3 * 64 + 2 * 64 + 4 * 4 * 64 * 256 + 256
  stem_2conv = 3 * 3 * 3 * 32 + 2 * 32 + 3 * 3 * 32 * 64 + 2 * 64 + 2 * 2 * 64 * 256 + 256
  assert _count("cgmlp_keras_1conv", 100) == stem_1conv + 4 * block + head == 1_100_196
  assert _count("cgmlp_keras_2conv", 100) == stem_2conv + 4 * block + head == 921_220


def _count(name, num_classes):
  from cgmlp_jax.models.summary import count_params
  return count_params(models.get(name, num_classes=num_classes))


@pytest.mark.parametrize("axis", ["token", "channel"])
def test_gating_unit_starts_as_identity_on_u(axis):
  x = jax.random.normal(jax.random.key(0), (2, 16, 32))
  sgu = models.SpatialGatingUnit(axis=axis, num_tokens=16)
  out = sgu.apply(sgu.init(jax.random.key(1), x), x)
  np.testing.assert_allclose(out, x[..., :16], atol=1e-4)


def test_gradients_reach_every_parameter(cgmlp):
  model, params = cgmlp
  labels = jnp.arange(4) % NUM_CLASSES

  def loss(p):
    logits = model.apply({"params": p}, _images(), train=True,
                         rngs={"dropout": jax.random.key(2)})
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), labels])

  grads = jax.jit(jax.grad(loss))(params)
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    assert np.all(np.isfinite(g)), path
    assert np.any(g != 0), f"no gradient reaches {jax.tree_util.keystr(path)}"


def test_bf16_compute_stays_close_to_f32(cgmlp):
  model, params = cgmlp
  bf16 = models.get("test_cgmlp", num_classes=NUM_CLASSES, dtype=jnp.bfloat16)
  ref = jax.jit(model.apply)({"params": params}, _images())
  out = jax.jit(bf16.apply)({"params": params}, _images())
  assert out.dtype == jnp.float32
  assert jax.tree.leaves(params)[0].dtype == jnp.float32
  np.testing.assert_allclose(out, ref, atol=0.05 * float(jnp.abs(ref).max()))


def test_jit_matches_eager_and_seed_is_reproducible(cgmlp):
  model, params = cgmlp
  eager = model.apply({"params": params}, _images())
  jitted = jax.jit(model.apply)({"params": params}, _images())
  np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-6)
  init = jax.jit(model.init)
  a, b = init(jax.random.key(7), _images()), init(jax.random.key(7), _images())
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_block_matches_reference_formula():
  """Same weights, same function as the gMLP reference (exact GELU, LayerNorm eps 1e-6)."""
  block = models.GMLPBlock(d_ffn=8, axis="token", num_tokens=3)
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 3, 4)))
  params = block.init(jax.random.key(1), x)["params"]
  params = jax.tree.map(lambda p: p + 0.3 * np.asarray(jax.random.normal(jax.random.key(5),
                                                                         p.shape)), params)
  p = jax.tree.map(np.asarray, params)

  def layer_norm(a, q):
    mu, var = a.mean(-1, keepdims=True), a.var(-1, keepdims=True)
    return (a - mu) / np.sqrt(var + 1e-6) * q["scale"] + q["bias"]

  y = layer_norm(x, p["norm"]) @ p["proj_in"]["kernel"] + p["proj_in"]["bias"]
  y = 0.5 * y * (1 + erf(y / math.sqrt(2)))
  u, v = y[..., :4], layer_norm(y[..., 4:], p["gating"]["norm"])
  gate = np.einsum("bnc,mn->bmc", v, p["gating"]["kernel"]) + p["gating"]["bias"][:, None]
  expected = x + (u * gate) @ p["proj_out"]["kernel"] + p["proj_out"]["bias"]
  out = jax.jit(block.apply)({"params": params}, x)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)

  # The Keras example's block, same weights: the residual is added to the normalised input.
  keras = models.GMLPBlock(d_ffn=8, axis="token", num_tokens=3, style="keras")
  normed = layer_norm(x, p["norm"])
  out = jax.jit(keras.apply)({"params": params}, x)
  np.testing.assert_allclose(out, expected - x + normed, rtol=1e-4, atol=1e-5)


def test_keras_style_inits_the_gate_like_keras_and_drops_out_after_the_gelu():
  x = jax.random.normal(jax.random.key(0), (2, 16, 8))
  keras = models.GMLPBlock(d_ffn=16, axis="token", num_tokens=16, style="keras",
                           dropout_rate=0.5)
  params = keras.init(jax.random.key(1), x)["params"]
  kernel = params["gating"]["kernel"]  # Glorot-uniform on (16, 16): |w| < sqrt(6 / 32)
  assert 0.2 < float(jnp.abs(kernel).max()) < math.sqrt(6 / 32)
  np.testing.assert_array_equal(params["gating"]["bias"], 1.0)
  # Dropout on the d_ffn activations: the gate input changes, not just the block's output.
  _, inter = keras.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(2)},
                         mutable="intermediates")
  _, clean = keras.apply({"params": params}, x, mutable="intermediates")
  assert not np.allclose(inter["intermediates"]["gating"]["gate"][0],
                         clean["intermediates"]["gating"]["gate"][0])
  with pytest.raises(ValueError, match="Unknown block style 'tf'"):
    models.get("test_gmlp", num_classes=2, block_style="tf")


def test_drop_path_drops_whole_examples_in_training_only():
  x = jnp.ones((64, 3, 2))
  dp = models.DropPath(rate=0.5)
  y = dp.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)})
  per_example = np.asarray(y).reshape(64, -1)
  assert set(np.unique(per_example)) == {0.0, 2.0}
  assert np.all(per_example.min(1) == per_example.max(1))
  np.testing.assert_array_equal(dp.apply({}, x, deterministic=True), x)


def test_intermediates_are_captured_only_when_asked(cgmlp):
  model, params = cgmlp
  _, state = jax.jit(lambda p, x: model.apply({"params": p}, x, mutable=["intermediates"]))(
      params, _images())
  inter = state["intermediates"]
  assert inter["stem"]["layer0"][0].shape == (4, 16, 16, 8)
  assert inter["block1"]["output"][0].shape == (4, 16, 16)
  assert inter["block0"]["gating"]["gate"][0].shape == (4, 16, 16)
  out = jax.jit(model.apply)({"params": params}, _images())
  assert isinstance(out, jax.Array)  # not an (output, state) pair


def test_token_gating_rejects_a_different_token_count():
  sgu = models.SpatialGatingUnit(axis="token", num_tokens=16)
  with pytest.raises(ValueError, match=r"built for 16 tokens but got 9"):
    sgu.init(jax.random.key(0), jnp.ones((1, 9, 8)))


def test_model_rejects_a_different_image_size(cgmlp):
  model, params = cgmlp
  with pytest.raises(ValueError, match=r"\(batch, 16, 16, channels\) but got \(4, 24, 24, 3\)"):
    model.apply({"params": params}, _images(24))


@pytest.mark.parametrize("name, overrides, message", [
    ("test_gmlp", dict(image_size=18), r"Patch size 4 does not divide the 18x18"),
    ("test_cgmlp", dict(image_size=15), r"Max-pool 2 of conv layer 0 does not divide its 15x15"),
    ("test_cgmlp", dict(image_size=20, patch_size=4), r"Patch size 4 does not divide the 10x10"),
    ("test_gmlp", dict(axes="diagonal"), r"Unknown axis pattern 'diagonal'.*alternate"),
    ("test_gmlp", dict(axes=("token", "rows")), r"Unknown gating axis 'rows'.*'channel'"),
    ("test_gmlp", dict(axes=("token",)), r"1 entries but the model has 2 blocks"),
    ("test_gmlp", dict(widht=3), r"Unknown model override\(s\) \['widht'\]"),
    ("gmlp_huge", {}, r"Unknown model variant 'gmlp_huge'.*cgmlp_2conv"),
])
def test_bad_sizes_and_names_raise_before_compute(name, overrides, message):
  with pytest.raises(ValueError, match=message):
    models.get(name, num_classes=NUM_CLASSES, **overrides)


@pytest.mark.parametrize("kernel_size", [3, 4])
def test_im2col_convolution_equals_xla_convolution(kernel_size):
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  kernel = jax.random.normal(jax.random.key(1), (kernel_size, kernel_size, 3, 5))
  expected = jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(jax.jit(models.stems.conv_im2col)(x, kernel), expected,
                             rtol=1e-5, atol=1e-5)
  xla_conv = lambda x, kernel: jax.lax.conv_general_dilated(  # noqa: E731
      x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
  grads = lambda conv: jax.grad(  # noqa: E731  (the backward pass is hand-written)
      lambda x, kernel: jnp.sum(jnp.sin(conv(x, kernel))), argnums=(0, 1))(x, kernel)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
               grads(models.stems.conv_im2col), grads(xla_conv))
  conv = models.stems.Conv(5, kernel_size)
  params = conv.init(jax.random.key(2), x)["params"]
  assert params["kernel"].shape == (kernel_size, kernel_size, 3, 5)  # nn.Conv's layout
  flax_conv = nn.Conv(5, (kernel_size, kernel_size), padding="SAME")
  np.testing.assert_allclose(conv.apply({"params": params}, x),
                             flax_conv.apply({"params": params}, x), rtol=1e-5, atol=1e-5)


def test_token_mix_values_and_gradients_equal_the_plain_contraction():
  v = jax.random.normal(jax.random.key(0), (3, 5, 4))  # (B, N, C)
  kernel = jax.random.normal(jax.random.key(1), (5, 5))
  grads = lambda mix: jax.value_and_grad(  # noqa: E731
      lambda v, kernel: jnp.sum(jnp.sin(mix(v, kernel))), argnums=(0, 1))(v, kernel)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               grads(gating.token_mix),
               grads(lambda v, kernel: jnp.einsum("bnc,mn->bmc", v, kernel)))


@pytest.mark.parametrize("patch", [1, 2, 3])
def test_patch_projection_equals_strided_flax_conv(patch):
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
  conv = models.stems.Conv(5, patch, patch=True)
  params = conv.init(jax.random.key(2), x)["params"]
  flax_conv = nn.Conv(5, (patch, patch), strides=patch, padding="VALID")
  flax_params = flax_conv.init(jax.random.key(2), x)["params"]
  jax.tree.map(np.testing.assert_array_equal, params, flax_params)  # same names, shapes, init
  np.testing.assert_allclose(conv.apply({"params": params}, x),
                             flax_conv.apply({"params": params}, x), rtol=1e-5, atol=1e-5)


def test_max_pool_values_and_gradients_equal_flax_max_pool():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))  # no ties
  pool = lambda f: jax.value_and_grad(lambda x: jnp.sum(jnp.sin(f(x))))(x)  # noqa: E731
  ours = pool(lambda x: models.stems.max_pool(x, 2))
  reference = pool(lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)))
  jax.tree.map(np.testing.assert_allclose, ours, reference)


def test_group_norm_values_gradients_and_params_equal_flax_group_norm():
  x = 2.0 + 3.0 * jax.random.normal(jax.random.key(0), (2, 4, 4, 8))  # mean far from 0
  ours, flax_norm = models.norms.GroupNorm(num_groups=4), nn.GroupNorm(num_groups=4, epsilon=1e-5)
  params = ours.init(jax.random.key(1), x)["params"]
  jax.tree.map(np.testing.assert_array_equal, params,
               flax_norm.init(jax.random.key(1), x)["params"])  # same names, shapes, init
  params = {"scale": jnp.linspace(-1.0, 2.0, 8), "bias": jnp.linspace(0.5, -0.5, 8)}
  loss = lambda norm: jax.value_and_grad(  # noqa: E731
      lambda p, x: jnp.sum(jnp.sin(norm.apply({"params": p}, x))), argnums=(0, 1))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4),
               loss(ours), loss(flax_norm))


def test_batch_norm_stem_trains_on_batch_statistics_and_evaluates_on_running_ones():
  model = models.get("test_cgmlp_bn", num_classes=NUM_CLASSES)
  assert model.uses_batch_stats and not models.get("test_cgmlp", num_classes=10).uses_batch_stats
  x = 3.0 * _images() + 1.0
  variables = jax.jit(model.init)(jax.random.key(0, impl="rbg"), x)  # rbg: compiles faster
  assert set(variables) == {"params", "batch_stats"}  # init: running mean 0, variance 1
  stats = variables["batch_stats"]["stem"]["norm0"]
  np.testing.assert_array_equal(stats["mean"], np.zeros(8))
  np.testing.assert_array_equal(stats["var"], np.ones(8))
  assert "bias" not in variables["params"]["stem"]["conv0"]  # the norm's bias replaces it

  def train(variables, x):
    return model.apply(variables, x, train=True, mutable=["batch_stats", "intermediates"])

  logits, updated = jax.jit(train)(variables, x)
  # Training: the conv output normalised with this batch's per-channel statistics (scale 1, bias
  # 0 at init), and running averages moved 10 % of the way (momentum 0.9).
  conv = models.stems.Conv(8, 3, use_bias=False).apply(
      {"params": variables["params"]["stem"]["conv0"]}, x)
  mean, var = conv.mean(axis=(0, 1, 2)), conv.var(axis=(0, 1, 2))
  expected = np.maximum((conv - mean) / np.sqrt(var + 1e-5), 0)
  np.testing.assert_allclose(updated["intermediates"]["stem"]["layer0"][0], expected, atol=1e-4)
  new = updated["batch_stats"]["stem"]["norm0"]
  np.testing.assert_allclose(new["mean"], 0.1 * mean, rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(new["var"], 0.9 + 0.1 * var, rtol=1e-4)
  # Evaluation: the running statistics (so an example's output does not depend on its batch).
  trained = {"params": variables["params"], "batch_stats": updated["batch_stats"]}
  _, sown = jax.jit(functools.partial(model.apply, mutable=["intermediates"]))(trained, x)
  np.testing.assert_allclose(sown["intermediates"]["stem"]["layer0"][0],
                             np.maximum((conv - 0.1 * mean) / np.sqrt(0.9 + 0.1 * var + 1e-5), 0),
                             atol=1e-4)
  assert models.as_variables(trained) == trained
  assert models.as_variables(trained["params"]) == {"params": trained["params"]}


def test_group_norm_pooled_first_equals_normalise_rectify_then_pool():
  # The conv stem normalises, rectifies and pools on the pooled map (ReLU, the pool and the
  # norm's per-channel affine map commute); with negative scales the window min is the one taken.
  x = 2.0 + 3.0 * jax.random.normal(jax.random.key(0), (2, 8, 8, 8))
  norm = models.norms.GroupNorm(num_groups=4)
  params = {"scale": jnp.linspace(-1.0, 2.0, 8), "bias": jnp.linspace(0.5, -0.5, 8)}
  pool = lambda y: models.stems.max_pool(y, 2)  # noqa: E731
  first = lambda p, x: nn.relu(norm.apply({"params": p}, x, pool=pool))  # noqa: E731
  after = lambda p, x: pool(nn.relu(norm.apply({"params": p}, x)))  # noqa: E731
  np.testing.assert_array_equal(first(params, x), after(params, x))  # bit for bit
  grads = [jax.grad(lambda p, x: jnp.sum(jnp.sin(f(p, x))), argnums=(0, 1))(params, x)
           for f in (first, after)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), *grads)


def test_the_conv_stem_computes_the_same_with_and_without_its_feature_maps(cgmlp):
  # Sowing the feature maps (the figures) takes the layer-by-layer path, training the pooled-first
  # one: the same logits.
  model, params = cgmlp
  fast = model.apply({"params": params}, _images())
  sown, state = model.apply({"params": params}, _images(), mutable=["intermediates"])
  np.testing.assert_array_equal(fast, sown)
  assert "layer0" in state["intermediates"]["stem"]


def test_gelu_through_erf_is_the_exact_gelu():
  x = jnp.linspace(-12.0, 12.0, 4001)
  exact = lambda x: jax.nn.gelu(x, approximate=False)  # noqa: E731
  np.testing.assert_allclose(blocks.gelu(x), exact(x), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(jax.vmap(jax.grad(blocks.gelu))(x), jax.vmap(jax.grad(exact))(x),
                             rtol=1e-6, atol=1e-6)
