"""``train_and_evaluate(config, workdir)``: the whole training run, resumable at any checkpoint.

config -> data (host memory) + model -> sharded state (fresh or restored) -> epochs of jitted steps
-> validation, early stopping, checkpoints -> test with the best checkpoint.

A step's batch and random numbers are functions of (seed, step) only, so a run restarted from a
checkpoint continues exactly as an uninterrupted one would. SIGTERM/SIGINT save a checkpoint and
stop; non-finite steps never reach the state or a checkpoint (see README "Failures").
"""
import collections
import json
import os
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath

from cgmlp_jax import parallel, restore
from cgmlp_jax import data as data_lib
from cgmlp_jax.errors import ConfigError
from cgmlp_jax.metrics import MetricsLogger
from cgmlp_jax.train import config as config_lib
from cgmlp_jax.train import init_from, interrupts, optim, step as step_lib, trainer as trainer_lib
from cgmlp_jax.train import lock as lock_lib, nonfinite as nonfinite_lib
from cgmlp_jax.train import workdir as workdir_lib
from cgmlp_jax.train.checkpoint import CheckpointError, Checkpoints
from cgmlp_jax.train.early_stopping import EarlyStopping


def load_data(config: ml_collections.ConfigDict, image_size: int) -> dict[str, Any]:
  """Train / validation / test splits, in host memory or streamed (``config.input``); fails
  before any model work if one is missing."""
  train_split, val_split = data_lib.resolve_splits(
      config.train_split, config.validation_split or None, config.holdout_fraction)
  splits = {name: split for name, split in
            {"train": train_split, "val": val_split, "test": config.test_split or None}.items()
            if split}
  # Downloads and prepares the dataset first if it is not prepared (unless config.download is
  # False), then checks every split before any is read.
  sizes = {name: data_lib.in_memory_bytes(config.dataset, split, config.data_dir,
                                          download=config.download)
           for name, split in splits.items()}
  stream = config.input == "stream" or (config.input == "auto" and
                                        sizes["train"] > config.memory_limit_gb * 2**30)
  if stream and (config.augment.crop_padding or config.augment.zoom):
    raise ConfigError(f"Streaming {config.dataset} (input={config.input!r}) crops on the host "
                     f"(random-resized-crop); set augment.crop_padding=0 and augment.zoom=0, or "
                     f"input='memory' for a dataset of fixed-size images that fits in memory.")
  if stream:
    return {name: data_lib.stream_split(config.dataset, split, image_size=image_size,
                                        data_dir=config.data_dir, download=config.download,
                                        **config.stream)
            for name, split in splits.items()}
  return {name: data_lib.load_split(config.dataset, split, data_dir=config.data_dir,
                                    download=config.download)
          for name, split in splits.items()}


class RunAhead:
  """Keeps the host at most ``limit`` steps ahead of the devices.

  JAX dispatches asynchronously and the loop waits for the devices only when it reads metrics, so
  unbounded, the host queues every step up to the next read. On a CPU split into several devices
  (``parallel.split_cpu``) that deadlocks: XLA:CPU admits 32 queued computations per device, a
  dispatch past that blocks one of its client's threads (as many as cores), and the other device's
  half of a queued step, whose all-reduce the first half waits in, is left without a thread. XLA
  aborts the process after 40 s, in which it never gets back to Python to see a SIGTERM.
  Bounded, a stop request also takes effect within ``limit`` steps.
  """

  def __init__(self, limit: int):
    self._limit, self._pending = limit, collections.deque()

  def dispatched(self, output: jax.Array) -> None:
    """Call after dispatching a step, with an array it computes that no later step donates;
    returns once the step ``limit`` steps back has finished."""
    self._pending.append(output)
    if len(self._pending) > self._limit:
      self._pending.popleft().block_until_ready()


