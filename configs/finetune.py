"""Fine-tuning from pretrained weights: timm's ImageNet gMLP, or this codebase's own CIFAR weights.

  # timm's gMLP-S/16 (ImageNet top-1 79.65 %, 19.4 M params) on CIFAR-100 at 224x224 (a GPU/TPU job):
  python launch.py --config=configs/finetune.py:init=hf-hub:timm/gmlp_s16_224.ra3_in1k \
      --workdir=runs/ft/gmlp_s16_c100
  # offline, the same weights from a file (https://huggingface.co/timm/gmlp_s16_224.ra3_in1k):
  python launch.py --config=configs/finetune.py:init=/path/to/model.safetensors --workdir=...
  # this codebase's CIFAR-100 CgMLP-2conv-small (weights/) on CIFAR-10, 32x32, on a CPU:
  TFDS_DATA_DIR=../shared/tfds python launch.py \
      --config=configs/finetune.py:init=cgmlp_2conv_small.cifar100,dataset=cifar10 \
      --workdir=runs/ft/c100_to_c10
  # or from any training workdir (its best checkpoint): init=runs/c100_fast/cgmlp_2conv

Arguments: ``init`` (required; every form in cgmlp_jax/train/init_from.py), ``dataset`` (default
cifar100), ``epochs``, ``lr`` (peak learning rate), ``model`` (default: the model the weights were
trained as: the workdir's or the weights record's; ``gmlp_ti16/s16/b16`` after timm's file name).

Recipe: the weights' own model and input size (timm's gMLPs: 224x224, CIFAR upsampled on the
device) and their input normalisation (ImageNet's for timm, the source dataset's for ours); the
head re-initialised when the class count differs; AdamW (weight decay 0.05), 0.5 warm-up epochs,
cosine decay; crop + flip, label smoothing 0.1; timm: lr 1e-4 for 10 epochs, ours: lr 1e-3 for 5.
Expected: timm gMLP-S/16 on CIFAR-100 is not measured yet (10.7 GFLOPs per image: a GPU job,
scripts/device_check.sh); CIFAR-100 -> CIFAR-10 with our weights (the third command): 76.6 %
validation top-1 after 5 epochs, 8.4 min on a 2-core CPU (docs/log/ft_c100_to_c10).
"""
import ml_collections

from cgmlp_jax.errors import ConfigError, WeightsError
from cgmlp_jax.train import init_from
from cgmlp_jax.train.config import base_config, parse_arg


def get_config(arg=None):
  args = parse_arg(arg, init="", dataset="cifar100", epochs=int, lr=float, model="")
  if not args.init:
    raise ConfigError("configs/finetune.py needs init=WEIGHTS (a workdir, published weights such "
                      "as cgmlp_2conv_small.cifar100, a .safetensors/.npz/.msgpack file or "
                      "hf-hub:timm/gmlp_s16_224.ra3_in1k).")
  try:
    origin = init_from.origin(args.init)
  except WeightsError as e:
    raise ConfigError(str(e)) from None
  timm = origin.model in ("gmlp_ti16", "gmlp_s16", "gmlp_b16")
  config = base_config()
  config.init = args.init
  config.model = args.model or origin.model
  config.model_kw = ml_collections.ConfigDict(origin.model_kw if not args.model else {})
  config.dataset = args.dataset
  config.holdout_fraction = 0.1
  config.num_epochs = args.epochs or (10 if timm else 5)
  config.label_smoothing = 0.1
  config.augment.update(dict(crop_padding=4, flip=True, zoom=0.0, mean=origin.mean,
                             std=origin.std))
  config.optimizer.update(dict(learning_rate=args.lr or (1e-4 if timm else 1e-3),
                               schedule="cosine", warmup_epochs=0.5, min_learning_rate=0.0,
                               weight_decay=0.05, grad_clip_norm=1.0))
  return config
