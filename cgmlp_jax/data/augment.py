"""Image augmentation that runs on device, inside the jitted train step.

The host only ships uint8 batches (4x smaller than float32) and all per-pixel work happens on the
accelerator, where it is fused into the train step instead of throttling a Python input pipeline.
Everything is pure jnp with static shapes. Each example gets its own row of random numbers from
the batch key and is transformed under `vmap`, so examples are augmented independently and a step
is reproducible from its key alone. Options are read from the static config in Python, so a
disabled option is not traced at all and costs nothing.

Pixel values are handled in [0, 1] units until the per-channel normalisation; crop padding fills
with zeros (black) there, and so does zoom with ``zoom_style="zero_fill"``; ``zoom_style="keras"``
reflects the image at its borders instead, as Keras' ``RandomZoom`` does.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

# Random erasing box, as in Zhong et al. 2017: area fraction and log-uniform aspect ratio ranges.
_ERASE_AREA = (0.02, 1.0 / 3.0)
_ERASE_LOG_RATIO = (math.log(0.3), math.log(1.0 / 0.3))
ZOOM_STYLES = ("zero_fill", "keras")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Static augmentation settings; hashable, so it can be closed over by or passed to jit.

  Attributes:
    image_size: side of the square model input; images are resized to it.
    crop_padding: zero padding (pixels of the original image) for the random crop; 0 = off.
    flip: random horizontal flip.
    zoom: random zoom about the centre by a factor uniform in [1 - zoom, 1 + zoom]; 0 = off.
    zoom_style: "zero_fill": one factor magnifies both axes, applied with the resize to
      image_size in one resampling of the stored image, black outside it. "keras": Keras'
      ``RandomZoom(zoom, zoom)`` (TF 2.x) on the image already resized to image_size: independent
      height and width factors f, each output pixel x sampled at input f * (x - c) + c (f > 1
      zooms out), bilinear, borders reflected (d c b a | a b c d).
    mixup_alpha: Beta(alpha, alpha) parameter of mixup; 0 = off.
    cutmix_alpha: Beta(alpha, alpha) parameter of CutMix; 0 = off. With mixup also on, each
      batch uses one of the two with equal probability.
    random_erasing: per-example probability of replacing a random box with random pixels.
    mean: per-channel mean in [0, 1] pixel units.
    std: per-channel standard deviation in [0, 1] pixel units.
  """

  image_size: int
  crop_padding: int = 4
  flip: bool = True
  zoom: float = 0.0
  zoom_style: str = "zero_fill"
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  random_erasing: float = 0.0
  mean: tuple[float, ...] = CIFAR10_MEAN
  std: tuple[float, ...] = CIFAR10_STD

  def __post_init__(self):
    # Configs may hand over lists; tuples keep the dataclass hashable.
    object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
    object.__setattr__(self, "std", tuple(float(s) for s in self.std))
    problems = []
    if self.image_size <= 0:
      problems.append(f"image_size must be positive, got {self.image_size}")
    if self.crop_padding < 0:
      problems.append(f"crop_padding must be >= 0, got {self.crop_padding}")
    if not 0.0 <= self.zoom < 1.0:
      problems.append(f"zoom must be in [0, 1), got {self.zoom}")
    if self.zoom_style not in ZOOM_STYLES:
      problems.append(f"zoom_style must be one of {ZOOM_STYLES}, got {self.zoom_style!r}")
    if self.mixup_alpha < 0 or self.cutmix_alpha < 0:
      problems.append(f"mixup_alpha and cutmix_alpha must be >= 0, got {self.mixup_alpha} and "
                      f"{self.cutmix_alpha}")
    if not 0.0 <= self.random_erasing <= 1.0:
      problems.append(f"random_erasing is a probability, got {self.random_erasing}")
    if not self.mean or len(self.mean) != len(self.std):
      problems.append(
          f"mean and std need one entry per channel, got {len(self.mean)} and {len(self.std)}")
    if any(s <= 0 for s in self.std):
      problems.append(f"std entries must be positive, got {self.std}")
    if problems:
      raise ValueError("Invalid AugmentConfig: " + "; ".join(problems) + ".")


def _check_inputs(images: jax.Array, cfg: AugmentConfig) -> None:
  if images.ndim != 4 or images.dtype != jnp.uint8:
    raise ValueError(f"expected uint8 images (B, H, W, C), got {images.dtype} {images.shape}")
  if images.shape[-1] != len(cfg.mean):
    raise ValueError(
        f"images have {images.shape[-1]} channels but mean/std have {len(cfg.mean)} entries")