def evaluate(eval_step: Callable, variables: Any,
             split: data_lib.ArraySplit | data_lib.StreamSplit, batch_size: int,
             mesh: jax.sharding.Mesh) -> dict[str, float]:
  """Mean loss / top-1 / top-5 over every example of ``split`` exactly once; ``variables``: the
  model's (``TrainState.variables``), or its parameters alone if it has no BatchNorm."""
  totals = step_lib.zero_metrics()
  ahead = RunAhead(1)  # a batch queues 5 computations per device: the step and 4 additions
  batches = split.eval_epoch(batch_size, process_index=jax.process_index(),
                             process_count=jax.process_count())
  for batch in data_lib.prefetch(batches, mesh):
    totals = jax.tree.map(jnp.add, totals, eval_step(variables, *batch))
    ahead.dispatched(totals["count"])
  return _means(totals)


def _means(sums: step_lib.Metrics | dict[str, float]) -> dict[str, float]:
  sums = {k: float(v) for k, v in jax.device_get(sums).items()}
  count = max(sums.pop("count"), 1.0)
  return {k: v if k == "skipped_steps" else v / count for k, v in sums.items()}


def _open_checkpoints(config: ml_collections.ConfigDict, workdir: epath.Path,
                      abstract_state: Any) -> tuple[epath.Path, Checkpoints, Any]:
  """The workdir to use, its checkpoints, and the latest ``(state, progress)`` or None.

  A checkpoint that cannot be restored stops the run (``CheckpointError``) unless
  ``on_bad_checkpoint="fresh"``: then training starts (or resumes) in ``workdir/fresh``, leaving the
  bad checkpoint where it is.
  """
  checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints)
  try:
    return workdir, checkpoints, checkpoints.restore_latest(abstract_state)
  except CheckpointError as e:
    checkpoints.close()
    if config.on_bad_checkpoint != "fresh":
      raise
    fresh = workdir / "fresh"
    print(f"WARNING: {e}\non_bad_checkpoint=fresh: training in {fresh} instead.", flush=True)
    workdir_lib.probe_writable(fresh)
    checkpoints = Checkpoints(fresh, keep=config.keep_checkpoints)
    return fresh, checkpoints, checkpoints.restore_latest(abstract_state)


