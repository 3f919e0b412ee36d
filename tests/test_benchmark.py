"""The benchmark and the step profile run the real train step on the 8-device mesh and report
consistent figures."""
import jax
import jax.numpy as jnp
import pytest

from cgmlp_jax.tools import benchmark, step_parts, step_profile, timing
from cgmlp_jax.train import config as config_lib


def _tiny_config():
  config = config_lib.base_config()
  config.model = "test_gmlp"
  config.batch_size = config.eval_batch_size = 16
  return config


def test_benchmark_reports_throughput_flops_and_mfu():
  config = _tiny_config()
  result = benchmark.run(config, image_size=16, num_classes=10, steps=1, windows=3,
                         matmul_size=128)
  for key in ("train_images_per_s", "train_images_per_s_fed_from_host", "eval_images_per_s",
              "input_pipeline_images_per_s", "compile_time_s", "matmul_peak_tflops",
              "achieved_tflops", "peak_memory_gib"):
    assert result[key] > 0, key
  assert result["devices"].startswith("8 x ")
  # A train step (forward, backward, optimiser; counted over all 8 devices) costs more than a
  # forward pass. (For real models it is 2-3x; this tiny one is dominated by elementwise work.)
  assert 1 < result["train_gflops_per_image"] / result["forward_gflops_per_image"] < 6
  # Medians and their quartiles; MFU is the median of the per-round ratios.
  for key in ("train_images_per_s", "matmul_peak_tflops", "mfu"):
    low, high = result[f"{key}_quartiles"]
    assert low <= result[key] <= high, key
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


def test_interleaved_rates_run_one_window_of_each_function_per_round():
  calls = []
  fns = {name: (lambda name=name: calls.append(name) or jnp.zeros(()), items)
         for name, items in (("a", 2), ("b", 3))}
  rates = timing.interleaved_rates(fns, calls=2, rounds=3)
  # A warm-up window of each, then rounds of one 2-call window of each, in turn.
  assert calls == ["a", "a", "b", "b"] + ["a", "a", "b", "b"] * 3
  assert {name: len(rate.samples) for name, rate in rates.items()} == {"a": 3, "b": 3}
  assert all(s > 0 for rate in rates.values() for s in rate.samples)


def test_rate_summarises_windows_by_median_quartiles_and_paired_ratios():
  fast, slow = timing.Rate((10.0, 20.0, 30.0, 40.0, 50.0)), timing.Rate((5.0, 10.0, 15.0, 20.0, 25.0))
  assert fast.median == 30.0 and fast.quartiles == (20.0, 40.0)
  assert fast.spread == pytest.approx(20 / 30)
  # Per round, not a ratio of medians: a drift that slows both in a round cancels.
  assert fast.ratio(slow).samples == (2.0,) * 5 and fast.ratio(slow).spread == 0
  assert fast.scaled(0.5).samples == slow.samples
  with pytest.raises(ValueError, match="same rounds"):
    fast.ratio(timing.Rate((1.0,)))


def test_step_parts_times_the_real_step_against_itself_with_parts_removed():
  config = _tiny_config()
  config.model_kw.dropout_rate = 0.1
  config.augment.zoom = 0.2
  result = step_parts.run(config, image_size=16, num_classes=10, steps=1, windows=2)
  assert set(result) == set(step_parts.VARIANTS) | {step_parts.BARE}
  assert result["real step"]["vs_real_step"] == 1.0
  assert all(r["images_per_s"] > 0 and r["vs_real_step"] > 0 for r in result.values())
