"""A tiny training run on mocked CIFAR-10, shared by the tests and run as a subprocess by them.

  python tests/tiny_run.py WORKDIR [--step_delay=S] [--cache_dir=DIR] [--devices=N]
      [--num_epochs=E] [--num_processes=P --process_id=I --port=PORT]

runs ``tiny_config()`` in WORKDIR on N CPU devices (8: the tests' setup), sleeping S seconds per
step so a test can signal it mid-epoch; exits with 128 + signal after a SIGTERM/SIGINT stop, and
prints mistakes and aborts as launch.py does. With
P > 1 it is process I of a P-process job on localhost (CPU collectives over gloo), N devices each.
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


def whole_state(workdir, step=None):
  """A checkpoint's whole train state (params, optimiser state, step, rng) as numpy, whatever the
  devices that wrote it; the newest checkpoint's if ``step`` is None."""
  import jax  # noqa: PLC0415
  import orbax.checkpoint as ocp  # noqa: PLC0415
  if step is None:
    step = max(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  path = workdir / "checkpoints" / str(step) / "state"
  stored = ocp.StandardCheckpointHandler().metadata(path).tree
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), stored)
  return jax.device_get(ocp.StandardCheckpointer().restore(path, target))


def final_params(workdir):
  """The newest checkpoint's parameters on one device, whatever the devices that wrote it."""
  return whole_state(workdir)["params"]


def _main(argv):
  import argparse  # noqa: PLC0415
  import faulthandler  # noqa: PLC0415
  import functools  # noqa: PLC0415
  import json  # noqa: PLC0415
  import os  # noqa: PLC0415
  import signal  # noqa: PLC0415
  import time  # noqa: PLC0415
  parser = argparse.ArgumentParser()
  parser.add_argument("workdir")
  parser.add_argument("--step_delay", type=float, default=0.0)
  parser.add_argument("--cache_dir", default="")
  parser.add_argument("--devices", type=int, default=8)
  parser.add_argument("--num_epochs", type=int, default=2)
  parser.add_argument("--num_processes", type=int, default=1)
  parser.add_argument("--process_id", type=int, default=0)
  parser.add_argument("--port", type=int, default=0)
  parser.add_argument("--record_indices", default="", help="JSON file: example indices trained on")
  parser.add_argument("--crash_at_step", type=int, default=0, help="os._exit(3) before this step")
  args = parser.parse_args(argv)
  faulthandler.register(signal.SIGUSR1, all_threads=True)  # a test's timeout dumps our stacks
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  import jax  # noqa: PLC0415
  jax.config.update("jax_num_cpu_devices", args.devices)
  if args.num_processes > 1:
    # Gloo listens on the address the host name resolves to, which on some machines is not one
    # the other process can reach; this job lives on the loopback, like its coordinator.
    from jax._src.lib import _jax  # noqa: PLC0415
    _jax.make_gloo_tcp_collectives = functools.partial(_jax.make_gloo_tcp_collectives,
                                                       hostname="127.0.0.1")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}",
                               num_processes=args.num_processes, process_id=args.process_id,
                               initialization_timeout=60, heartbeat_timeout_seconds=10)
  if args.cache_dir:
    # The processes of one job compile the same programs at the same moment, and JAX writes cache
    # entries in place (not atomically): each process gets its own cache, so none reads a half-
    # written entry of another.
    cache_dir = (os.path.join(args.cache_dir, f"process{args.process_id}")
                 if args.num_processes > 1 else args.cache_dir)
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  from cgmlp_jax import cli, data  # noqa: PLC0415
  from cgmlp_jax.data import sources  # noqa: PLC0415
  from cgmlp_jax.train import Interrupted  # noqa: PLC0415
  prefetch, train_batches, seen, steps = data.prefetch, sources.train_batches, [], [0]

  def recording_train_batches(*a, **k):
    for indices in train_batches(*a, **k):
      seen.append(indices.tolist())
      yield indices

  def slow_prefetch(*a, **k):
    for batch in prefetch(*a, **k):
      time.sleep(args.step_delay)
      steps[0] += 1
      if steps[0] == args.crash_at_step:
        os._exit(3)
      yield batch

  data.prefetch, sources.train_batches = slow_prefetch, recording_train_batches
  try:
    # As launch.py: a mistake is one line (exit 2), a second Ctrl-C one line (exit 130).
    cli.one_line_errors(run)(tiny_config(num_epochs=args.num_epochs), args.workdir)
  except Interrupted as e:
    print(e, flush=True)
    sys.exit(128 + e.signum)
  finally:
    if args.record_indices:
      with open(args.record_indices, "w") as f:
        json.dump(seen, f)


if __name__ == "__main__":
  # This checkout's cgmlp_jax, not another one an editable install points to: a script's own
  # folder (tests/), not the current one, starts sys.path.
  import pathlib  # noqa: PLC0415
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
  _main(sys.argv[1:])