@lock_lib.releases_locks
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, validates every epoch, tests the best checkpoint; returns the final summary.

  Raises ``interrupts.Interrupted`` after saving a checkpoint when SIGTERM/SIGINT arrive,
  ``nonfinite.NonFiniteError`` on non-finite loss/gradients (unless skipped), and
  ``CheckpointError`` / ``WorkdirError`` when the workdir or its checkpoints cannot be used.
  """
  parallel.split_cpu(config.cpu_devices)
  if config.distributed:
    parallel.initialize_distributed()
  config_lib.validate(config)
  config_lib.check_channels(config, data_lib.image_channels(config.dataset, config.data_dir))
  # Orbax needs absolute paths; remote ones (gs://...) already are.
  workdir = epath.Path(workdir if "://" in str(workdir) else os.path.abspath(workdir))
  workdir_lib.probe_writable(workdir)  # before reading any data: fail fast on a bad workdir
  lock_lib.take(workdir)  # one run per workdir (README "Failures")
  workdir_lib.check_config_change(workdir, config)
  # The weights to start from, read before the data: a missing file fails in seconds. A run with
  # a checkpoint resumes from it instead.
  resuming = bool(restore.checkpoint_steps(workdir / "checkpoints"))
  init_source = init_from.read(config.init) if config.init and not resuming else None
  data = load_data(config, config_lib.model_image_size(config))
  train = data["train"]
  config_lib.check_channels(config, train.channels)  # where the dataset's info did not tell
  steps_per_epoch = data_lib.steps_per_epoch(len(train), config.batch_size)
  total_steps = config.num_epochs * steps_per_epoch
  # A screening run stops early; the schedule (trainer, below) still spans total_steps.
  stop_step = min(total_steps, config.stop_after_epochs * steps_per_epoch or total_steps)
  trainer = trainer_lib.build(config, train.num_classes, steps_per_epoch)
  mesh, rep = trainer.mesh, parallel.replicated(trainer.mesh)

  workdir, checkpoints, restored = _open_checkpoints(config, workdir, trainer.abstract_state)
  workdir_lib.record_config(workdir, config)
  logger = MetricsLogger(workdir)
  if restored:
    state, progress = restored
    logger.info(f"Resumed from {workdir / 'checkpoints'} at step {int(state.step)}.")
  elif config.init:
    source = init_source or init_from.read(config.init)  # read here after on_bad_checkpoint=fresh
    state = trainer.init(init_from.fit(source, trainer.model, report=logger.info))
    logger.info(f"Starting from the weights of init={config.init}.")
    progress = {"history": [], "early_stopping": {}}
  else:
    state = trainer.init()
    progress = {"history": [], "early_stopping": {}}
  stopper = EarlyStopping(**config.early_stopping.to_dict(), **progress["early_stopping"])

  nonfinite = nonfinite_lib.NonfiniteSteps(config.skip_nonfinite_steps,
                                           config.skip_nonfinite_limit, int(state.step))

  def read_train_metrics(metrics) -> dict[str, float]:
    """Fetches train-metric sums; stops on non-finite steps unless they are to be skipped."""
    sums = {k: float(v) for k, v in jax.device_get(metrics).items()}
    return nonfinite.read(sums, step, checkpoints.latest_step(), workdir)

  def save(state, metrics, best=False):
    # Mid-epoch, the epoch's train-metric sums so far are saved too, so a resumed run reports
    # the same per-epoch train metrics as an uninterrupted one.
    sums = epoch_sums + collections.Counter(read_train_metrics(metrics))
    record = {"history": history, "early_stopping": stopper.state_dict(),
              "epoch": step // steps_per_epoch, "step_in_epoch": step % steps_per_epoch,
              "wall_time_s": elapsed(),
              "train_sums": ({k: float(v) for k, v in sums.items()}
                             if step % steps_per_epoch else {})}
    checkpoints.save(step, state, record)
    if best:
      checkpoints.save_best(step, state, record)

  stops = interrupts.StopRequests(jax.process_count(), sync_every=config.log_every_steps,
                                  checkpoints=workdir / "checkpoints")

  def interrupt(signum: int):
    checkpoints.wait()
    return interrupts.Interrupted(signum, (
        f"Stopped by {signal.Signals(signum).name} at step {step}; checkpoint saved in "
        f"{workdir / 'checkpoints'}. Run the same command to resume."))

  try:
    history = progress["history"]
    step = int(state.step)
    metrics = jax.device_put(step_lib.zero_metrics(train=True), rep)
    window_start, window_step, run_start = time.perf_counter(), step, time.perf_counter()
    time_before_start = progress.get("wall_time_s", 0.0)  # training time of earlier sessions
    elapsed = lambda: time_before_start + time.perf_counter() - run_start  # noqa: E731
    logger.info(f"Training {config.model} ({trainer.model.num_tokens} tokens) on {config.dataset}: "
                f"{len(train)} train examples, {steps_per_epoch} steps/epoch, {total_steps} steps, "
                f"{jax.device_count()} devices.")
    epoch_sums = collections.Counter(progress.get("train_sums", {}))  # this epoch's, so far
    ahead = RunAhead(config.max_steps_ahead)
    with stops:
      while step < stop_step and not stopper.stopped:
        epoch, start = divmod(step, steps_per_epoch)
        batches = train.train_epoch(
            config.batch_size, seed=config.seed, epoch=epoch, process_index=jax.process_index(),
            process_count=jax.process_count(), start_step=start)
        for images, labels in data_lib.prefetch(batches, mesh):
          state, metrics = trainer.train_step(state, metrics, images, labels)
          ahead.dispatched(jnp.copy(state.step))  # a copy: the next step donates the state
          step += 1
          if step % config.log_every_steps == 0 or step % steps_per_epoch == 0:
            window_sums = read_train_metrics(metrics)
            epoch_sums.update(window_sums)
            values = _means(window_sums)
            metrics = jax.device_put(step_lib.zero_metrics(train=True), rep)
            now = time.perf_counter()
            rate = (step - window_step) * config.batch_size / (now - window_start)
            lr = float(trainer.schedule(step)) * float(optim.plateau_scale(state.opt_state))
            logger.write(step, "train", {**values, "lr": lr, "images_per_sec": rate})
            eta = (stop_step - step) * config.batch_size / rate
            logger.info(f"step {step}/{total_steps} epoch {step / steps_per_epoch:.2f} "
                        f"{rate:.0f} img/s loss {values['loss']:.4f} top1 {values['top1']:.3f} "
                        f"lr {lr:.2e} ETA {eta / 60:.1f} min"
                        + (f" ({window_sums['skipped_steps']:.0f} non-finite steps skipped)"
                           if "skipped_steps" in window_sums else ""))
            window_start, window_step = now, step
          if step % steps_per_epoch:  # mid-epoch; at an epoch end, validation comes first
            signum = stops.requested(step)
            if signum or step % config.checkpoint_every_steps == 0:
              save(state, metrics)
            if signum:
              raise interrupt(signum)

        # Epoch end: validate, early-stop bookkeeping, checkpoint.
        train_means = _means(epoch_sums)
        record = {"epoch": step // steps_per_epoch, "step": step, "wall_time_s": elapsed(),
                  **{f"train_{k}": v for k, v in train_means.items()}}
        logger.info(f"epoch {record['epoch']} train: loss {train_means['loss']:.4f} "
                    f"top1 {train_means['top1']:.4f} top5 {train_means['top5']:.4f}")
        improved = False
        if "val" in data:
          val = evaluate(trainer.eval_step, state.variables, data["val"],
                         config.eval_batch_size, mesh)
          logger.write(step, "val", val)
          record.update({f"val_{k}": v for k, v in val.items()})
          improved = stopper.update(record[config.early_stopping.metric], step)
          opt_state = trainer.record_validation_loss(state.opt_state, val["loss"])
          state = state.replace(opt_state=opt_state)
          logger.info(f"epoch {record['epoch']} validation: loss {val['loss']:.4f} "
                      f"top1 {val['top1']:.4f} top5 {val['top5']:.4f}"
                      f"{' (best)' if improved else ''}")
        history.append(record)
        epoch_sums = collections.Counter()
        save(state, metrics, best=improved)
        window_start = time.perf_counter()
        signum = stops.requested(step)
        if signum and step < stop_step and not stopper.stopped:
          raise interrupt(signum)
    checkpoints.wait()
    if step < total_steps and not stopper.stopped:
      logger.info(f"Stopped after epoch {step // steps_per_epoch} of {config.num_epochs} "
                  f"(stop_after_epochs); start again without it to continue.")

    summary = {"step": step, "epochs": step / steps_per_epoch, "history": history,
               "best": stopper.state_dict()}
    if "test" in data:
      best = checkpoints.restore_best(trainer.abstract_state) if "val" in data else None
      variables = best[0].variables if best else state.variables
      test = evaluate(trainer.eval_step, variables, data["test"], config.eval_batch_size, mesh)
      logger.write(step, "test", test)
      logger.info(f"test (best checkpoint): top1 {test['top1']:.4f} top5 {test['top5']:.4f}")
      summary["test"] = test
    if jax.process_index() == 0:
      (workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  finally:  # pending async saves complete even when training fails
    _close(checkpoints, logger)
  return summary


def _close(checkpoints: Checkpoints, logger: MetricsLogger) -> None:
  """Finishes pending saves and flushes metrics; a failing save is reported, not re-raised here
  (the exception already propagating is the one to see)."""
  try:
    checkpoints.close()
  except Exception as e:  # noqa: BLE001
    print(f"WARNING: finishing the last checkpoint save failed: {e}", flush=True)
  logger.close()
