"""gMLP on ImageNet-scale data, streamed from disk (the gMLP paper's Table 1 models).

  python launch.py --config=configs/imagenet.py:variant=s16 --workdir=gs://BUCKET/runs/gmlp_s16 \
      --config.data_dir=gs://BUCKET/tensorflow_datasets --config.distributed=True   # TPU pod
  python launch.py --config=configs/imagenet.py:variant=ti16,dataset=imagenette \
      --workdir=runs/imagenette_ti16   # one machine: 10 classes, ~9.5k images

Input: tf.data per process (``input="stream"``): random-resized-crop (area 8-100 %) + flip to
224x224 on the host, mixup 0.8 / CutMix 1.0 on device; evaluation resizes to 256 and centre-crops
224. Recipe after the gMLP paper (DeiT-style): AdamW lr 1e-3 per 1024 images, weight decay 0.05,
cosine after 5 warm-up epochs (``epochs``), label smoothing 0.1, stochastic depth in the variants.
Expected (paper, 300 epochs, batch 4096, ImageNet-1k top-1): Ti 72.3 %, S 79.6 %, B 81.6 %; not
reproduced by this project (no TPU time) -- these runs are for users with the hardware.
"""
from cgmlp_jax.errors import ConfigError
from cgmlp_jax.train.config import base_config, parse_arg

VARIANTS = ("ti16", "s16", "b16")


def get_config(arg=None):
  args = parse_arg(arg, variant="s16", dataset="imagenet2012", batch=1024, epochs=300)
  if args.variant not in VARIANTS:
    raise ConfigError(f"variant={args.variant!r}; choose one of {VARIANTS}.")
  config = base_config()
  config.model = f"gmlp_{args.variant}"
  config.dataset = args.dataset
  config.input = "stream"
  config.validation_split = "validation"
  config.holdout_fraction = 0.0
  config.batch_size = args.batch
  config.eval_batch_size = args.batch
  config.num_epochs = args.epochs
  config.label_smoothing = 0.1
  config.augment.update(dict(crop_padding=0, flip=False, zoom=0.0, mixup_alpha=0.8,
                             cutmix_alpha=1.0))
  config.optimizer.update(dict(learning_rate=1e-3 * args.batch / 1024, schedule="cosine",
                               warmup_epochs=5.0, weight_decay=0.05, grad_clip_norm=1.0))
  config.log_every_steps = 100
  config.checkpoint_every_steps = 1000
  return config
