"""CgMLP on CIFAR-100 (the paper's model), 10 % of train held out for validation.

  python launch.py --config=configs/cgmlp.py --workdir=runs/cgmlp_2conv
  python launch.py --config=configs/cgmlp.py:convs=1 --workdir=runs/cgmlp_1conv
  python launch.py --config=configs/cgmlp.py:mixed --workdir=runs/cgmlp_2conv_mixed
  python launch.py --config=configs/cgmlp.py:small,dataset=cifar10 --workdir=runs/small  # CPU

Arguments: ``convs`` (1 or 2 conv layers in the stem), ``mixed`` (blocks alternate token and
channel gating), ``small`` (the native-32x32 CPU-scale variant, d_model 128), ``dataset``.
The full-size models train at 64x64 (CIFAR upsampled), as in the paper. Expected: the paper
reports CgMLP above the gMLP baseline (configs/gmlp.py) on CIFAR-100 validation accuracy, with a
smaller train/validation gap; see README "Results" for the figures measured with this code.
"""
from cgmlp_jax.train.config import base_config, parse_arg


def get_config(arg=None):
  args = parse_arg(arg, convs=2, mixed=False, small=False, dataset="cifar100")
  if args.convs not in (1, 2) or (args.mixed and args.convs != 2):
    raise ValueError(f"convs must be 1 or 2 (mixed needs 2); got convs={args.convs}, "
                     f"mixed={args.mixed}.")
  config = base_config()
  config.model = f"cgmlp_{args.convs}conv" + ("_mixed" if args.mixed else "") + (
      "_small" if args.small else "")
  config.dataset = args.dataset
  if args.small:
    config.num_epochs = 15
    config.batch_size = 128
  return config
