"""The gMLP baseline on CIFAR-100: 64x64 input, 8x8 patches, 4 blocks (the paper's comparison).

  python launch.py --config=configs/gmlp.py --workdir=runs/gmlp
  python launch.py --config=configs/gmlp.py:small,dataset=cifar10 --workdir=runs/gmlp_small  # CPU

Arguments: ``small`` (native 32x32, d_model 128), ``dataset``. Expected: below CgMLP on
validation accuracy with a larger train/validation gap (the paper's claim that gMLP overfits).
"""
from cgmlp_jax.train.config import base_config, parse_arg


def get_config(arg=None):
  args = parse_arg(arg, small=False, dataset="cifar100")
  config = base_config()
  config.model = "gmlp_small" if args.small else "gmlp_paper"
  config.dataset = args.dataset
  if args.small:
    config.num_epochs = 15
  return config
