"""Images to inspect a model with: read from files or a dataset, checked, preprocessed as in eval.

Visualisations must see exactly what evaluation sees, so preprocessing is the data pipeline's own
``normalize`` (resize to the model's input size, per-channel standardisation with the run's mean
and std), and the picture drawn under an overlay is the same resized image, undone from the
normalisation. Inputs the model cannot take faithfully (not square: resizing would distort them;
not RGB) are rejected with their shape rather than silently reshaped.
"""
import re
from typing import Sequence

import numpy as np
from matplotlib import image as mpimg

from cgmlp_jax import data

Image = np.ndarray  # (H, W, 3) uint8


def read_files(paths: Sequence[str]) -> list[Image]:
  """Reads PNG/JPEG files as uint8 RGB; an alpha channel (as in most PNGs) is dropped."""
  images = []
  for path in paths:
    try:
      x = mpimg.imread(path)
    except (OSError, ValueError, SyntaxError) as e:  # PIL: SyntaxError for a broken PNG
      raise ValueError(f"Cannot read image {path}: {e}") from None
    if x.dtype != np.uint8:  # PNGs come back as floats in [0, 1]
      x = np.round(np.clip(x, 0.0, 1.0) * 255).astype(np.uint8)
    if x.ndim == 3 and x.shape[-1] == 4:
      x = x[..., :3]
    check(x, name=path)
    images.append(x)
  return images


def from_dataset(dataset: str, split: str, indices: Sequence[int], *, data_dir: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  """``(images (B, H, W, C) uint8, labels (B,), class names)`` of examples ``indices`` of a split.

  For a plain split name only the slice spanning the indices is read, not the whole split.
  """
  if not indices or min(indices) < 0:
    raise ValueError(f"Give non-negative example indices; got {list(indices)}.")
  plain = re.fullmatch(r"[\w-]+", split) is not None
  start = min(indices) if plain else 0
  read = f"{split}[{start}:{max(indices) + 1}]" if plain else split
  part = data.load_split(dataset, read, data_dir=data_dir)
  idx = np.asarray(indices) - start
  if idx.max() >= len(part):
    raise ValueError(f"Index {max(indices)} is out of range: split {split!r} of {dataset!r} has "
                     f"{start + len(part)} examples.")
  return part.images[idx], part.labels[idx], part.class_names


def check(image: np.ndarray, name: str = "image") -> None:
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise ValueError(f"{name} has shape {image.shape} and dtype {image.dtype}; expected uint8 RGB "
                     f"of shape (H, W, 3).")
  if image.shape[0] != image.shape[1]:
    raise ValueError(f"{name} has shape {image.shape}: it is not square, and the model takes "
                     f"square inputs; crop it to (S, S, 3) first.")


def preprocess(images: Sequence[Image] | np.ndarray, image_size: int, *,
               mean: Sequence[float] = data.CIFAR10_MEAN, std: Sequence[float] = data.CIFAR10_STD
               ) -> tuple[np.ndarray, np.ndarray]:
  """``(model inputs (B, S, S, 3) float32, display images (B, S, S, 3) in [0, 1])``, S = image_size.

  ``images``: uint8 (H, W, 3) images, square, of any (even differing) sizes.
  """
  if isinstance(images, np.ndarray) and images.ndim != 4:
    raise ValueError(f"Expected a batch of images (B, H, W, 3), got shape {images.shape}.")
  if len(images) == 0:
    raise ValueError("No images given.")
  config = data.AugmentConfig(image_size=image_size, mean=mean, std=std)
  for i, image in enumerate(images):
    check(np.asarray(image), name=f"Image {i}")
  x = np.concatenate([np.asarray(data.normalize(np.asarray(im)[None], config)) for im in images])
  display = np.clip(x * np.asarray(config.std) + np.asarray(config.mean), 0.0, 1.0)
  return x, display