def _resize(x: jax.Array, size: int) -> jax.Array:
  """(..., H, W, C) -> (..., size, size, C), bilinear with antialiasing; a no-op at that size."""
  if x.shape[-3:-1] == (size, size):
    return x
  return jax.image.resize(x, x.shape[:-3] + (size, size, x.shape[-1]), "linear", antialias=True)


def _standardize(x: jax.Array, cfg: AugmentConfig) -> jax.Array:
  mean = jnp.asarray(cfg.mean, jnp.float32)
  std = jnp.asarray(cfg.std, jnp.float32)
  return (x - mean) / std


def normalize(images: jax.Array, cfg: AugmentConfig, dtype=jnp.float32) -> jax.Array:
  """Deterministic eval preprocessing: uint8 (B, H, W, C) -> normalised (B, S, S, C) `dtype`."""
  _check_inputs(images, cfg)
  x = _resize(images.astype(jnp.float32) / 255.0, cfg.image_size)
  return _standardize(x, cfg).astype(dtype)


def _random_crop(u: jax.Array, image: jax.Array, padding: int) -> jax.Array:
  """(H, W, C) -> (H, W, C): a random window of the zero-padded image; u: (2,) uniforms."""
  h, w, c = image.shape
  padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  dy, dx = jnp.minimum(u * (2 * padding + 1), 2 * padding).astype(jnp.int32)
  return jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, c))


def _random_flip(u: jax.Array, image: jax.Array) -> jax.Array:
  """(H, W, C) -> (H, W, C), mirrored left-right with probability 1/2; u: scalar uniform."""
  return jnp.where(u < 0.5, image[:, ::-1], image)


def _random_zoom(u: jax.Array, image: jax.Array, zoom: float, size: int) -> jax.Array:
  """(H, W, C) -> (size, size, C): resize and zoom about the centre in one resampling."""
  h, w, c = image.shape
  factor = 1.0 - zoom + 2.0 * zoom * u  # uniform in [1 - zoom, 1 + zoom]
  scale = jnp.array([size / h, size / w]) * factor
  # Maps the input centre onto the output centre (pixel centres sit at +0.5).
  translation = (size - jnp.array([h, w]) * scale) / 2.0
  return jax.image.scale_and_translate(image, (size, size, c), (0, 1),
                                       scale,
                                       translation,
                                       "linear",
                                       antialias=True)


def _reflect(index: jax.Array, n: int) -> jax.Array:
  """Integer pixel indices folded into [0, n) by half-sample reflection (d c b a | a b c d);
  exact for indices in [-n, 2n)."""
  index = jnp.where(index < 0, -index - 1, index)
  return jnp.where(index >= n, 2 * n - 1 - index, index)


def _zoom_rows(factor: jax.Array, base: jax.Array) -> jax.Array:
  """(S, n) -> (S, n): ``base``'s rows resampled as an image axis, bilinear, reflected.

  Row i of the result is row f * (i - c) + c of ``base`` (c the centre). With ``base`` the
  identity it is the zoom's own matrix; with a resize matrix, the resize followed by the zoom.
  """
  size = base.shape[0]
  centre = (size - 1) / 2.0
  coords = factor * (jnp.arange(size, dtype=jnp.float32) - centre) + centre  # (S,)
  low = jnp.floor(coords)
  frac = (coords - low)[:, None]
  low = low.astype(jnp.int32)
  return (1.0 - frac) * base[_reflect(low, size)] + frac * base[_reflect(low + 1, size)]


def _resize_matrix(n_in: int, n_out: int) -> jax.Array:
  """(n_out, n_in): ``_resize`` of one axis as a matrix (the resize of each unit vector)."""
  if n_in == n_out:
    return jnp.eye(n_in)
  return jax.image.resize(jnp.eye(n_in), (n_out, n_in), "linear", antialias=True)


