"""What every peer benchmark shares: the shapes, and how throughput and the matmul peak are timed.

Standard library only: the peer scripts import it inside throwaway venvs that hold only torch or
only TensorFlow (setup.sh), and run.py in the project venv. Each of them runs by path
(``python benchmarks/peers/X.py``, which is how run.py starts them), so this directory is
``sys.path[0]`` and ``import common`` finds this file. The timing takes callables, so that each
framework brings its own step and matmul (and its own way to wait for the result) and every
implementation is timed by the same loop.
"""
import statistics
import time

SHAPES = {"gmlp_paper": dict(image=64, patch=8, d_model=256, d_ffn=512, depth=4),
          "gmlp_small": dict(image=32, patch=4, d_model=128, d_ffn=512, depth=4)}
CLASSES = 100


def matmul_gflops(matmul, n: int, reps: int = 5) -> float:
  """Median GFLOP/s of ``reps`` calls of ``matmul()`` after one warm-up call.

  ``matmul()`` multiplies two n x n matrices and returns only once the product is computed (a
  framework that dispatches asynchronously must wait inside it), so each call times 2 n^3 FLOPs.
  """
  matmul()
  rates = []
  for _ in range(reps):
    start = time.perf_counter()
    matmul()
    rates.append(2 * n**3 / (time.perf_counter() - start) / 1e9)
  return statistics.median(rates)


def median_rate(step, batch: int, steps: int, windows: int) -> tuple[float, list[float]]:
  """(median, per window) images/s of ``windows`` windows of ``steps`` calls of ``step()``.

  One warm-up window runs first, untimed (it also traces and compiles, where a framework does).
  ``step()`` trains on one batch of ``batch`` images and returns once that step is done.
  """
  rates = []
  for w in range(windows + 1):  # the first window is warm-up
    start = time.perf_counter()
    for _ in range(steps):
      step()
    if w:
      rates.append(batch * steps / (time.perf_counter() - start))
  return statistics.median(rates), rates
