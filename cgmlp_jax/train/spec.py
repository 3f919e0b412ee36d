"""What a run reads and derives from its config before it builds anything: the data splits, and a
small frozen ``RunSpec`` of the figures the loop needs (image size, steps per epoch, where to stop)
so that nothing downstream goes back to the config for them."""
import dataclasses
from typing import Any

import ml_collections

from cgmlp_jax import data as data_lib
from cgmlp_jax.errors import ConfigError
from cgmlp_jax.train import config as config_lib


@dataclasses.dataclass(frozen=True)
class RunSpec:
  image_size: int  # the model's input side; the data is resized to it
  num_classes: int
  steps_per_epoch: int  # full batches of the train split (the last partial batch is dropped)
  total_steps: int  # num_epochs epochs: the length the schedule spans
  stop_step: int  # where this start stops: total_steps, or earlier (stop_after_epochs)

  def epoch(self, step: int) -> int:
    return step // self.steps_per_epoch


def load_data(config: ml_collections.ConfigDict, image_size: int) -> dict[str, Any]:
  """Train / validation / test splits, in host memory or streamed at ``image_size``
  (``config.input``); fails before any model work if one is missing."""
  train_split, val_split = data_lib.resolve_splits(
      config.train_split, config.validation_split or None, config.holdout_fraction)
  splits = {name: split for name, split in
            {"train": train_split, "val": val_split, "test": config.test_split or None}.items()
            if split}
  # Downloads and prepares the dataset first if it is not prepared (unless config.download is
  # False), then checks every split before any is read.
  sizes = {name: data_lib.in_memory_bytes(config.dataset, split, config.data_dir,
                                          download=config.download)
           for name, split in splits.items()}
  stream = config.input == "stream" or (config.input == "auto" and
                                        sizes["train"] > config.memory_limit_gb * 2**30)
  if stream and (config.augment.crop_padding or config.augment.zoom):
    raise ConfigError(f"Streaming {config.dataset} (input={config.input!r}) crops on the host "
                     f"(random-resized-crop); set augment.crop_padding=0 and augment.zoom=0, or "
                     f"input='memory' for a dataset of fixed-size images that fits in memory.")
  if stream:
    return {name: data_lib.stream_split(config.dataset, split, image_size=image_size,
                                        data_dir=config.data_dir, download=config.download,
                                        **config.stream)
            for name, split in splits.items()}
  return {name: data_lib.load_split(config.dataset, split, data_dir=config.data_dir,
                                    download=config.download)
          for name, split in splits.items()}


def derive(config: ml_collections.ConfigDict, train: Any) -> RunSpec:
  """The run's figures from its config and train split; ConfigError for images the
  normalisation does not fit."""
  config_lib.check_channels(config, train.channels)  # where the dataset's info did not tell
  steps_per_epoch = data_lib.steps_per_epoch(len(train), config.batch_size)
  total_steps = config.num_epochs * steps_per_epoch
  stop_step = min(total_steps, config.stop_after_epochs * steps_per_epoch or total_steps)
  return RunSpec(image_size=config_lib.model_image_size(config), num_classes=train.num_classes,
                 steps_per_epoch=steps_per_epoch, total_steps=total_steps, stop_step=stop_step)
