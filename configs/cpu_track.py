"""The CPU-scale track: the paper's three architectures at native 32x32, recipes for short runs.

  TFDS_DATA_DIR=../shared/tfds python launch.py --config=configs/cpu_track.py:model=cgmlp_2conv \
      --workdir=runs/cpu_fast/cgmlp_2conv
  TFDS_DATA_DIR=../shared/tfds python launch.py \
      --config=configs/cpu_track.py:model=cgmlp_2conv,recipe=fast --workdir=runs/cpu_fast2/cgmlp_2conv
  SWEEP_CONFIG=configs/cpu_track.py TFDS_DATA_DIR=../shared/tfds scripts/paper_sweep.sh runs/cpu_fast

The same models (``*_small``: 64 tokens, d_model 128, 4 blocks), data split (10 % of train held out)
and batch size as configs/paper.py, with the changes a run of a few epochs needs on a 2-core CPU
(the paper's recipe keeps a constant 3e-3 until a validation plateau, which a 5-epoch budget never
reaches, so it ends on an un-annealed, noisy model).

``recipe=short`` (default; docs/log/cpu_fast):
  * learning rate 2e-3, 0.5 warm-up epochs, then cosine decay to 0 at the last step;
  * random crop (pad 4) + flip instead of zoom + flip, label smoothing 0.1;
  * no dropout by default (``dropout=0.1`` puts it back in the blocks and before the head);
  * gradient clipping at norm 1, weight decay 0.05 (optax convention, = 1e-4 at lr 2e-3);
  * 5 epochs, no early stopping (the schedule is fixed in advance).
``recipe=fast`` (docs/log/cpu_fast2) spends the 45-minute budget differently, same data and augmentation:
  * the conv stem twice as wide (CgMLP-2conv 64 + 128 filters, CgMLP-1conv 128) and without
    GroupNorm, which at 32x32 costs more than the convolutions (BENCHMARKS.md);
  * d_ffn 256 instead of 512 (the blocks' cost halves);
  * stochastic depth 0.1 instead of dropout;
  * lr 3e-3, 0.3 warm-up epochs, cosine to 0 over 7 epochs (``epochs=10`` fills the 45 minutes
    since training runs on two CPU devices: docs/log/cpu_fast3; on a machine that benchmarks
    CgMLP-2conv at ~300 img/s, ``epochs=15`` fits them: docs/log/cpu_fast6).
Expected on CIFAR-10 (../shared/tfds, 5,000 held-out validation images): docs/log/cpu_fast/README.md,
docs/log/cpu_fast2/README.md, docs/log/cpu_fast3/README.md (CgMLP-2conv, ``epochs=10``: 77.4 %) and
docs/log/cpu_fast6/README.md (``epochs=15``: CgMLP-2conv 79.2 % in 44.6 min, gMLP 74.6 %).
Tried without gain: no stochastic depth with flip test-time augmentation
(``--config.model_kw.drop_path_rate=0.0 --config.eval_flip=True``): 76.8 % (docs/log/cpu_fast4);
batch 64 at lr 2e-3: 77.0 %; a third conv layer, GroupNorm in the stem: behind after their first
epochs and slower (docs/log/cpu_fast5); the second conv layer twice as wide (256 filters): behind after
two epochs (docs/log/cpu_fast6).
"""
import ml_collections

from cgmlp_jax.errors import ConfigError
from cgmlp_jax.train.config import parse_arg
from configs import paper

RECIPES = ("short", "fast")
FAST_STEMS = {"cgmlp_1conv": ((128, 3, 2),), "cgmlp_2conv": ((64, 3, 2), (128, 3, 2)),
              "cgmlp_2conv_mixed": ((64, 3, 2), (128, 3, 2))}


def get_config(arg=None):
  args = parse_arg(arg, model="cgmlp_2conv", dataset="cifar10", recipe="short", epochs=int,
                   dropout=0.0)
  if args.recipe not in RECIPES:
    raise ConfigError(f"recipe={args.recipe!r}; choose one of {RECIPES}.")
  fast = args.recipe == "fast"
  config = paper.get_config(f"model={args.model},dataset={args.dataset},small")
  config.num_epochs = args.epochs or (7 if fast else 5)
  config.label_smoothing = 0.1
  model_kw = dict(dropout_rate=args.dropout, head_dropout_rate=args.dropout)
  if fast:
    model_kw.update(d_ffn=256, drop_path_rate=0.1)
    if args.model in FAST_STEMS:
      model_kw.update(conv_layers=FAST_STEMS[args.model], conv_norm="none")
  config.model_kw = ml_collections.ConfigDict(model_kw)
  config.augment.update(dict(crop_padding=4, flip=True, zoom=0.0))
  config.optimizer.update(dict(learning_rate=3e-3 if fast else 2e-3, schedule="cosine",
                               warmup_epochs=0.3 if fast else 0.5, min_learning_rate=0.0,
                               weight_decay=0.05, grad_clip_norm=1.0))
  config.early_stopping.patience = 0
  return config
