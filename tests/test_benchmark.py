"""The benchmark runs the real train step on the 8-device mesh and reports consistent figures."""
import pytest

from cgmlp_jax import benchmark
from cgmlp_jax.train import config as config_lib


def test_benchmark_reports_throughput_flops_and_mfu():
  config = config_lib.base_config()
  config.model = "test_gmlp"
  config.batch_size = config.eval_batch_size = 16
  result = benchmark.run(config, image_size=16, num_classes=10, steps=1, windows=1,
                         matmul_size=128)
  for key in ("train_images_per_s", "train_images_per_s_fed_from_host", "eval_images_per_s",
              "input_pipeline_images_per_s", "compile_time_s", "matmul_peak_tflops",
              "achieved_tflops", "peak_memory_gib"):
    assert result[key] > 0, key
  assert result["devices"].startswith("8 x ")
  # A train step (forward, backward, optimiser; counted over all 8 devices) costs more than a
  # forward pass. (For real models it is 2-3x; this tiny one is dominated by elementwise work.)
  assert 1 < result["train_gflops_per_image"] / result["forward_gflops_per_image"] < 6
  assert result["mfu"] == pytest.approx(result["achieved_tflops"] / result["matmul_peak_tflops"])
  assert 0 <= result["host_wait_share"] < 1
