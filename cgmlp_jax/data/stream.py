"""Streaming TFDS input for datasets that do not fit in host memory (imagenette, imagenet2012).

Each process reads only its own even share of a split (``tfds.even_splits``, as
``tfds.split_for_jax_process`` does) through tf.data: file + buffer shuffling seeded by
(seed, epoch), JPEG/PNG decoding, Inception-style random-resized-crop + horizontal flip to the
model's resolution for training (resize + central crop for evaluation), batching, prefetching.

The train stream is a pure function of (seed, epoch, process): every random draw is a stateless op
keyed by the example's position in the epoch. A run resumed mid-epoch skips the records of the
steps already taken before decoding anything, so resuming is exact, not only at epoch boundaries.
It yields the same (images uint8 (L, S, S, C), labels) host batches as ``ArraySplit``, so the
trainer is the same; on-device augmentation still applies (flip/mixup), but crop and zoom, which
assume CIFAR-like fixed-size inputs, belong to the host here.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cgmlp_jax.data.sources import (_local_batch_size, open_split, read_split, steps_per_epoch,
                                    DataError)


@dataclasses.dataclass(frozen=True, eq=False)
class StreamSplit:
  """One split read from disk every epoch, images cropped/resized to ``image_size``."""

  builder: tfds.core.DatasetBuilder
  split: str
  num_examples: int
  num_classes: int
  class_names: tuple[str, ...]
  channels: int
  image_size: int
  min_crop_area: float = 0.08  # random-resized-crop area range: [min_crop_area, 1]
  eval_crop: float = 0.875  # evaluation: resize the short side to image_size / eval_crop, crop
  shuffle_buffer: int = 10_000

  def __len__(self) -> int:
    return self.num_examples

  def _read(self, split, shuffle_seed: int | None = None) -> tf.data.Dataset:
    return read_split(
        self.builder, split, shuffle_files=shuffle_seed is not None,
        read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed, try_autocache=False),
        decoders={"image": tfds.decode.SkipDecoding()})

  def _decode(self, encoded: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_image(encoded, channels=self.channels, expand_animations=False)

  def _to_uint8(self, image: tf.Tensor) -> tf.Tensor:  # (S, S, C) float -> uint8
    image.set_shape((self.image_size, self.image_size, self.channels))
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)

  def _train_image(self, encoded: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = self._decode(encoded)  # (H, W, C) uint8
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=crop_seed,
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(self.min_crop_area, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, size)
    image = tf.image.resize(image, (self.image_size, self.image_size), antialias=True)
    return self._to_uint8(tf.image.stateless_random_flip_left_right(image, flip_seed))

  def _eval_image(self, encoded: tf.Tensor) -> tf.Tensor:
    image = self._decode(encoded)
    hw = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = self.image_size / self.eval_crop / tf.reduce_min(hw)
    image = tf.image.resize(image, tf.cast(tf.math.ceil(hw * scale), tf.int32), antialias=True)
    image = tf.image.resize_with_crop_or_pad(image, self.image_size, self.image_size)
    return self._to_uint8(image)

  def train_epoch(self, global_batch_size: int, *, seed: int, epoch: int, process_index: int,
                  process_count: int, start_step: int = 0
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """This process's (images (L,S,S,C) uint8, labels (L,) int32) for each step of one epoch.

    Every process reads ``steps_per_epoch`` batches of its own, disjoint share of the split.
    """
    local = _local_batch_size(global_batch_size, process_index, process_count)
    steps = steps_per_epoch(self.num_examples, global_batch_size)
    if not 0 <= start_step <= steps:
      raise DataError(f"start_step {start_step} is not in [0, {steps}] for this epoch.")
    epoch_seed = int(np.random.default_rng([seed, epoch, process_index]).integers(2**31))
    share = tfds.even_splits(self.split, n=process_count, drop_remainder=True)[process_index]
    ds = self._read(share, shuffle_seed=epoch_seed)
    ds = ds.shuffle(self.shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
    ds = ds.take(steps * local).enumerate().skip(start_step * local)
    ds = ds.map(lambda i, ex: (self._train_image(ex["image"], tf.stack([epoch_seed, i])),
                               tf.cast(ex["label"], tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return iter(tfds.as_numpy(ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)))

  def eval_epoch(self, global_batch_size: int, *, process_index: int, process_count: int
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every example once: (images, labels, mask) with padding rows (mask 0) so that every
    process runs the same ``ceil(num_examples / global_batch_size)`` steps."""
    local = _local_batch_size(global_batch_size, process_index, process_count)
    steps = math.ceil(self.num_examples / global_batch_size)
    share = tfds.even_splits(self.split, n=process_count)[process_index]
    ds = self._read(share).map(
        lambda ex: (self._eval_image(ex["image"]), tf.cast(ex["label"], tf.int32), 1.0),
        num_parallel_calls=tf.data.AUTOTUNE)
    size = self.image_size
    padding = tf.data.Dataset.from_tensors(
        (tf.zeros((size, size, self.channels), tf.uint8), 0, 0.0)).repeat()
    ds = ds.concatenate(padding).take(steps * local).batch(local).prefetch(tf.data.AUTOTUNE)
    return iter(tfds.as_numpy(ds))


def _num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError) as e:
    raise DataError(f"Invalid split {split!r} for dataset {builder.name!r}: {e}") from None


def stream_split(name: str, split: str, *, image_size: int, data_dir: str | None = None,
                 download: bool = True, **options) -> StreamSplit:
  """Opens a split for streaming (images of any size), downloading and preparing the dataset if
  needed and ``download`` (see ``open_split``); ``options``: StreamSplit fields."""
  builder = open_split(name, split, data_dir=data_dir, fixed_size=False, download=download)
  num_examples = _num_examples(builder, split)
  if not num_examples:
    raise DataError(f"Split {split!r} of dataset {name!r} in {builder.data_dir} has no examples.")
  features = builder.info.features
  return StreamSplit(builder=builder, split=split, num_examples=num_examples,
                     num_classes=features["label"].num_classes,
                     class_names=tuple(features["label"].names),
                     channels=features["image"].shape[-1] or 3, image_size=image_size, **options)


def in_memory_bytes(name: str, split: str, data_dir: str | None = None, *,
                    download: bool = True) -> float:
  """Host memory a split would take as uint8 arrays; inf for images of variable size.

  Like the other readers it first downloads and prepares the dataset if needed and ``download``,
  and checks that it has the split.
  """
  builder = open_split(name, split, data_dir=data_dir, fixed_size=False, download=download)
  shape = builder.info.features["image"].shape
  if not builder.info.splits:  # tfds.testing.mock_data records no splits: small test data
    return 0.0
  num_examples = _num_examples(builder, split)  # also rejects a malformed split string
  return math.inf if None in shape else float(np.prod(shape)) * num_examples
