"""The paper's shared recipe (the public Keras CIFAR-100 example it builds on), for any model.

  python launch.py --config=configs/paper.py:model=gmlp --workdir=runs/paper/gmlp
  scripts/paper_sweep.sh runs/paper   # all three models into sibling workdirs, then the report

Recipe: batch 128; AdamW at lr 3e-3 with Keras weight decay 1e-4, i.e. optax weight_decay
1e-4 / 3e-3 (optax multiplies the decay by the learning rate; see cgmlp_jax/train/optim.py); the
learning rate halved after 5 epochs without a better validation loss (Keras ReduceLROnPlateau);
50 epochs with early stopping on validation top-1 (patience 10); 10 % of train held out for
validation; augmentation = normalise, resize to the model's input (64), random horizontal flip,
random zoom +-20 %; plain cross-entropy; dropout 0.2 (in the model variants).

Arguments: ``model`` in {gmlp, gmlp_keras, cgmlp_1conv, cgmlp_2conv, cgmlp_2conv_mixed}; ``small``
for the native-32x32 CPU-scale variants (15 epochs); ``dataset`` (default cifar100); ``stop_on``:
the early-stopping metric, ``val_top1`` (default: the paper's text) or ``val_loss`` (the Keras
example's code).

Which gMLP: ``gmlp`` is ``gmlp_paper``, the Keras example's sizes with gMLP's own block (as in the
gMLP paper and timm); ``gmlp_keras`` is the Keras example exactly (its block, init and no final
LayerNorm; models/registry.py). Compare ``gmlp_keras`` with ``stop_on=val_loss`` to the example's
published 50.64 % test top-1 / 78.28 % top-5 after 50 epochs.
Expected (paper): CgMLP above gMLP on validation top-1, with a smaller train-validation gap.
"""
from cgmlp_jax.errors import ConfigError
from cgmlp_jax.train.config import base_config, parse_arg

MODELS = {"gmlp": "gmlp_paper", "gmlp_keras": "gmlp_keras", "cgmlp_1conv": "cgmlp_1conv",
          "cgmlp_2conv": "cgmlp_2conv", "cgmlp_2conv_mixed": "cgmlp_2conv_mixed"}
KERAS_LEARNING_RATE, KERAS_WEIGHT_DECAY = 3e-3, 1e-4


def get_config(arg=None):
  args = parse_arg(arg, model="cgmlp_2conv", small=False, dataset="cifar100", stop_on="val_top1")
  if args.model not in MODELS:
    raise ConfigError(f"model={args.model!r}; choose one of {sorted(MODELS)}.")
  if args.stop_on not in ("val_top1", "val_loss"):
    raise ConfigError(f"stop_on={args.stop_on!r}; choose val_top1 or val_loss.")
  config = base_config()
  config.model = MODELS[args.model] if not args.small else (
      "gmlp_small" if args.model == "gmlp" else f"{MODELS[args.model]}_small")
  config.dataset = args.dataset
  config.holdout_fraction = 0.1
  config.batch_size = 128
  config.num_epochs = 15 if args.small else 50
  config.label_smoothing = 0.0
  config.augment.update(dict(crop_padding=0, flip=True, zoom=0.2))
  config.optimizer.update(dict(
      learning_rate=KERAS_LEARNING_RATE, weight_decay=KERAS_WEIGHT_DECAY / KERAS_LEARNING_RATE,
      schedule="plateau", warmup_epochs=0.0, plateau_factor=0.5, plateau_patience=5,
      grad_clip_norm=0.0))
  config.early_stopping.update(dict(metric=args.stop_on,
                                    mode="min" if args.stop_on == "val_loss" else "max",
                                    patience=10))
  return config
