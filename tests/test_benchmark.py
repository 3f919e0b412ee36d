"""The benchmark and the step profile run the real train step on the 8-device mesh and report
consistent figures."""
import jax
import jax.numpy as jnp
import pytest

from cgmlp_jax.tools import benchmark, step_profile
from cgmlp_jax.train import config as config_lib


def _tiny_config():
  config = config_lib.base_config()
  config.model = "test_gmlp"
  config.batch_size = config.eval_batch_size = 16
  return config


def test_benchmark_reports_throughput_flops_and_mfu():
  config = _tiny_config()
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


def test_hlo_ops_tell_matmuls_from_other_ops():
  compiled = jax.jit(lambda a, b: jnp.exp(a @ b)).lower(jnp.ones((64, 32)),
                                                       jnp.ones((32, 16))).compile()
  ops = step_profile.hlo_ops(compiled.as_text())
  assert any(op.matmul for op in ops.values())
  assert any(not op.matmul and "f32[64,16]" in op.shape for op in ops.values())


def test_step_profile_splits_the_step_into_matmuls_and_the_rest():
  result = step_profile.run(_tiny_config(), image_size=16, num_classes=10, steps=1, top=5)
  assert result["matmul_ms"] > 0 and result["other_ms"] > 0
  assert result["op_ms"] == pytest.approx(result["matmul_ms"] + result["other_ms"])
  assert result["matmul_share"] == pytest.approx(result["matmul_ms"] / result["op_ms"])
  assert sum(result["other_by_kind_ms"].values()) == pytest.approx(result["other_ms"])
  slowest = result["slowest_other"]
  assert 0 < len(slowest) <= 5
  assert [op["ms"] for op in slowest] == sorted((op["ms"] for op in slowest), reverse=True)
  assert all(op["shape"] and op["name"] for op in slowest)
