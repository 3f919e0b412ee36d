"""Tests for cgmlp_jax.data.sources: loading TFDS splits (downloading them with the network faked)
and the batch index streams."""
import pathlib
import socket
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cgmlp_jax.data import (
    ArraySplit,
    DataError,
    eval_batches,
    gather,
    load_split,
    resolve_splits,
    steps_per_epoch,
    train_batches,
)
from cgmlp_jax.data import sources

_TINY_N = 10
_TINY_SHAPE = (8, 8, 3)


def _tiny_images() -> np.ndarray:
  return np.random.default_rng(0).integers(0, 256, (_TINY_N, *_TINY_SHAPE), dtype=np.uint8)


class CgmlpTinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Ten 8x8 images, train split only. Unregistered, so TFDS can only find it on disk."""

  VERSION = tfds.core.Version("1.0.0")
  # There is no source file or checksums to look up; tfds' lookup would need the optional
  # importlib_resources package whenever this module's name is dotted (pytest import modes).
  code_path = None

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=_TINY_SHAPE),
            "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
        }),
    )

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples()}

  def _generate_examples(self):
    for i, image in enumerate(_tiny_images()):
      yield i, {"image": image, "label": i % 3}


class CgmlpTinyVarsize(CgmlpTinyImages, skip_registration=True):
  """Like CgmlpTinyImages but with a variable image size, which cannot be stacked."""

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=["a", "b", "c"]),
        }),
    )


_TINY_URL = "https://cgmlp.invalid/tiny_images.npy"


class CgmlpTinyDownload(CgmlpTinyImages):
  """The tiny images as a registered dataset that TFDS downloads (from a URL the tests fake) and
  prepares: 8 train and 2 test examples."""

  def _split_generators(self, dl_manager):
    images = np.load(dl_manager.download(_TINY_URL))  # (10, 8, 8, 3) uint8
    return {"train": self._examples(images[:8]), "test": self._examples(images[8:], start=8)}

  def _examples(self, images, start=0):
    for i, image in enumerate(images, start):
      yield i, {"image": image, "label": i % 3}


class CgmlpTinyManual(CgmlpTinyDownload):
  """Like CgmlpTinyDownload, but its file must be put in the manual_dir by hand."""

  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Put tiny_images.npy,
  which you get by hand, in manual_dir.
  """

  def _split_generators(self, dl_manager):
    images = np.load(dl_manager.manual_dir / "tiny_images.npy")
    return {"train": self._examples(images[:8]), "test": self._examples(images[8:], start=8)}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
  """A data_dir holding both tiny datasets, prepared locally (no downloads involved)."""
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  for cls in (CgmlpTinyImages, CgmlpTinyVarsize):
    cls(data_dir=data_dir).download_and_prepare()
  return data_dir


def test_load_split_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=12):
    split = load_split("cifar10", "train[:90%]", data_dir=str(tmp_path))
  assert split.images.shape == (12, 32, 32, 3) and split.images.dtype == np.uint8
  assert split.labels.shape == (12,) and split.labels.dtype == np.int32
  assert split.labels.min() >= 0 and split.labels.max() < 10
  assert split.num_classes == 10 and len(split.class_names) == 10
  assert len(split) == 12


def test_load_split_reads_prepared_data(tiny_dir):
  split = load_split("cgmlp_tiny_images", "train", data_dir=tiny_dir)
  assert split.num_classes == 3 and split.class_names == ("a", "b", "c")
  # Shuffled on disk, so compare as sets of (image, label) pairs.
  got = sorted((img.tobytes(), int(lab)) for img, lab in zip(split.images, split.labels))
  want = sorted((img.tobytes(), i % 3) for i, img in enumerate(_tiny_images()))
  assert got == want
  train, val = resolve_splits("train", None, 0.25)
  assert len(load_split("cgmlp_tiny_images", train, data_dir=tiny_dir)) == 8
  assert len(load_split("cgmlp_tiny_images", val, data_dir=tiny_dir)) == 2


def test_load_split_missing_split(tiny_dir):
  with pytest.raises(DataError) as err:
    load_split("cgmlp_tiny_images", "test", data_dir=tiny_dir)
  message = str(err.value)
  assert tiny_dir in message and "['train']" in message and "tfds build" in message
  with pytest.raises(DataError, match="Invalid split"):
    load_split("cgmlp_tiny_images", "train[:x%]", data_dir=tiny_dir)


