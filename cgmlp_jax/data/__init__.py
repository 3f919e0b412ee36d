"""Input data: TFDS splits held in host memory (index streams over them) or streamed from disk
(tf.data, per process), prefetch to device, on-device augmentation.

Pure data code: nothing here imports the models or the trainer.
"""
from cgmlp_jax.data.augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    ZOOM_STYLES,
    AugmentConfig,
    augment,
    normalize,
)
from cgmlp_jax.data.feed import prefetch
from cgmlp_jax.data.normalization import dataset_stats
from cgmlp_jax.data.sources import (
    ArraySplit,
    DataError,
    eval_batches,
    gather,
    image_channels,
    load_split,
    resolve_splits,
    steps_per_epoch,
    train_batches,
)
from cgmlp_jax.data.stream import StreamSplit, in_memory_bytes, stream_split

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "ArraySplit",
    "AugmentConfig",
    "DataError",
    "augment",
    "dataset_stats",
    "eval_batches",
    "gather",
    "image_channels",
    "load_split",
    "normalize",
    "prefetch",
    "resolve_splits",
    "steps_per_epoch",
    "StreamSplit",
    "ZOOM_STYLES",
    "in_memory_bytes",
    "stream_split",
    "train_batches",
]