def _random_zoom_keras(u_flip: jax.Array, u_zoom: jax.Array, image: jax.Array,
                       cfg: AugmentConfig) -> jax.Array:
  """(H, W, C) -> (S, S, C): Keras' Resizing, RandomFlip and RandomZoom as one resampling.

  u_flip: scalar uniform; u_zoom: (2,) uniforms (height, width factors). Keras resizes to S, flips, then zooms;
  all three are linear and act on rows and columns separately, so they compose into one (S, H)
  matrix for the rows and one (S, W) for the columns, applied in two small matrix products
  straight to the stored image (flipping reverses the column matrix's inputs).
  """
  h, w, _ = image.shape
  size = cfg.image_size
  factor = 1.0 - cfg.zoom + 2.0 * cfg.zoom * u_zoom  # (2,) uniform in [1 - zoom, 1 + zoom]
  rows = _zoom_rows(factor[0], _resize_matrix(h, size))  # (S, H)
  cols = _zoom_rows(factor[1], _resize_matrix(w, size))  # (S, W)
  if cfg.flip:
    cols = jnp.where(u_flip < 0.5, cols[:, ::-1], cols)
  return jnp.einsum("ih,hwc,jw->ijc", rows, image, cols, precision=jax.lax.Precision.HIGHEST)


def _random_erase(u: jax.Array, noise: jax.Array, image: jax.Array,
                  cfg: AugmentConfig) -> jax.Array:
  """(S, S, C) normalised -> same; with probability cfg.random_erasing a box becomes noise.

  u: (5,) uniforms (apply, area, aspect ratio, top, left). noise: (S, S, C) uniform in [0, 1],
  i.e. random pixel values as in the paper, normalised like the image.
  """
  h, w, _ = image.shape
  area = (_ERASE_AREA[0] + (_ERASE_AREA[1] - _ERASE_AREA[0]) * u[1]) * h * w
  ratio = jnp.exp(_ERASE_LOG_RATIO[0] + (_ERASE_LOG_RATIO[1] - _ERASE_LOG_RATIO[0]) * u[2])
  box_h = jnp.clip(jnp.round(jnp.sqrt(area * ratio)), 1, h)
  box_w = jnp.clip(jnp.round(jnp.sqrt(area / ratio)), 1, w)
  y0 = jnp.floor(u[3] * (h - box_h + 1))
  x0 = jnp.floor(u[4] * (w - box_w + 1))
  rows, cols = jnp.arange(h), jnp.arange(w)
  inside = (
      ((rows >= y0) & (rows < y0 + box_h))[:, None] & ((cols >= x0) & (cols < x0 + box_w))[None, :]
  )  # (S, S)
  erase = inside & (u[0] < cfg.random_erasing)
  return jnp.where(erase[..., None], _standardize(noise, cfg), image)


def _num_uniforms(cfg: AugmentConfig) -> int:
  """Per-example uniform draws consumed by _augment_one: crop (2), flip, zoom (1, or 2 for
  zoom_style="keras"), erasing (5)."""
  return 10 if cfg.zoom_style == "keras" else 9


def _augment_one(u: jax.Array, noise, image: jax.Array, cfg: AugmentConfig) -> jax.Array:
  """(H, W, C) float in [0, 1] -> (S, S, C) normalised, augmented float32.

  u: (_num_uniforms(cfg),) this example's uniforms; noise: (S, S, C) erasing noise or None.
  """
  u_crop, u_flip, u_zoom, u_erase = jnp.split(u, [2, 3, _num_uniforms(cfg) - 5])
  if cfg.crop_padding:
    image = _random_crop(u_crop, image, cfg.crop_padding)
  if cfg.zoom and cfg.zoom_style == "keras":
    image = _random_zoom_keras(u_flip[0], u_zoom, image, cfg)  # flips too
  else:
    if cfg.flip:
      image = _random_flip(u_flip[0], image)
    if cfg.zoom:
      image = _random_zoom(u_zoom[0], image, cfg.zoom, cfg.image_size)
    else:
      image = _resize(image, cfg.image_size)
  image = _standardize(image, cfg)
  if cfg.random_erasing:
    image = _random_erase(u_erase, noise, image, cfg)
  return image


def _mixup(lam, images, targets, perm):
  """Blends the batch with its permutation `perm`; targets are blended alike."""
  return (lam * images + (1.0 - lam) * images[perm], lam * targets + (1.0 - lam) * targets[perm])


def _cutmix(u_centre, lam, images, targets, perm):
  """Pastes a box of area ~(1 - lam) from the permuted batch; targets weighted by that area.

  u_centre: (2,) uniforms placing the box centre.
  """
  _, h, w, _ = images.shape
  half_h = jnp.round(h * jnp.sqrt(1.0 - lam)) // 2
  half_w = jnp.round(w * jnp.sqrt(1.0 - lam)) // 2
  cy, cx = jnp.floor(u_centre * jnp.array([h, w]))
  y0, y1 = jnp.clip(cy - half_h, 0, h), jnp.clip(cy + half_h, 0, h)
  x0, x1 = jnp.clip(cx - half_w, 0, w), jnp.clip(cx + half_w, 0, w)
  rows, cols = jnp.arange(h), jnp.arange(w)
  box = ((rows >= y0) & (rows < y1))[:, None] & ((cols >= x0) & (cols < x1))[None, :]  # (H, W)
  # The box is clipped at the border, so the real pasted fraction can be below 1 - lam.
  kept = 1.0 - ((y1 - y0) * (x1 - x0)) / (h * w)
  return (jnp.where(box[None, :, :, None], images[perm],
                    images), kept * targets + (1.0 - kept) * targets[perm])


