"""Peer benchmark: eager PyTorch gMLP, lucidrains' ``g-mlp-pytorch`` (or the repo's hand-written one).

  DIR/gmlp_pytorch/bin/python benchmarks/peers/torch_gmlp_pytorch.py --shape=gmlp_paper
  DIR/gmlp_pytorch/bin/python benchmarks/peers/torch_gmlp_pytorch.py --impl=handwritten

Run from the venv that benchmarks/peers/setup.sh makes (torch + g-mlp-pytorch); run.py runs it.
Same work as ``benchmarks/jax_gmlp.py``: random float32 inputs in memory, batch 128, 100 classes,
no augmentation, no dropout (g-mlp-pytorch has none; its stochastic depth is off at
``prob_survival=1``), AdamW (lr 3e-3, weight decay 1e-4), cross-entropy; the train step
(zero_grad, forward, backward, step) is timed as the median of ``--windows`` windows of
``--steps`` steps after one warm-up window. ``--impl=handwritten`` times
``benchmarks/torch_gmlp.py``'s model at the same shape instead.

Shapes: ``gmlp_paper`` (64x64, patch 8 -> 64 tokens, d_model 256, d_ffn 512, 4 blocks) and
``gmlp_small`` (32x32, patch 4 -> 64 tokens, d_model 128, d_ffn 512, 4 blocks). g-mlp-pytorch's
``gMLPVision`` takes ``dim`` and ``ff_mult`` (d_ffn = dim * ff_mult), exact GELU, LayerNorm eps
1e-5 (its default), NCHW inputs. Prints one JSON line (the last line of output).
"""
import argparse
import json
import os
import sys

import torch
from torch import nn

from common import CLASSES, SHAPES, matmul_gflops, median_rate  # this directory's common.py


def build(impl: str, shape: dict) -> nn.Module:
  if impl == "lucidrains":
    from g_mlp_pytorch import gMLPVision
    return gMLPVision(image_size=shape["image"], patch_size=shape["patch"], num_classes=CLASSES,
                      dim=shape["d_model"], depth=shape["depth"],
                      ff_mult=shape["d_ffn"] // shape["d_model"], prob_survival=1.0)
  sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
  from torch_gmlp import GMLP  # benchmarks/torch_gmlp.py
  return GMLP(image=shape["image"], patch=shape["patch"], d_model=shape["d_model"],
              d_ffn=shape["d_ffn"], depth=shape["depth"], classes=CLASSES)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--impl", choices=("lucidrains", "handwritten"), default="lucidrains")
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
  model = build(args.impl, shape).train()
  opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
  images = torch.randn(args.batch, 3, shape["image"], shape["image"])
  labels = torch.randint(0, CLASSES, (args.batch,))

  def step():
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(images), labels).backward()
    opt.step()

  rate, rates = median_rate(step, args.batch, args.steps, args.windows)
  impl = "g-mlp-pytorch" if args.impl == "lucidrains" else "benchmarks/torch_gmlp.py"
  print(json.dumps({
      "impl": f"PyTorch {torch.__version__} eager, {impl}", "shape": args.shape,
      "train_images_per_s": rate, "windows_images_per_s": rates,
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
