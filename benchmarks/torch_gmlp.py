"""The PyTorch reference point of BENCHMARKS.md: an eager PyTorch gMLP at the ``gmlp_paper`` shape.

  pip install torch  # not a project requirement; a CPU build is enough
  python benchmarks/torch_gmlp.py && python benchmarks/jax_gmlp.py

Same work as ``benchmarks/jax_gmlp.py``: 64x64 inputs, 8x8 patches (64 tokens), d_model 256,
d_ffn 512, 4 blocks, 100 classes, batch 128, exact GELU, AdamW, float32, random inputs already in
memory, no augmentation or dropout. Prints the 2048x2048 matmul rate and the median train images/s.
"""
import time

import torch
from torch import nn


class SpatialGatingUnit(nn.Module):

  def __init__(self, d_ffn: int, tokens: int):
    super().__init__()
    self.norm = nn.LayerNorm(d_ffn // 2, eps=1e-6)
    self.proj = nn.Linear(tokens, tokens)
    nn.init.normal_(self.proj.weight, std=1e-6)
    nn.init.ones_(self.proj.bias)

  def forward(self, x):  # (B, N, F) -> (B, N, F/2)
    u, v = x.chunk(2, dim=-1)
    return u * self.proj(self.norm(v).transpose(1, 2)).transpose(1, 2)


class Block(nn.Module):

  def __init__(self, d_model: int, d_ffn: int, tokens: int):
    super().__init__()
    self.norm = nn.LayerNorm(d_model, eps=1e-6)
    self.proj_in = nn.Linear(d_model, d_ffn)
    self.gating = SpatialGatingUnit(d_ffn, tokens)
    self.proj_out = nn.Linear(d_ffn // 2, d_model)

  def forward(self, x):  # (B, N, D)
    return x + self.proj_out(self.gating(nn.functional.gelu(self.proj_in(self.norm(x)))))


class GMLP(nn.Module):

  def __init__(self, image=64, patch=8, d_model=256, d_ffn=512, depth=4, classes=100):
    super().__init__()
    tokens = (image // patch) ** 2
    self.stem = nn.Conv2d(3, d_model, patch, patch)
    self.blocks = nn.Sequential(*[Block(d_model, d_ffn, tokens) for _ in range(depth)])
    self.norm = nn.LayerNorm(d_model, eps=1e-6)
    self.head = nn.Linear(d_model, classes)

  def forward(self, x):  # (B, 3, S, S) -> (B, classes)
    x = self.stem(x).flatten(2).transpose(1, 2)  # (B, N, D)
    return self.head(self.norm(self.blocks(x)).mean(1))


def main(batch=128, steps=8, windows=5):
  torch.manual_seed(0)
  print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
  a = torch.rand(2048, 2048)
  a @ a
  start = time.perf_counter()
  for _ in range(10):
    a @ a
  print(f"matmul 2048x2048 f32: {2 * 2048**3 * 10 / (time.perf_counter() - start) / 1e9:.1f} GFLOP/s")
  model = GMLP()
  opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
  images, labels = torch.randn(batch, 3, 64, 64), torch.randint(0, 100, (batch,))

  def step():
    opt.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(model(images), labels).backward()
    opt.step()

  for _ in range(3):
    step()
  rates = []
  for _ in range(windows):
    start = time.perf_counter()
    for _ in range(steps):
      step()
    rates.append(batch * steps / (time.perf_counter() - start))
  rates.sort()
  print(f"gmlp_paper train step: {rates[len(rates) // 2]:.1f} img/s (windows: "
        f"{', '.join(f'{r:.1f}' for r in rates)})")


if __name__ == "__main__":
  main()