def test_load_split_unknown_dataset(tmp_path):
  with pytest.raises(DataError, match="Unknown TFDS dataset 'no_such_dataset_xyz'"):
    load_split("no_such_dataset_xyz", "train", data_dir=str(tmp_path))


def test_load_split_downloads_and_prepares_a_missing_dataset(tmp_path, monkeypatch):
  fetched = []

  def fake_download(self, url):  # serves the file the URL would; nothing touches the network
    fetched.append(url)
    np.save(tmp_path / "tiny_images.npy", _tiny_images())
    return tmp_path / "tiny_images.npy"

  monkeypatch.setattr(tfds.download.DownloadManager, "download", fake_download)
  data_dir = str(tmp_path / "tfds")
  train = load_split("cgmlp_tiny_download", "train", data_dir=data_dir)
  assert fetched == [_TINY_URL] and len(train) == 8
  assert tfds.builder("cgmlp_tiny_download", data_dir=data_dir).is_prepared()
  test = load_split("cgmlp_tiny_download", "test", data_dir=data_dir)
  assert fetched == [_TINY_URL] and len(test) == 2  # prepared once, for every split
  got = sorted(image.tobytes() for image in np.concatenate([train.images, test.images]))
  assert got == sorted(image.tobytes() for image in _tiny_images())


@pytest.mark.parametrize("name", ["cifar10", "cgmlp_tiny_download"])
def test_load_split_without_download_never_downloads(name, tmp_path, monkeypatch):
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare",
                      lambda *args, **kwargs: pytest.fail("download_and_prepare called"))
  with pytest.raises(DataError, match="not prepared") as err:
    load_split(name, "train", data_dir=str(tmp_path), download=False)
  assert str(tmp_path) in str(err.value) and f"tfds build {name}" in str(err.value)


def test_offline_download_fails_in_seconds_with_one_line(tmp_path, monkeypatch):
  def no_network(*args, **kwargs):  # as on an offline machine: no name resolves
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

  monkeypatch.setattr(socket, "getaddrinfo", no_network)
  start = time.monotonic()
  with pytest.raises(DataError) as err:
    load_split("cifar10", "train", data_dir=str(tmp_path))
  assert time.monotonic() - start < 5  # TFDS's own retries would take about 200 s
  message = str(err.value)
  assert "\n" not in message
  for part in ["'cifar10'", f"data_dir {str(tmp_path)!r}", "www.cs.toronto.edu is unreachable",
               f"`tfds build cifar10 --data_dir {tmp_path}`", "TFDS_DATA_DIR", "--config.data_dir"]:
    assert part in message
  assert not tfds.builder("cifar10", data_dir=str(tmp_path)).is_prepared()


def test_manual_download_dataset_names_the_instructions_and_manual_dir(tmp_path):
  data_dir, manual_dir = tmp_path / "tfds", tmp_path / "tfds" / "downloads" / "manual"
  with pytest.raises(DataError, match="manual download instructions") as err:
    load_split("cgmlp_tiny_manual", "train", data_dir=str(data_dir))
  message = str(err.value)
  assert "\n" not in message and f"manual_dir {str(manual_dir)!r}" in message
  assert "(Put tiny_images.npy, which you get by hand, in manual_dir.)" in message
  manual_dir.mkdir(parents=True)
  np.save(manual_dir / "tiny_images.npy", _tiny_images())
  assert len(load_split("cgmlp_tiny_manual", "test", data_dir=str(data_dir))) == 2


def test_load_split_rejects_variable_size_images(tiny_dir):
  with pytest.raises(DataError, match="variable size .*input=.stream."):
    load_split("cgmlp_tiny_varsize", "train", data_dir=tiny_dir)


@pytest.mark.parametrize("args, expected", [
    (("train", None, 0.1), ("train[:90%]", "train[90%:]")),
    (("train", "", 0.075), ("train[:92.5%]", "train[92.5%:]")),
    (("train", "test", 0.1), ("train", "test")),
    (("train", None, 0.0), ("train", None)),
])
def test_resolve_splits(args, expected):
  assert resolve_splits(*args) == expected


@pytest.mark.parametrize("args", [("train", None, 1.0), ("train", None, -0.1),
                                  ("train[:50%]", None, 0.1)])
def test_resolve_splits_rejects(args):
  with pytest.raises(DataError):
    resolve_splits(*args)


def _epoch(n=103, batch=8, **kwargs):
  kwargs = {"seed": 3, "epoch": 0, "process_index": 0, "process_count": 1, **kwargs}
  return list(train_batches(n, batch, **kwargs))


