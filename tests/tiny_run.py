"""A tiny training run on mocked CIFAR-10, shared by the tests and run as a subprocess by them.

  python tests/tiny_run.py WORKDIR [--step_delay=S] [--cache_dir=DIR]

runs ``tiny_config()`` in WORKDIR on 8 CPU devices (the tests' setup), sleeping S seconds per step
so a test can signal it mid-epoch; exits with 128 + signal after a SIGTERM/SIGINT stop.
"""
import sys

NUM_EXAMPLES = 40  # mock_data gives every split (and slice) 40 examples: 5 steps per epoch


def tiny_config(**overrides):
  from cgmlp_jax.train import config as config_lib  # noqa: PLC0415
  config = config_lib.base_config()
  config.model = "test_cgmlp"
  config.dataset = "cifar10"
  config.holdout_fraction = 0.25
  config.test_split = "test"
  config.batch_size = 8
  config.eval_batch_size = 16  # does not divide the 10 validation / 40 test examples
  config.num_epochs = 2
  config.log_every_steps = 2
  config.checkpoint_every_steps = 2
  config.keep_checkpoints = 10
  config.optimizer.warmup_epochs = 0.5
  config.optimizer.schedule = "plateau"  # driven by validation loss, restored on resume
  config.optimizer.plateau_patience = 1
  config.update(overrides)
  return config


def run(config, workdir):
  import tensorflow_datasets as tfds  # noqa: PLC0415
  from cgmlp_jax.train import loop  # noqa: PLC0415
  with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
    return loop.train_and_evaluate(config, str(workdir))


def final_params(workdir):
  import orbax.checkpoint as ocp  # noqa: PLC0415
  step = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  return ocp.StandardCheckpointer().restore(workdir / "checkpoints" / str(step) / "state")["params"]


def _main(argv):
  import argparse  # noqa: PLC0415
  import os  # noqa: PLC0415
  import time  # noqa: PLC0415
  parser = argparse.ArgumentParser()
  parser.add_argument("workdir")
  parser.add_argument("--step_delay", type=float, default=0.0)
  parser.add_argument("--cache_dir", default="")
  args = parser.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import jax  # noqa: PLC0415
  jax.config.update("jax_num_cpu_devices", 8)
  if args.cache_dir:
    jax.config.update("jax_compilation_cache_dir", args.cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  from cgmlp_jax import data  # noqa: PLC0415
  from cgmlp_jax.train import Interrupted  # noqa: PLC0415
  prefetch = data.prefetch

  def slow_prefetch(*a, **k):
    for batch in prefetch(*a, **k):
      time.sleep(args.step_delay)
      yield batch

  data.prefetch = slow_prefetch
  try:
    run(tiny_config(), args.workdir)
  except Interrupted as e:
    print(e, flush=True)
    sys.exit(128 + e.signum)


if __name__ == "__main__":
  _main(sys.argv[1:])
