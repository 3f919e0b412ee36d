"""TFDS image-classification splits held in host memory, and the index streams that batch them.

Small datasets (CIFAR-10/100 and friends) fit comfortably in host RAM as uint8, so a split is read
once into numpy and every epoch is just a permutation of indices. That keeps the input pipeline
deterministic (a step's batch is a pure function of seed, epoch and step, which makes resuming from
a checkpoint exact) and free of tf.data state. Augmentation happens later, on device (`augment.py`).

A dataset that is not prepared in the data directory is downloaded and prepared there first
(``prepare.py``), unless ``download=False``. Every way the data can be wrong is reported as a
one-line `DataError` that says which directory was searched and how to fix it (`tfds build`
elsewhere, or another data_dir).
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from cgmlp_jax.data.prepare import prepare, prepare_hint
from cgmlp_jax.errors import DataError

# Rows read per tf.data batch while loading; bounds the transient memory of the read.
_READ_BATCH = 10_000


@dataclasses.dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous; use identity
class ArraySplit:
  """One split of an image-classification dataset, fully materialised in host memory."""

  images: np.ndarray  # (N, H, W, C) uint8
  labels: np.ndarray  # (N,) int32
  num_classes: int
  class_names: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.labels)

  @property
  def channels(self) -> int:
    return self.images.shape[-1]

  def train_epoch(self, global_batch_size: int, *, seed: int, epoch: int, process_index: int,
                  process_count: int, start_step: int = 0
                  ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """This process's (images, labels) for each step of one epoch; see ``train_batches``."""
    for idx in train_batches(len(self), global_batch_size, seed=seed, epoch=epoch,
                             process_index=process_index, process_count=process_count,
                             start_step=start_step):
      yield gather(self, idx)

  def eval_epoch(self, global_batch_size: int, *, process_index: int, process_count: int
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    return eval_batches(self, global_batch_size, process_index=process_index,
                        process_count=process_count)


def _base_split_names(split: str) -> list[str]:
  """'train[:90%]+test' -> ['train', 'test']: the prepared splits a TFDS split string reads."""
  return [part.split("[", 1)[0].strip() for part in split.split("+")]


def _format_percent(value: float) -> str:
  # TFDS slice syntax accepts decimals but not exponents, so never let Python pick '1e-05'.
  return f"{value:.6f}".rstrip("0").rstrip(".")


def resolve_splits(train_split: str, validation_split: str | None,
                   holdout_fraction: float) -> tuple[str, str | None]:
  """Returns the (train, validation) TFDS split strings to read.

  An explicit `validation_split` always wins and `holdout_fraction` is then ignored. Otherwise a
  `holdout_fraction` > 0 carves the validation set off the end of the train split with TFDS
  percent slicing, e.g. 0.1 of "train" -> ("train[:90%]", "train[90%:]"). Fractional percents
  (0.075 -> "train[:92.5%]") are fine: TFDS rounds both slices at the same boundary, so the two
  parts never overlap and together cover the split. Without either there is no validation set.
  """
  if validation_split:
    return train_split, validation_split
  if not 0.0 <= holdout_fraction < 1.0:
    raise DataError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}.")
  if holdout_fraction == 0.0:
    return train_split, None
  if not re.fullmatch(r"[\w-]+", train_split):
    raise DataError(
        f"Cannot hold out a fraction of the already sliced or combined split {train_split!r}; "
        "give a plain split name (e.g. 'train') or set an explicit validation split.")
  keep = _format_percent(100.0 * (1.0 - holdout_fraction))
  return f"{train_split}[:{keep}%]", f"{train_split}[{keep}%:]"


def is_fixed_size(features) -> bool:
  return None not in features["image"].shape


def _check_features(name: str, features, fixed_size: bool) -> None:
  """uint8 images with an integer class label; fixed-size ones if they are to be stacked."""
  is_dict = isinstance(features, tfds.features.FeaturesDict)
  image = features["image"] if is_dict and "image" in features else None
  label = features["label"] if is_dict and "label" in features else None
  if (not isinstance(image, tfds.features.Image) or np.dtype(image.np_dtype) != np.uint8 or
      not isinstance(label, tfds.features.ClassLabel)):
    raise DataError(f"Dataset {name!r} has features {features}; only image classification "
                    "datasets (a uint8 'image' and a ClassLabel 'label') are supported.")
  if fixed_size and not is_fixed_size(features):
    raise DataError(
        f"Dataset {name!r} has images of variable size {image.shape}; only fixed-size images "
        "are supported in memory. Stream it instead (config input='stream').")


def _builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  try:
    return tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    searched = data_dir or tfds.core.constants.DATA_DIR
    raise DataError(
        f"Unknown TFDS dataset {name!r}: it is neither a dataset known to tensorflow_datasets "
        f"nor prepared in data_dir {searched!r}. Check the name (e.g. 'cifar10', 'cifar100'). " +
        prepare_hint(name, searched)) from None