def test_train_batches_deterministic_permutation_drop_last():
  first = _epoch()
  assert len(first) == steps_per_epoch(103, 8) == 12
  assert all(b.shape == (8,) for b in first)
  flat = np.concatenate(first)
  assert len(np.unique(flat)) == 96  # no repeats; 7 examples dropped
  np.testing.assert_array_equal(flat, np.concatenate(_epoch()))
  assert not np.array_equal(flat, np.concatenate(_epoch(epoch=1)))


def test_train_batches_processes_partition_global_batch():
  full = _epoch()
  p0, p1 = _epoch(process_count=2), _epoch(process_index=1, process_count=2)
  for g, a, b in zip(full, p0, p1, strict=True):
    assert a.shape == b.shape == (4,)
    np.testing.assert_array_equal(np.concatenate([a, b]), g)


def test_train_batches_resume():
  full = _epoch()
  tail = _epoch(start_step=5)
  assert len(tail) == len(full) - 5
  for a, b in zip(tail, full[5:]):
    np.testing.assert_array_equal(a, b)


def test_batch_size_errors():
  with pytest.raises(DataError, match="fewer than one global batch"):
    steps_per_epoch(5, 8)
  with pytest.raises(DataError, match="not divisible"):
    _epoch(batch=9, process_count=2)


def test_eval_batches_cover_every_example_once():
  n, batch, procs = 23, 8, 2
  split = ArraySplit(images=np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones(
      (1, 2, 2, 3), np.uint8),
                     labels=np.arange(n, dtype=np.int32),
                     num_classes=n,
                     class_names=tuple(map(str, range(n))))
  per_process = [
      list(eval_batches(split, batch, process_index=p, process_count=procs)) for p in range(procs)
  ]
  assert len(per_process[0]) == len(per_process[1]) == 3
  seen = []
  for batches in per_process:
    for images, labels, mask in batches:
      assert images.shape == (4, 2, 2, 3) and labels.shape == mask.shape == (4,)
      np.testing.assert_array_equal(images[:, 0, 0, 0], labels)  # rows stay aligned
      seen.extend(labels[mask > 0].tolist())
  assert sorted(seen) == list(range(n))


def test_gather():
  split = ArraySplit(
      np.arange(5, dtype=np.uint8).reshape(5, 1, 1, 1),
      np.arange(5, dtype=np.int32) * 10, 50, ())
  images, labels = gather(split, np.array([4, 1]))
  assert images.ravel().tolist() == [4, 1] and labels.tolist() == [40, 10]


def test_prefetch_yields_every_batch_in_order_as_global_arrays():
  from cgmlp_jax import data, parallel
  split = ArraySplit(images=np.arange(16 * 2 * 2 * 3, dtype=np.uint8).reshape(16, 2, 2, 3),
                     labels=np.arange(16, dtype=np.int32), num_classes=16,
                     class_names=tuple(map(str, range(16))))
  mesh = parallel.make_mesh()
  order = [np.arange(8) + 8 * i for i in range(2)]
  batches = list(data.prefetch((gather(split, idx) for idx in order), mesh))
  assert len(batches) == 2
  for (images, labels), idx in zip(batches, order):
    assert labels.sharding == parallel.batch_sharded(mesh)
    np.testing.assert_array_equal(labels, idx)
    np.testing.assert_array_equal(images, split.images[idx])


@pytest.mark.parametrize("cut", [0, 7])  # at a record boundary (10 of 20 records), mid-record
def test_a_cut_data_file_is_one_line_naming_it_and_the_fix(tmp_path, cut):
  """A tfrecord cut in half used to be TensorFlow's 44-line DataLossError naming no file."""
  builder = tfds.testing.DummyMnist(data_dir=str(tmp_path))  # made here, offline: 20 examples
  builder.download_and_prepare()
  train_file = next(pathlib.Path(builder.data_dir).glob("dummy_mnist-train.tfrecord*"))
  train_file.write_bytes(train_file.read_bytes()[:train_file.stat().st_size // 2 + cut])
  with pytest.raises(DataError) as error:
    sources.load_split("dummy_mnist", "train", data_dir=str(tmp_path), download=False)
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith(f"Dataset 'dummy_mnist': its file {train_file} is truncated or "
                            f"corrupt (")
  assert f"Prepare it again: delete {builder.data_dir} and run `tfds build dummy_mnist " \
         f"--data_dir {tmp_path}`" in message
  assert len(sources.load_split("dummy_mnist", "test", data_dir=str(tmp_path),
                                download=False)) == 20  # the other split reads
