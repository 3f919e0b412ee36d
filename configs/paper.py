"""The paper's shared recipe (the public Keras CIFAR-100 example it builds on), for any model.

  python launch.py --config=configs/paper.py:model=gmlp --workdir=runs/paper/gmlp
  scripts/paper_sweep.sh runs/paper   # all three models into sibling workdirs, then the report

Recipe: batch 128; AdamW at lr 3e-3 with Keras weight decay 1e-4, i.e. optax weight_decay
1e-4 / 3e-3 (optax multiplies the decay by the learning rate; see cgmlp_jax/train/optim.py); the
learning rate halved after 5 epochs without a better validation loss (Keras ReduceLROnPlateau);
50 epochs with early stopping on validation top-1 (patience 10); 10 % of train held out for
validation; augmentation = normalise, resize to the model's input (64), random horizontal flip,
random zoom +-20 %; plain cross-entropy; dropout 0.2 (in the model variants).

Arguments: ``model`` in {gmlp, cgmlp_1conv, cgmlp_2conv, cgmlp_2conv_mixed}; ``small`` for the
native-32x32 CPU-scale variants (15 epochs); ``dataset`` (default cifar100).
Expected (paper): CgMLP above gMLP on validation top-1, with a smaller train-validation gap.
"""
from cgmlp_jax.train.config import base_config, parse_arg

MODELS = {"gmlp": "gmlp_paper", "cgmlp_1conv": "cgmlp_1conv", "cgmlp_2conv": "cgmlp_2conv",
          "cgmlp_2conv_mixed": "cgmlp_2conv_mixed"}
KERAS_LEARNING_RATE, KERAS_WEIGHT_DECAY = 3e-3, 1e-4


def get_config(arg=None):
  args = parse_arg(arg, model="cgmlp_2conv", small=False, dataset="cifar100")
  if args.model not in MODELS:
    raise ValueError(f"model={args.model!r}; choose one of {sorted(MODELS)}.")
  config = base_config()
  config.model = MODELS[args.model] if not args.small else (
      "gmlp_small" if args.model == "gmlp" else f"{args.model}_small")
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
  config.early_stopping.update(dict(metric="val_top1", mode="max", patience=10))
  return config