def image_channels(name: str, data_dir: str | None = None) -> int | None:
  """The channel count the dataset's image feature declares, from its builder: no data read,
  nothing downloaded. None where it cannot tell (a missing dataset is reported by the readers)."""
  try:
    image = _builder(name, data_dir).info.features["image"]
    channels = image.shape[-1]
  except Exception:  # noqa: BLE001  (unknown or odd datasets: the readers report them)
    return None
  return channels if isinstance(channels, int) else None


def open_split(name: str, split: str, *, data_dir: str | None = None, fixed_size: bool = True,
               download: bool = True) -> tfds.core.DatasetBuilder:
  """The builder of a prepared TFDS dataset that has ``split``.

  With ``download``, a dataset that is not prepared in the data directory is downloaded and
  prepared there first (see ``prepare.prepare``); without it, nothing is ever downloaded.

  Raises:
    DataError: the dataset is unknown, not prepared in the data directory (and cannot be
      downloaded, or ``download`` is False), lacks the split, or is not an image classification
      dataset (of fixed image size, if ``fixed_size``).
  """
  builder = _builder(name, data_dir)
  _check_features(name, builder.info.features, fixed_size)  # before downloading anything
  if download:
    prepare(builder)
    builder = _builder(name, data_dir)  # as prepared: its info now records the splits
  root = str(builder.data_dir_root)

  # A prepared dataset always records its splits. An empty record means either "not prepared"
  # (reported by read_split) or tfds.testing.mock_data, which serves any split name.
  available = sorted(builder.info.splits)
  missing = [s for s in _base_split_names(split) if s not in available]
  if available and missing:
    raise DataError(f"Dataset {name!r} in data_dir {root!r} ({builder.data_dir}) has no split "
                    f"{missing[0]!r}; prepared splits: {available}. " + prepare_hint(name, root) +
                    " Without a test split, hold out a fraction of the train split for validation.")
  return builder


def read_split(builder: tfds.core.DatasetBuilder, split, **as_dataset_kwargs):
  """``builder.as_dataset(split)``, with a missing or malformed split reported as DataError."""
  name, root = builder.name, str(builder.data_dir_root)
  try:
    # Builds the pipeline only; tfds checks here that the data exists on disk (mock_data
    # replaces exactly this method, so the check stays compatible with it).
    return builder.as_dataset(split=split, **as_dataset_kwargs)
  except AssertionError:
    raise DataError(f"Dataset {name!r} is not prepared in data_dir {root!r} (nothing at "
                    f"{builder.data_dir}). " + prepare_hint(name, root)) from None
  except ValueError as e:  # malformed split string, e.g. "train[:x%]"
    raise DataError(f"Invalid split {split!r} for dataset {name!r}: {e}") from None


def load_split(name: str, split: str, *, data_dir: str | None = None,
               download: bool = True) -> ArraySplit:
  """Reads a TFDS split into host memory, downloading and preparing the dataset if needed.

  Args:
    name: TFDS dataset name, optionally with config/version ("cifar10", "cifar10:3.0.2").
    split: TFDS split string, slicing allowed ("train", "train[:90%]").
    data_dir: TFDS data directory; None uses the TFDS default (TFDS_DATA_DIR or
      ~/tensorflow_datasets).
    download: download and prepare the dataset in data_dir if it is not prepared there; False
      never downloads.

  Raises:
    DataError: the dataset is unknown, not prepared in the data directory (and cannot be
      downloaded, or ``download`` is False), lacks the split, or is not a fixed-size image
      classification dataset.
  """
  builder = open_split(name, split, data_dir=data_dir, download=download)
  root = str(builder.data_dir_root)
  ds = read_split(builder, split, shuffle_files=False,
                  read_config=tfds.ReadConfig(try_autocache=False))

  # Never batch_size=-1: inside mock_data it pads to sys.maxsize rows and aborts the process.
  ds = ds.map(lambda ex: (ex["image"], ex["label"])).batch(_READ_BATCH)
  chunks = _read_all(builder, split, ds, data_dir or tfds.core.constants.DATA_DIR)
  if not chunks:
    raise DataError(f"Split {split!r} of dataset {name!r} in {root!r} has no examples.")
  label_feature = builder.info.features["label"]
  return ArraySplit(
      images=np.concatenate([images for images, _ in chunks]),
      labels=np.concatenate([labels for _, labels in chunks]).astype(np.int32),
      num_classes=label_feature.num_classes,
      class_names=tuple(label_feature.names),
  )


