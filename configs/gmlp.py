"""The gMLP baseline on CIFAR-100 with the paper's recipe: 64x64 input, 8x8 patches, 4 blocks.

  python launch.py --config=configs/gmlp.py --workdir=runs/gmlp
  TFDS_DATA_DIR=../shared/tfds python launch.py --config=configs/gmlp.py:small,dataset=cifar10 \
      --workdir=runs/gmlp_small   # CPU scale, native 32x32

Arguments: ``small`` (native 32x32, d_model 128), ``dataset``. Expected (paper): below CgMLP in
validation accuracy with a larger train/validation gap (gMLP overfits).
"""
from cgmlp_jax.train.config import parse_arg
from configs import paper


def get_config(arg=None):
  args = parse_arg(arg, small=False, dataset="cifar100")
  return paper.get_config(f"model=gmlp,dataset={args.dataset}" + (",small" if args.small else ""))
