"""Per-dataset normalisation statistics: the per-channel mean and std of each dataset's train split.

Inputs are standardised with their own dataset's statistics (``augment.mean`` / ``augment.std`` empty
in a config means "the dataset's"), so CIFAR-100 is not normalised with CIFAR-10's numbers. Values are
in [0, 1] pixel units; each comes from its train split (CIFAR-100: checked on ``../shared/tfds``).

A dataset not listed here falls back to ImageNet's statistics (``FALLBACK``), the usual choice for
natural RGB images; a dataset of another channel count must set ``augment.mean`` / ``augment.std``.
"""

Stats = tuple[tuple[float, ...], tuple[float, ...]]  # (mean, std), one entry per channel

IMAGENET: Stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
FALLBACK = IMAGENET
STATS: dict[str, Stats] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn_cropped": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "imagenet2012": IMAGENET,
    "imagenette": IMAGENET,
    "imagenet_v2": IMAGENET,
}


def dataset_stats(dataset: str) -> Stats:
  """``(mean, std)`` of a TFDS dataset name (``"cifar100"``, ``"cifar100:3.0.2"``,
  ``"imagenette/320px"``); ``FALLBACK`` for a dataset not in ``STATS``."""
  return STATS.get(dataset.split(":")[0].split("/")[0], FALLBACK)
