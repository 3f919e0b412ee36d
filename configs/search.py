"""Design search around the CPU track's best CgMLP: which conv/gMLP design gives most per minute.

  # screen every point for 3 of its 15 epochs, continue the best 4 to 15; rerun to resume
  TFDS_DATA_DIR=../shared/tfds python -m cgmlp_jax.tools.sweep \\
      --config=configs/search.py:dataset=cifar10 --root=runs/search/cifar10 \\
      --screen_epochs=3 --keep=4
  TFDS_DATA_DIR=../shared/tfds python -m cgmlp_jax.tools.sweep \\
      --config=configs/search.py:dataset=cifar100 --root=runs/search/cifar100 \\
      --screen_epochs=3 --keep=4
  # stage 2: the stage-1 leaders combined
  TFDS_DATA_DIR=../shared/tfds python -m cgmlp_jax.tools.sweep \\
      --config=configs/search.py:dataset=cifar10,space=combine --root=runs/search/cifar10_combine \\
      --screen_epochs=3 --keep=1
  python -m cgmlp_jax.tools.sweep_report runs/search/cifar10 runs/search/cifar100 --out docs/search
  # a cluster: the same with --print_commands prints one launch.py command per point
  python -m cgmlp_jax.tools.sweep --config=configs/search.py:space=grid,sample=8 --root=runs/grid \\
      --print_commands

The base (``get_config``) is ``configs/cpu_track.py:model=cgmlp_2conv,recipe=fast,epochs=15`` on
``dataset``: CgMLP-2conv-small, conv stem 64 + 128 filters (3x3, 2x2 max-pool) without GroupNorm,
64 tokens, d_model 128, d_ffn 256, 4 token-gating blocks, stochastic depth 0.1, AdamW lr 3e-3 with
a cosine over ``epochs`` (docs/log/cpu_fast6: 79.2 % on CIFAR-10; again 79.16 % in 26.2 min on the
2-core AMD EPYC of 2026-12-05, docs/search/cifar10/base). The budget per design is these 15
epochs; the points (``get_sweep``) change that base:

``space=axes`` (default, 23 points): one design axis at a time, so each point says what its
change does on its own (the base is a point too):
  * stem: the paper's widths (32 + 64), wider (96 + 192), a 5x5 first kernel, BatchNorm after each
    conv (``conv_norm="batch"``), one conv layer (128 filters, patch 2: CgMLP-1conv), no conv
    (patch 4: gMLP);
  * tokens: patch 2 (16 tokens); the second pool dropped and patch 2 (64 tokens, the second conv at
    16x16);
  * width and depth: d_model 96 / 192, d_ffn 128 / 512, 3 / 6 blocks;
  * gating per block: alternate token / channel (the paper's mixed), all channel, token then
    channel;
  * stochastic depth 0 / 0.2; learning rate 2e-3 / 5e-3; weight decay 0.1.
``space=combine`` (6 points; stage 2, its own ``--root``): the axes that led stage 1's CIFAR-10
screen (``space=axes``, docs/search: BatchNorm stem 66.7 %, 6 blocks 66.6 %, d_ffn 512 65.6 %
after 3 epochs, base 65.3 %; d_model 96 as good as the base and cheaper), combined: BatchNorm stem
+ 6 blocks, + d_ffn 512, + both, + d_model 96 and 6 blocks, + the wider stem, + 6 blocks with
mixed gating (docs/search: the wider stem with BatchNorm 67.6 % and BatchNorm + d_ffn 512 67.3 %
after 3 epochs, within the noise of each other; 6 blocks add nothing; the second, continued first,
is the variant ``cgmlp_2conv_bn_small``: configs/search_winner.py, 80.6 / 80.1 % at 15 epochs
with seeds 0 / 1; the first, continued by the sweep, 79.5 %);
``space=grid`` (24 points): stem width x depth x d_model x gating, for interactions;
``sample=N`` takes N of the points at random (``seed``).
"""
from cgmlp_jax.errors import ConfigError
from cgmlp_jax.tools.sweep_points import grid, sample
from cgmlp_jax.train.config import parse_arg
from configs import cpu_track

SPACES = ("axes", "combine", "grid")
STEM, ONE_CONV = ((64, 3, 2), (128, 3, 2)), ((128, 3, 2),)


def _args(arg):
  args = parse_arg(arg, dataset="cifar10", epochs=15, space="axes", sample=0, seed=0)
  if args.space not in SPACES:
    raise ConfigError(f"space={args.space!r}; choose one of {SPACES}.")
  return args


def get_config(arg=None):
  args = _args(arg)
  return cpu_track.get_config(f"model=cgmlp_2conv,recipe=fast,dataset={args.dataset},"
                              f"epochs={args.epochs}")


def get_sweep(arg=None):
  args = _args(arg)
  if args.space == "grid":
    points = grid({"model_kw.conv_layers": (((32, 3, 2), (64, 3, 2)), STEM,
                                            ((96, 3, 2), (192, 3, 2))),
                   "model_kw.depth": (4, 6),
                   "model_kw.d_model": (128, 192),
                   "model_kw.axes": ("token", "alternate")})
  elif args.space == "combine":
    bn_deep = {"model_kw.conv_norm": "batch", "model_kw.depth": 6}
    points = [
        bn_deep,
        {"model_kw.conv_norm": "batch", "model_kw.d_ffn": 512},
        {**bn_deep, "model_kw.d_ffn": 512},
        {**bn_deep, "model_kw.d_model": 96},
        {"model_kw.conv_norm": "batch", "model_kw.conv_layers": ((96, 3, 2), (192, 3, 2))},
        {**bn_deep, "model_kw.axes": "alternate"},
    ]
  else:
    points = [
        {},  # the base
        {"model_kw.conv_layers": ((32, 3, 2), (64, 3, 2))},
        {"model_kw.conv_layers": ((96, 3, 2), (192, 3, 2))},
        {"model_kw.conv_layers": ((64, 5, 2), (128, 3, 2))},
        {"model_kw.conv_norm": "batch"},
        {"model_kw.conv_layers": ONE_CONV, "model_kw.patch_size": 2},
        {"model_kw.conv_layers": (), "model_kw.patch_size": 4},
        {"model_kw.patch_size": 2},
        {"model_kw.conv_layers": ((64, 3, 2), (128, 3, 1)), "model_kw.patch_size": 2},
        *({"model_kw.d_model": d} for d in (96, 192)),
        *({"model_kw.d_ffn": d} for d in (128, 512)),
        *({"model_kw.depth": d} for d in (3, 6)),
        *({"model_kw.axes": a} for a in ("alternate", "channel",
                                         ("token", "token", "channel", "channel"))),
        *({"model_kw.drop_path_rate": r} for r in (0.0, 0.2)),
        *({"optimizer.learning_rate": lr} for lr in (2e-3, 5e-3)),
        {"optimizer.weight_decay": 0.1},
    ]
  return sample(points, args.sample, args.seed)
