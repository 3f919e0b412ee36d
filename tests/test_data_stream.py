"""Streaming input (cgmlp_jax.data.stream) on a tiny generated dataset of variable-size images."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from cgmlp_jax.data import DataError, StreamSplit, in_memory_bytes, stream_split
from cgmlp_jax.train import loop
from tiny_run import tiny_config

_N, _TEST_N = 24, 10  # each example's label is its index, so a batch tells which examples it holds


class CgmlpStreamVarsize(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """24 train / 10 test PNG images of random sizes 12..40 px. Unregistered: found on disk only."""

  VERSION = tfds.core.Version("1.0.0")
  code_path = None  # no source file / checksums to look up (see test_data_sources)

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.ClassLabel(num_classes=_N)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(_N, 0), "test": self._generate_examples(_TEST_N, 1)}

  def _generate_examples(self, n, seed):
    rng = np.random.default_rng(seed)
    for i in range(n):
      h, w = rng.integers(12, 41, 2)
      yield i, {"image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "label": i}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp("tfds_stream"))
  CgmlpStreamVarsize(data_dir=path).download_and_prepare()
  return path


def train_epoch(split, **kwargs):
  kwargs = {"seed": 0, "epoch": 0, "process_index": 0, "process_count": 1, **kwargs}
  return [tuple(map(np.copy, batch)) for batch in split.train_epoch(8, **kwargs)]


def test_train_epoch_shapes_determinism_and_resume(data_dir):
  split = stream_split("cgmlp_stream_varsize", "train", image_size=16, data_dir=data_dir)
  assert isinstance(split, StreamSplit) and len(split) == _N and split.channels == 3
  first = train_epoch(split)
  assert len(first) == 3
  for images, labels in first:
    assert images.shape == (8, 16, 16, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int32
  assert sorted(np.concatenate([labels for _, labels in first])) == list(range(_N))
  again = train_epoch(split)
  for (a_images, a_labels), (b_images, b_labels) in zip(first, again):
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
  other_epoch = train_epoch(split, epoch=1)
  assert any((a[1] != b[1]).any() for a, b in zip(first, other_epoch))  # reshuffled
  resumed = train_epoch(split, start_step=1)  # mid-epoch resume replays exactly
  assert len(resumed) == 2
  for (a_images, a_labels), (b_images, b_labels) in zip(first[1:], resumed):
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)


def test_processes_read_disjoint_shares(data_dir):
  split = stream_split("cgmlp_stream_varsize", "train", image_size=16, data_dir=data_dir)
  shares = [np.concatenate([labels for _, labels in train_epoch(split, process_index=p,
                                                                 process_count=2)])
            for p in range(2)]
  assert [len(s) for s in shares] == [12, 12]  # 3 steps x 4 local examples each
  assert not set(shares[0]) & set(shares[1])
  assert sorted(np.concatenate(shares)) == list(range(_N))


def test_eval_epoch_pads_and_counts_every_example_once(data_dir):
  split = stream_split("cgmlp_stream_varsize", "test", image_size=16, data_dir=data_dir)
  seen, steps = [], []
  for p in range(2):
    batches = list(split.eval_epoch(8, process_index=p, process_count=2))
    steps.append(len(batches))
    for images, labels, mask in batches:
      assert images.shape == (4, 16, 16, 3) and mask.shape == (4,)
      seen.extend(labels[mask == 1])
  assert steps == [2, 2]  # ceil(10 / 8) on every process
  assert sorted(seen) == list(range(_TEST_N))


def test_stream_split_errors(data_dir):
  with pytest.raises(DataError, match="has no split 'validation'"):
    stream_split("cgmlp_stream_varsize", "validation", image_size=16, data_dir=data_dir)
  assert in_memory_bytes("cgmlp_stream_varsize", "train", data_dir) == float("inf")


def test_variable_size_dataset_trains_streamed_automatically(data_dir, tmp_path):
  config = tiny_config(model="test_gmlp", dataset="cgmlp_stream_varsize", data_dir=data_dir,
                       num_epochs=1, test_split="test")
  config.augment.crop_padding = 0
  summary = loop.train_and_evaluate(config, str(tmp_path))  # input="auto" -> stream
  assert summary["step"] == 2  # 18 train examples (75 %) // batch 8
  assert 0.0 <= summary["test"]["top1"] <= 1.0

  config.augment.crop_padding = 4
  with pytest.raises(ValueError, match=r"set augment.crop_padding=0"):
    loop.train_and_evaluate(config, str(tmp_path / "crop"))
