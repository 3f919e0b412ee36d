"""Tests for cgmlp_jax.data.augment. Tiny 8x8 images and few configs keep XLA compiles cheap."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgmlp_jax.data import AugmentConfig, augment, normalize
from cgmlp_jax.data.augment import _random_crop, _random_zoom, _random_zoom_keras

_B, _K = 6, 5
_OFF = dict(crop_padding=0, flip=False)  # every option off


def _batch():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (_B, 8, 8, 3), dtype=np.uint8)
  labels = jax.nn.one_hot(np.arange(_B) % _K, _K)
  return jnp.asarray(images), labels


@functools.lru_cache(maxsize=None)
def _jitted(cfg, dtype=jnp.float32):
  return jax.jit(functools.partial(augment, cfg=cfg, dtype=dtype))


def test_all_options_shapes_dtypes_determinism_and_targets():
  cfg = AugmentConfig(image_size=16,
                      zoom=0.2,
                      random_erasing=0.5,
                      mixup_alpha=1.0,
                      cutmix_alpha=1.0)
  images, labels = _batch()
  run = _jitted(cfg, jnp.bfloat16)
  x, y = run(jax.random.key(0), images, labels)
  assert x.shape == (_B, 16, 16, 3) and x.dtype == jnp.bfloat16
  assert y.shape == (_B, _K) and y.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(x.astype(jnp.float32))))
  x2, y2 = run(jax.random.key(0), images, labels)
  np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(x2, np.float32))
  np.testing.assert_array_equal(y, y2)
  used_cutmix = set()
  for seed in range(1, 9):  # mixup or CutMix is drawn per batch; both keep rows summing to 1
    x3, y3 = run(jax.random.key(seed), images, labels)
    assert not np.array_equal(np.asarray(x, np.float32), np.asarray(x3, np.float32))
    np.testing.assert_allclose(y3.sum(axis=1), 1.0, rtol=1e-6)
    # CutMix weights are whole pixel counts over 16 * 16; a mixup weight almost never is.
    y3 = np.asarray(y3) * 256
    used_cutmix.add(bool(np.all(y3 == np.round(y3))))
  assert used_cutmix == {True, False}


def test_flip_only_gives_image_or_mirror():
  cfg = AugmentConfig(image_size=8, crop_padding=0, flip=True)
  images, labels = _batch()
  x, y = _jitted(cfg)(jax.random.key(2), images, labels)
  plain, mirror = normalize(images, cfg), normalize(images[:, :, ::-1], cfg)
  flipped = [bool(jnp.allclose(a, m)) for a, m in zip(x, mirror)]
  for a, p, m, f in zip(x, plain, mirror, flipped):
    np.testing.assert_allclose(a, m if f else p, atol=1e-6)
  assert 0 < sum(flipped) < _B  # both outcomes occur for this key
  np.testing.assert_array_equal(y, labels)


@pytest.mark.parametrize("size", [8, 16])
def test_all_off_equals_normalize(size):
  cfg = AugmentConfig(image_size=size, **_OFF)
  images, labels = _batch()
  x, y = _jitted(cfg)(jax.random.key(0), images, labels)
  np.testing.assert_allclose(x, normalize(images, cfg), rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(y, labels)


def test_normalize_values():
  cfg = AugmentConfig(image_size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
  images = jnp.full((1, 8, 8, 3), 255, jnp.uint8)
  np.testing.assert_allclose(normalize(images, cfg), 1.0)


def test_cutmix_only_keeps_targets_normalised():
  cfg = AugmentConfig(image_size=8, cutmix_alpha=1.0, **_OFF)
  images, labels = _batch()
  x, y = _jitted(cfg)(jax.random.key(3), images, labels)
  np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
  assert bool(jnp.any(y != labels))  # targets really were mixed
  assert x.shape == (_B, 8, 8, 3)


def test_random_erasing_is_per_example():
  cfg = AugmentConfig(image_size=8, random_erasing=1.0, **_OFF)
  images, labels = _batch()
  same = jnp.broadcast_to(images[:1], images.shape)  # one image repeated
  x, _ = _jitted(cfg)(jax.random.key(0), same, labels)
  changed = np.asarray(jnp.any(x != normalize(same, cfg), axis=-1))  # (B, 8, 8)
  assert changed.any(axis=(1, 2)).all() and not changed.all()
  assert len({row.tobytes() for row in changed}) > 1  # each example got its own box


def test_crop_and_zoom_geometry():
  image = jnp.arange(4 * 4 * 3, dtype=jnp.float32).reshape(4, 4, 3)
  crop = jax.jit(_random_crop, static_argnums=2)
  top_left = crop(jnp.array([0.0, 0.0]), image, 1)  # window starts in the zero padding
  np.testing.assert_array_equal(top_left[1:, 1:], image[:-1, :-1])
  assert not top_left[0].any() and not top_left[:, 0].any()
  np.testing.assert_array_equal(crop(jnp.array([0.5, 0.5]), image, 1), image)
  # Zoom factor 1 (u = 0.5) is a plain centred resize; u = 1 magnifies by 1 + zoom.
  zoom = jax.jit(_random_zoom, static_argnums=(2, 3))
  resized = jax.image.resize(image, (8, 8, 3), "linear")
  np.testing.assert_allclose(zoom(jnp.float32(0.5), image, 0.2, 8), resized, atol=1e-4)
  assert not np.allclose(zoom(jnp.float32(1.0), image, 0.2, 8), resized, atol=1e-2)


@pytest.mark.parametrize("u", [(0.0, 1.0), (1.0, 0.0), (0.3, 0.8)])
def test_keras_zoom_matches_an_independent_resample(u):
  # Keras RandomZoom(0.2, 0.2): output pixel x samples input f * (x - c) + c per axis, f in
  # [0.8, 1.2] (u = 0 and 1 are the extremes), bilinear, borders reflected (d c b a | a b c d):
  # scipy's affine_transform(order=1, mode="reflect") is that resample, written independently.
  from scipy import ndimage
  image = np.random.default_rng(1).random((12, 12, 3)).astype(np.float32)
  factors, centre = 0.8 + 0.4 * np.asarray(u), (12 - 1) / 2
  expected = np.stack([ndimage.affine_transform(image[..., c], np.diag(factors),
                                                offset=centre - factors * centre, order=1,
                                                mode="reflect") for c in range(3)], axis=-1)
  cfg = AugmentConfig(image_size=12, zoom=0.2, zoom_style="keras", **_OFF)
  zoomed = jax.jit(_random_zoom_keras, static_argnums=3)(jnp.float32(1.0),
                                                         jnp.asarray(u, jnp.float32),
                                                         jnp.asarray(image), cfg)
  np.testing.assert_allclose(zoomed, expected, atol=1e-5)


@pytest.mark.parametrize("u", [(0.2, 0.0, 1.0), (0.7, 0.3, 0.8)])
def test_keras_resample_is_flip_then_resize_then_zoom(u):
  # The one resampling equals Keras' three layers applied in turn: flip (u[0] < 0.5), resize
  # 8 -> 12, then the zoom of the test above (checked against scipy) on the resized image.
  image = jnp.asarray(np.random.default_rng(2).random((8, 8, 3)), jnp.float32)
  u = jnp.asarray(u, jnp.float32)
  cfg = AugmentConfig(image_size=12, zoom=0.2, zoom_style="keras", crop_padding=0, flip=True)
  flipped = image[:, ::-1] if u[0] < 0.5 else image
  resized = jax.image.resize(flipped, (12, 12, 3), "linear", antialias=True)
  expected = _random_zoom_keras(jnp.float32(1.0), u[1:], resized,
                                AugmentConfig(image_size=12, zoom=0.2, zoom_style="keras", **_OFF))
  np.testing.assert_allclose(_random_zoom_keras(u[0], u[1:], image, cfg), expected, atol=1e-5)


def test_keras_zoom_in_the_pipeline_resizes_first_and_draws_two_factors():
  images, labels = _batch()
  cfg = AugmentConfig(image_size=16, zoom=0.2, zoom_style="keras", **_OFF)
  x, _ = _jitted(cfg)(jax.random.key(3), images, labels)
  plain = normalize(images, cfg)
  assert x.shape == plain.shape
  # No black fill: every zoomed pixel lies within its image's range of resized values.
  assert bool(jnp.all(x.min(axis=(1, 2)) >= plain.min(axis=(1, 2)) - 1e-4))
  assert bool(jnp.all(x.max(axis=(1, 2)) <= plain.max(axis=(1, 2)) + 1e-4))
  assert not np.allclose(x, plain, atol=1e-2)


@pytest.mark.parametrize("kwargs", [
    dict(image_size=0),
    dict(image_size=8, zoom=0.2, zoom_style="reflect"),
    dict(image_size=8, crop_padding=-1),
    dict(image_size=8, zoom=1.0),
    dict(image_size=8, mixup_alpha=-0.1),
    dict(image_size=8, random_erasing=1.5),
    dict(image_size=8, mean=(0.5,), std=(0.5, 0.5)),
    dict(image_size=8, std=(0.2, 0.0, 0.2)),
])
def test_bad_config_raises(kwargs):
  with pytest.raises(ValueError, match="Invalid AugmentConfig"):
    AugmentConfig(**kwargs)


def test_bad_inputs_raise():
  cfg = AugmentConfig(image_size=8)
  with pytest.raises(ValueError, match="channels"):
    normalize(jnp.zeros((1, 8, 8, 1), jnp.uint8), cfg)
  with pytest.raises(ValueError, match="uint8"):
    normalize(jnp.zeros((1, 8, 8, 3), jnp.float32), cfg)


def test_config_is_hashable_with_list_inputs():
  cfg = AugmentConfig(image_size=8, mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
  assert cfg.mean == (0.5, 0.5, 0.5) and hash(cfg) == hash(
      AugmentConfig(image_size=8, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2)))


def _distinct_labels():
  images, _ = _batch()
  return images, jax.nn.one_hot(np.arange(_B), _B)  # example i is class i: targets name partners


def test_mixup_targets_carry_the_image_weights():
  """lambda recovered from each mixed image equals its own class's target weight (a swap of
  lambda and 1 - lambda in the targets keeps every row summing to 1, and passed the old tests)."""
  cfg = AugmentConfig(image_size=8, mixup_alpha=1.0, **_OFF)
  images, labels = _distinct_labels()
  plain = np.asarray(normalize(images, cfg), np.float64)
  checked = 0
  for seed in range(4):
    x, y = map(np.asarray, _jitted(cfg)(jax.random.key(seed), images, labels))
    for i in range(_B):
      partner = [k for k in np.flatnonzero(y[i] > 1e-6) if k != i]
      if not partner or abs(y[i, i] - 0.5) < 0.05:  # mixed with itself, or lambda ~ 1 - lambda
        continue
      a, b = plain[i].ravel(), plain[partner[0]].ravel()
      lam = np.dot(x[i].ravel() - b, a - b) / np.dot(a - b, a - b)  # x = lam a + (1 - lam) b
      np.testing.assert_allclose(x[i].ravel(), lam * a + (1 - lam) * b, atol=1e-4)
      assert lam == pytest.approx(y[i, i], abs=1e-4)
      checked += 1
  assert checked >= 4


def test_cutmix_target_weight_is_the_pasted_pixel_fraction():
  cfg = AugmentConfig(image_size=8, cutmix_alpha=1.0, **_OFF)
  images, labels = _distinct_labels()
  plain = np.asarray(normalize(images, cfg))
  checked = 0
  for seed in range(4):
    x, y = map(np.asarray, _jitted(cfg)(jax.random.key(seed), images, labels))
    for i in range(_B):
      partner = [k for k in np.flatnonzero(y[i] > 1e-6) if k != i]
      if not partner:
        continue
      pasted = np.all(np.isclose(x[i], plain[partner[0]]), axis=-1) & \
          ~np.all(np.isclose(x[i], plain[i]), axis=-1)  # (8, 8)
      kept = np.all(np.isclose(x[i], plain[i]), axis=-1)
      assert np.all(pasted | kept)  # every pixel is one image's or the other's
      assert y[i, partner[0]] == pytest.approx(pasted.mean(), abs=1e-6)
      assert y[i, i] == pytest.approx(kept.mean(), abs=1e-6)
      checked += 1
  assert checked >= 4


@pytest.mark.parametrize("u, reference", [
    # u = 0: factor 1 - zoom = 0.8, the image shrunk to 8x8 in a black border; u = 1: 1.2,
    # the centre of the image magnified to 12x12.
    (0.0, lambda image: jnp.pad(jax.image.resize(image, (8, 8, 3), "linear", antialias=True),
                                ((1, 1), (1, 1), (0, 0)))),
    (1.0, lambda image: jax.image.resize(image, (12, 12, 3), "linear", antialias=True)[1:11, 1:11]),
])
def test_zero_fill_zoom_extremes_match_an_independent_resample(u, reference):
  """The default zoom_style's range pinned at both ends (a halved range passed the old tests)."""
  image = jnp.asarray(np.random.default_rng(1).uniform(0, 1, (10, 10, 3)), jnp.float32)
  zoomed = jax.jit(_random_zoom, static_argnums=(2, 3))(jnp.float32(u), image, 0.2, 10)
  np.testing.assert_allclose(zoomed, reference(image), atol=1e-4)
