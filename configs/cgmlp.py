"""CgMLP on CIFAR-100 with the paper's recipe (configs/paper.py), 10 % of train for validation.

  python launch.py --config=configs/cgmlp.py --workdir=runs/cgmlp_2conv
  python launch.py --config=configs/cgmlp.py:convs=1 --workdir=runs/cgmlp_1conv
  python launch.py --config=configs/cgmlp.py:mixed --workdir=runs/cgmlp_2conv_mixed
  TFDS_DATA_DIR=../shared/tfds python launch.py --config=configs/cgmlp.py:small,dataset=cifar10 \
      --workdir=runs/cgmlp_small   # CPU scale, native 32x32

Arguments: ``convs`` (1 or 2 conv layers in the stem), ``mixed`` (blocks alternate token and
channel gating), ``small`` (native 32x32, d_model 128), ``dataset``.
Expected: the paper reports CgMLP above the gMLP baseline (configs/gmlp.py) in CIFAR-100
validation accuracy with a smaller train/validation gap; README "Results" has measured figures.
"""
from cgmlp_jax.errors import ConfigError
from cgmlp_jax.train.config import parse_arg
from configs import paper


def get_config(arg=None):
  args = parse_arg(arg, convs=2, mixed=False, small=False, dataset="cifar100")
  if args.convs not in (1, 2) or (args.mixed and args.convs != 2):
    raise ConfigError(f"convs must be 1 or 2 (mixed needs 2); got convs={args.convs}, "
                     f"mixed={args.mixed}.")
  model = f"cgmlp_{args.convs}conv" + ("_mixed" if args.mixed else "")
  return paper.get_config(f"model={model},dataset={args.dataset}" + (",small" if args.small else ""))
