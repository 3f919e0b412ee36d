"""Peer benchmark: timm's gMLP (``timm.models.mlp_mixer``: ``MlpMixer`` with ``SpatialGatingBlock``).

  DIR/timm/bin/python benchmarks/peers/torch_timm.py --shape=gmlp_paper

Run from the venv that benchmarks/peers/setup.sh makes (torch + torchvision + timm); run.py runs
it. The model is timm's ``gmlp_s16_224`` recipe (``block_layer=SpatialGatingBlock``,
``mlp_layer=GatedMlp``: LayerNorm eps 1e-6, exact GELU, gate weights ~N(0, 1e-6), bias 1) built
with ``MlpMixer`` at this repo's shapes instead of 224x224 / 30 blocks: ``embed_dim`` = d_model,
``mlp_ratio`` = d_ffn / d_model, ``num_blocks`` = 4, 100 classes. Same work as
``benchmarks/jax_gmlp.py``: random float32 inputs in memory, batch 128, no augmentation, no dropout
(``drop_rate``, ``proj_drop_rate``, ``drop_path_rate`` 0), AdamW (lr 3e-3, weight decay 1e-4),
cross-entropy, eager mode; the median of ``--windows`` windows of ``--steps`` train steps after
one warm-up window. Prints one JSON line (the last line of output).
"""
import argparse
import json
import os

import torch
from torch import nn
from timm.models.mlp_mixer import GatedMlp, MlpMixer, SpatialGatingBlock

from common import CLASSES, SHAPES, matmul_gflops, median_rate  # this directory's common.py


def build(shape: dict) -> nn.Module:
  return MlpMixer(num_classes=CLASSES, img_size=shape["image"], patch_size=shape["patch"],
                  num_blocks=shape["depth"], embed_dim=shape["d_model"],
                  mlp_ratio=shape["d_ffn"] / shape["d_model"], block_layer=SpatialGatingBlock,
                  mlp_layer=GatedMlp, drop_rate=0.0, proj_drop_rate=0.0, drop_path_rate=0.0)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--shape", choices=sorted(SHAPES), default="gmlp_paper")
  parser.add_argument("--batch", type=int, default=128)
  parser.add_argument("--steps", type=int, default=8, help="Steps per timed window.")
  parser.add_argument("--windows", type=int, default=5, help="Timed windows (median reported).")
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (intra-op).")
  parser.add_argument("--matmul", type=int, default=2048, help="n of the n x n matmul peak; 0: skip.")
  args = parser.parse_args()

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)
  shape = SHAPES[args.shape]
  peak = None
  if args.matmul:  # drawn here, before the model's initialisation, from the seeded generator
    a = torch.rand(args.matmul, args.matmul)
    peak = matmul_gflops(lambda: a @ a, args.matmul)
  model = build(shape).train()
  opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
  images = torch.randn(args.batch, 3, shape["image"], shape["image"])
  labels = torch.randint(0, CLASSES, (args.batch,))

  def step():
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(images), labels).backward()
    opt.step()

  rate, rates = median_rate(step, args.batch, args.steps, args.windows)
  import timm
  print(json.dumps({
      "impl": f"PyTorch {torch.__version__} eager, timm {timm.__version__} MlpMixer gMLP",
      "shape": args.shape, "train_images_per_s": rate, "windows_images_per_s": rates,
      "step_ms": 1e3 * args.batch / rate, "matmul_peak_gflops": peak,
      "params": sum(p.numel() for p in model.parameters()),
      "settings": {"batch": args.batch, "dtype": "float32", "dropout": "off",
                   "augmentation": "off", "optimizer": "AdamW(3e-3, wd 1e-4)",
                   "intra_op_threads": torch.get_num_threads(),
                   "inter_op_threads": torch.get_num_interop_threads(),
                   "mode": "eager", "steps": args.steps, "windows": args.windows,
                   "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES", "")},
  }))


if __name__ == "__main__":
  main()
