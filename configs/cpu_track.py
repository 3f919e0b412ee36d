"""The CPU-scale track: the paper's three architectures at native 32x32, a recipe for short runs.

  TFDS_DATA_DIR=../shared/tfds python launch.py --config=configs/cpu_track.py:model=cgmlp_2conv \
      --workdir=runs/cpu_fast/cgmlp_2conv
  SWEEP_CONFIG=configs/cpu_track.py TFDS_DATA_DIR=../shared/tfds scripts/paper_sweep.sh runs/cpu_fast

The same models (``*_small``: 64 tokens, d_model 128, 4 blocks), data split (10 % of train held out)
and batch size as configs/paper.py, with the changes a run of a few epochs needs on a 2-core CPU
(the paper's recipe keeps a constant 3e-3 until a validation plateau, which a 5-epoch budget never
reaches, so it ends on an un-annealed, noisy model):
  * learning rate 2e-3, 0.5 warm-up epochs, then cosine decay to 0 at the last step;
  * random crop (pad 4) + flip instead of zoom + flip, label smoothing 0.1;
  * no dropout by default (``dropout=0.1`` puts it back in the blocks and before the head);
  * gradient clipping at norm 1, weight decay 0.05 (optax convention, = 1e-4 at lr 2e-3);
  * 5 epochs, no early stopping (the schedule is fixed in advance).
Expected on CIFAR-10 (../shared/tfds, 5,000 held-out validation images): docs/cpu_fast/README.md.
"""
import ml_collections

from cgmlp_jax.train.config import parse_arg
from configs import paper


def get_config(arg=None):
  args = parse_arg(arg, model="cgmlp_2conv", dataset="cifar10", epochs=5, dropout=0.0)
  config = paper.get_config(f"model={args.model},dataset={args.dataset},small")
  config.num_epochs = args.epochs
  config.label_smoothing = 0.1
  config.model_kw = ml_collections.ConfigDict(dict(dropout_rate=args.dropout,
                                                   head_dropout_rate=args.dropout))
  config.augment.update(dict(crop_padding=4, flip=True, zoom=0.0))
  config.optimizer.update(dict(learning_rate=2e-3, schedule="cosine", warmup_epochs=0.5,
                               min_learning_rate=0.0, weight_decay=0.05, grad_clip_norm=1.0))
  config.early_stopping.patience = 0
  return config