def _read_all(builder: tfds.core.DatasetBuilder, split: str, ds, data_dir: str) -> list:
  """Every batch of ``ds``; a cut or corrupt data file is a DataError naming it and the fix, where
  TensorFlow's DataLossError (44 lines) named no file."""
  import tensorflow as tf  # noqa: PLC0415  (tfds has loaded it)
  try:
    return list(tfds.as_numpy(ds))
  # DataLossError: a record cut or changed; FailedPreconditionError: fewer records than the
  # dataset's info counts (a file cut at a record boundary); InvalidArgumentError: an image that
  # does not decode.
  except (tf.errors.DataLossError, tf.errors.FailedPreconditionError,
          tf.errors.InvalidArgumentError) as e:
    bad = _corrupt_file(builder, split)
    where = (f"its file {bad} is truncated or corrupt" if bad else
             f"a file of split {split!r} in {builder.data_dir} holds a corrupt record")
    first_line = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise DataError(
        f"Dataset {builder.name!r}: {where} ({type(e).__name__}: {first_line}). Prepare it again: "
        f"delete {builder.data_dir} and run `tfds build {builder.name} --data_dir "
        f"{data_dir}` (a run with download=True prepares it itself), or copy it "
        f"again from where it was prepared.") from None


def _corrupt_file(builder: tfds.core.DatasetBuilder, split: str) -> str | None:
  """The first data file of ``split`` that does not read to its end or holds another number of
  records than the dataset's info says, or None."""
  import tensorflow as tf  # noqa: PLC0415
  for name in _base_split_names(split):
    try:
      info = builder.info.splits[name]
      files = list(zip(info.filepaths, info.shard_lengths))
    except (KeyError, TypeError, ValueError):
      continue
    for path, length in files:
      try:
        records = sum(1 for _ in tf.data.TFRecordDataset(str(path)))
      except tf.errors.OpError:
        return str(path)
      if records != length:
        return str(path)
  return None


def gather(split: ArraySplit, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Host batch for the given example indices: images (B, H, W, C) uint8, labels (B,) int32."""
  return split.images[idx], split.labels[idx]


def _local_batch_size(global_batch_size: int, process_index: int, process_count: int) -> int:
  if global_batch_size <= 0:
    raise DataError(f"global batch size must be positive, got {global_batch_size}.")
  if not 0 <= process_index < process_count:
    raise DataError(f"process_index {process_index} is not in [0, {process_count}).")
  if global_batch_size % process_count:
    raise DataError(
        f"global batch size {global_batch_size} is not divisible by the {process_count} "
        "processes; every process must feed the same number of examples.")
  return global_batch_size // process_count


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full training steps per epoch; the last partial batch is dropped."""
  if global_batch_size <= 0:
    raise DataError(f"global batch size must be positive, got {global_batch_size}.")
  if num_examples < global_batch_size:
    raise DataError(
        f"The training split has {num_examples} examples, fewer than one global batch of "
        f"{global_batch_size}; lower the batch size.")
  return num_examples // global_batch_size


def train_batches(
    num_examples: int,
    global_batch_size: int,
    *,
    seed: int,
    epoch: int,
    process_index: int,
    process_count: int,
    start_step: int = 0,
) -> Iterator[np.ndarray]:
  """Yields, for each step of one epoch, the indices of this process's share of the batch.

  The epoch's order is `default_rng([seed, epoch]).permutation`, identical on every process, and
  the global batch of each step is cut into `process_count` contiguous chunks, so processes read
  disjoint examples that together form the global batch. Because a step's indices depend only on
  (seed, epoch, step), resuming mid-epoch with `start_step` reproduces the uninterrupted run.

  Yields:
    (global_batch_size // process_count,) int64 indices into the split.
  """
  local = _local_batch_size(global_batch_size, process_index, process_count)
  steps = steps_per_epoch(num_examples, global_batch_size)
  if not 0 <= start_step <= steps:
    raise DataError(f"start_step {start_step} is not in [0, {steps}] for this epoch.")
  if seed < 0 or epoch < 0:
    raise DataError(f"seed and epoch must be non-negative, got seed={seed}, epoch={epoch}.")
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)  # (N,)

  def batches() -> Iterator[np.ndarray]:
    for step in range(start_step, steps):
      start = step * global_batch_size + process_index * local
      yield order[start:start + local]

  return batches()


def eval_batches(split: ArraySplit, global_batch_size: int, *, process_index: int,
                 process_count: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Yields every example of the split exactly once, in full-size batches.

  Shapes must stay static for the jitted eval step, and every process must run the same number
  of steps or multi-host collectives deadlock. So the last global batch is padded up to full
  size with copies of example 0 and a mask marks the real rows; each process takes its own
  contiguous chunk of every global batch (a chunk may be all padding).

  Yields:
    images (L, H, W, C) uint8, labels (L,) int32, mask (L,) float32 with 1.0 for real examples,
    where L = global_batch_size // process_count.
  """
  local = _local_batch_size(global_batch_size, process_index, process_count)
  num_batches = math.ceil(len(split) / global_batch_size)

  def batches() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    for b in range(num_batches):
      idx = b * global_batch_size + process_index * local + np.arange(local)  # (L,)
      real = idx < len(split)  # (L,)
      images, labels = gather(split, np.where(real, idx, 0))
      yield images, labels, real.astype(np.float32)

  return batches()