def _mix_batch(rng, images, targets, cfg: AugmentConfig):
  """Applies mixup or CutMix to (B, S, S, C) images and (B, K) targets, if enabled.

  One Beta draw and one permutation serve whichever method the batch uses: Gamma sampling is a
  rejection loop that is slow to compile, so it is traced once rather than per method.
  """
  if not (cfg.mixup_alpha or cfg.cutmix_alpha):
    return images, targets
  batch = images.shape[0]
  k_lam, k_u = jax.random.split(rng)
  u = jax.random.uniform(k_u, (batch + 3,))  # permutation keys, method choice, box centre
  perm = jnp.argsort(u[:batch])
  both = cfg.mixup_alpha > 0 and cfg.cutmix_alpha > 0
  use_mixup = u[batch] < 0.5 if both else cfg.mixup_alpha > 0
  alpha = jnp.where(use_mixup, cfg.mixup_alpha, cfg.cutmix_alpha)
  # lam ~ Beta(alpha, alpha) = G1 / (G1 + G2) with Gi ~ Gamma(alpha), in log space since small
  # alphas underflow G to 0. One (2,) draw compiles ~1/3 faster than jax.random.beta's two.
  log_g = jax.random.loggamma(k_lam, alpha, (2,))
  lam = jax.nn.sigmoid(log_g[0] - log_g[1])
  mixup = lambda: _mixup(lam, images, targets, perm)
  cutmix = lambda: _cutmix(u[batch + 1:], lam, images, targets, perm)
  if both:
    return jax.lax.cond(use_mixup, mixup, cutmix)
  return mixup() if cfg.mixup_alpha else cutmix()


def augment(
    rng: jax.Array,
    images: jax.Array,
    labels_onehot: jax.Array,
    cfg: AugmentConfig,
    dtype=jnp.float32,
) -> tuple[jax.Array, jax.Array]:
  """Training preprocessing: crop, flip, zoom/resize, normalise, erase, then mixup/CutMix.

  Args:
    rng: PRNG key for this batch.
    images: (B, H, W, C) uint8.
    labels_onehot: (B, K) one-hot (or already soft) targets.
    cfg: static augmentation settings.
    dtype: dtype of the returned images (e.g. jnp.bfloat16 for mixed precision).

  Returns:
    images (B, S, S, C) `dtype` with S = cfg.image_size, and targets (B, K) float32 whose rows
    still sum to 1 after mixing.
  """
  _check_inputs(images, cfg)
  batch, size, channels = images.shape[0], cfg.image_size, images.shape[-1]
  if labels_onehot.ndim != 2 or labels_onehot.shape[0] != batch:
    raise ValueError(f"labels_onehot must be (B, K) with B = {batch}, got {labels_onehot.shape}")
  k_u, k_mix = jax.random.split(rng)
  # All per-example randomness comes from one flat draw rather than per-example keys: every
  # random op is a threefry hash that XLA compiles on its own, and on CPU a multi-dimensional
  # draw compiles several times slower than a flat one. Rows are independent, so examples still
  # augment independently.
  noise_size = size * size * channels if cfg.random_erasing else 0
  num_uniforms = _num_uniforms(cfg)
  u = jax.random.uniform(k_u, (batch * (num_uniforms + noise_size),))
  u = u.reshape(batch, num_uniforms + noise_size)
  noise = (u[:, num_uniforms:].reshape(batch, size, size, channels) if cfg.random_erasing else None
          )  # (B, S, S, C)
  u = u[:, :num_uniforms]  # (B, num_uniforms)
  x = images.astype(jnp.float32) / 255.0  # (B, H, W, C)
  x = jax.vmap(functools.partial(_augment_one, cfg=cfg))(u, noise, x)  # (B, S, S, C)
  x, targets = _mix_batch(k_mix, x, labels_onehot.astype(jnp.float32), cfg)
  return x.astype(dtype), targets
