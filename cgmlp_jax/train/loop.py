"""``train_and_evaluate(config, workdir)``: the whole training run, resumable at any checkpoint.

config -> data + run spec -> trainer (model, optimiser, jitted steps) -> state (restored or fresh)
-> epochs of steps, each ending in validation, early stopping and a checkpoint -> the test split
with the best checkpoint -> summary.json. It reads top to bottom: ``train_and_evaluate`` first,
then the parts in the order they run.

A step's batch and random numbers are functions of (seed, step) only, so a run restarted from a
checkpoint continues exactly as an uninterrupted one would. SIGTERM/SIGINT save a checkpoint and
stop; non-finite steps never reach the state or a checkpoint (see README "Failures").
"""
import collections
import dataclasses
import json
import signal
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
from etils import epath

from cgmlp_jax import data as data_lib, parallel
from cgmlp_jax.metrics import MetricsLogger
from cgmlp_jax.train import config as config_lib
from cgmlp_jax.train import init_from, interrupts, lock as lock_lib, nonfinite as nonfinite_lib
from cgmlp_jax.train import optim, spec as spec_lib, step as step_lib, trainer as trainer_lib
from cgmlp_jax.train import workdir as workdir_lib
from cgmlp_jax.train.checkpoint import CheckpointError, Checkpoints
from cgmlp_jax.train.progress import Progress
from cgmlp_jax.train.spec import load_data


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


@dataclasses.dataclass(frozen=True)
class _Run:
  """What every part of one start of a run refers to, built once by ``train_and_evaluate``."""
  config: ml_collections.ConfigDict
  spec: spec_lib.RunSpec
  data: dict[str, Any]
  trainer: trainer_lib.Trainer
  workdir: epath.Path
  checkpoints: Checkpoints
  logger: MetricsLogger
  stops: interrupts.StopRequests
  nonfinite: nonfinite_lib.NonfiniteSteps


@lock_lib.releases_locks
def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains, validates every epoch, tests the best checkpoint; returns the final summary.

  Expects the process set up first (``cli.setup_process``: CPU device split, multi-host start).
  Raises ``interrupts.Interrupted`` after saving a checkpoint when SIGTERM/SIGINT arrive,
  ``nonfinite.NonFiniteError`` on non-finite loss/gradients (unless skipped), and
  ``CheckpointError`` / ``WorkdirError`` when the workdir or its checkpoints cannot be used.
  """
  config_lib.validate(config)
  config_lib.check_channels(config, data_lib.image_channels(config.dataset, config.data_dir))
  workdir = workdir_lib.prepare(workdir)  # before any data: fail fast on a bad workdir
  lock_lib.take(workdir)  # one run per workdir (README "Failures")
  workdir_lib.check_config_change(workdir, config)
  checkpoints = Checkpoints(workdir, keep=config.keep_checkpoints)
  # The weights a fresh run starts from are read before the data: a missing file fails in
  # seconds. A run with a checkpoint resumes from it instead.
  resuming = checkpoints.latest_step() is not None
  init_source = init_from.read(config.init) if config.init and not resuming else None
  data = load_data(config, config_lib.model_image_size(config))
  spec = spec_lib.derive(config, data["train"])
  trainer = trainer_lib.build(config, spec.num_classes, spec.steps_per_epoch)
  workdir, checkpoints, restored = _restore(config, workdir, checkpoints, trainer.abstract_state)
  workdir_lib.record_config(workdir, config)
  logger = MetricsLogger(workdir)
  stops = interrupts.StopRequests(jax.process_count(), sync_every=config.log_every_steps,
                                  checkpoints=workdir / "checkpoints")
  nonfinite = nonfinite_lib.NonfiniteSteps(config.skip_nonfinite_steps,
                                           config.skip_nonfinite_limit,
                                           int(restored[0].step) if restored else 0)
  run = _Run(config, spec, data, trainer, workdir, checkpoints, logger, stops, nonfinite)
  try:
    state, progress = _initial_state(run, restored, init_source)
    state, step = _train(run, state, progress)
    return _finish(run, state, progress, step)
  finally:  # pending async saves complete even when training fails
    _close(checkpoints, logger)


def _restore(config, workdir: epath.Path, checkpoints: Checkpoints, abstract_state: Any
             ) -> tuple[epath.Path, Checkpoints, tuple[Any, dict] | None]:
  """The workdir to use, its checkpoints, and the latest ``(state, progress)`` or None.

  A checkpoint that cannot be restored stops the run (``CheckpointError``) unless
  ``on_bad_checkpoint="fresh"``: then training starts (or resumes) in ``workdir/fresh``, leaving the
  bad checkpoint where it is.
  """
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


def _initial_state(run: _Run, restored: tuple[Any, dict] | None, init_source: Any
                   ) -> tuple[Any, Progress]:
  """The restored state and record, or a fresh state (random, or from ``config.init``)."""
  if restored:
    state, saved = restored
    run.logger.info(f"Resumed from {run.workdir / 'checkpoints'} at step {int(state.step)}.")
    return state, Progress(run.config, saved)
  if run.config.init:
    source = init_source or init_from.read(run.config.init)  # not read yet after a fresh start
    state = run.trainer.init(init_from.fit(source, run.trainer.model, report=run.logger.info))
    run.logger.info(f"Starting from the weights of init={run.config.init}.")
  else:
    state = run.trainer.init()
  return state, Progress(run.config)


def _train(run: _Run, state: Any, progress: Progress) -> tuple[Any, int]:
  """Epochs until ``spec.stop_step`` or early stopping; each ends in validation and a checkpoint."""
  spec, step = run.spec, int(state.step)
  run.logger.info(
      f"Training {run.config.model} ({run.trainer.model.num_tokens} tokens) on "
      f"{run.config.dataset}: {len(run.data['train'])} train examples, {spec.steps_per_epoch} "
      f"steps/epoch, {spec.total_steps} steps, {jax.device_count()} devices.")
  ahead = RunAhead(run.config.max_steps_ahead)
  with run.stops:
    while step < spec.stop_step and not progress.stopper.stopped:
      state, step = _train_epoch(run, state, progress, step, ahead)
      state = _end_epoch(run, state, progress, step)
      signum = run.stops.requested(step)
      if signum and step < spec.stop_step and not progress.stopper.stopped:
        raise _interrupted(run, signum, step)
  run.checkpoints.wait()
  return state, step


def _train_epoch(run: _Run, state: Any, progress: Progress, step: int, ahead: RunAhead
                 ) -> tuple[Any, int]:
  """Trains from ``step`` to the end of its epoch, logging every ``log_every_steps`` and saving
  every ``checkpoint_every_steps``; on a stop request, saves and raises ``Interrupted``."""
  config, spec = run.config, run.spec
  epoch, start = divmod(step, spec.steps_per_epoch)
  batches = run.data["train"].train_epoch(
      config.batch_size, seed=config.seed, epoch=epoch, process_index=jax.process_index(),
      process_count=jax.process_count(), start_step=start)
  metrics, window = _zero_train_metrics(run), (time.perf_counter(), step)
  for images, labels in data_lib.prefetch(batches, run.trainer.mesh):
    state, metrics = run.trainer.train_step(state, metrics, images, labels)
    ahead.dispatched(jnp.copy(state.step))  # a copy: the next step donates the state
    step += 1
    if step % config.log_every_steps == 0 or step % spec.steps_per_epoch == 0:
      progress.add_window(_log_window(run, state, metrics, step, window))
      metrics, window = _zero_train_metrics(run), (time.perf_counter(), step)
    if step % spec.steps_per_epoch:  # mid-epoch; at an epoch end, validation comes first
      signum = run.stops.requested(step)
      if signum or step % config.checkpoint_every_steps == 0:
        _save(run, state, progress, step, _read_train_metrics(run, metrics, step))
      if signum:
        raise _interrupted(run, signum, step)
  return state, step


def _zero_train_metrics(run: _Run) -> step_lib.Metrics:
  return jax.device_put(step_lib.zero_metrics(train=True), parallel.replicated(run.trainer.mesh))


def _read_train_metrics(run: _Run, metrics: step_lib.Metrics, step: int) -> dict[str, float]:
  """Fetches train-metric sums; stops on non-finite steps unless they are to be skipped."""
  sums = {k: float(v) for k, v in jax.device_get(metrics).items()}
  return run.nonfinite.read(sums, step, run.checkpoints.latest_step(), run.workdir)


def _log_window(run: _Run, state: Any, metrics: step_lib.Metrics, step: int,
                window: tuple[float, int]) -> dict[str, float]:
  """Logs the train metrics of the steps since ``window`` (its start time and step); returns
  their sums."""
  sums = _read_train_metrics(run, metrics, step)
  values = _means(sums)
  rate = (step - window[1]) * run.config.batch_size / (time.perf_counter() - window[0])
  lr = float(run.trainer.schedule(step)) * float(optim.plateau_scale(state.opt_state))
  run.logger.write(step, "train", {**values, "lr": lr, "images_per_sec": rate})
  eta = (run.spec.stop_step - step) * run.config.batch_size / rate
  skipped = (f" ({sums['skipped_steps']:.0f} non-finite steps skipped)"
             if "skipped_steps" in sums else "")
  run.logger.info(f"step {step}/{run.spec.total_steps} epoch {step / run.spec.steps_per_epoch:.2f} "
                  f"{rate:.0f} img/s loss {values['loss']:.4f} top1 {values['top1']:.3f} "
                  f"lr {lr:.2e} ETA {eta / 60:.1f} min{skipped}")
  return sums


def _end_epoch(run: _Run, state: Any, progress: Progress, step: int) -> Any:
  """Validation, early stopping and the plateau schedule's update, the epoch's record and its
  checkpoint (and the best one's)."""
  train_means = _means(progress.epoch_sums)
  record = {"epoch": run.spec.epoch(step), "step": step, "wall_time_s": progress.elapsed(),
            **{f"train_{k}": v for k, v in train_means.items()}}
  run.logger.info(f"epoch {record['epoch']} train: loss {train_means['loss']:.4f} "
                  f"top1 {train_means['top1']:.4f} top5 {train_means['top5']:.4f}")
  improved = False
  if "val" in run.data:
    val = evaluate(run.trainer.eval_step, state.variables, run.data["val"],
                   run.config.eval_batch_size, run.trainer.mesh)
    run.logger.write(step, "val", val)
    record.update({f"val_{k}": v for k, v in val.items()})
    improved = progress.stopper.update(record[run.config.early_stopping.metric], step)
    state = state.replace(
        opt_state=run.trainer.record_validation_loss(state.opt_state, val["loss"]))
    run.logger.info(f"epoch {record['epoch']} validation: loss {val['loss']:.4f} "
                    f"top1 {val['top1']:.4f} top5 {val['top5']:.4f}"
                    f"{' (best)' if improved else ''}")
  progress.end_epoch(record)
  _save(run, state, progress, step, best=improved)
  return state


def _save(run: _Run, state: Any, progress: Progress, step: int,
          unread: dict[str, float] | None = None, best: bool = False) -> None:
  record = progress.saved(step, run.spec.steps_per_epoch, unread)
  run.checkpoints.save(step, state, record)
  if best:
    run.checkpoints.save_best(step, state, record)


def _interrupted(run: _Run, signum: int, step: int) -> interrupts.Interrupted:
  run.checkpoints.wait()
  return interrupts.Interrupted(signum, (
      f"Stopped by {signal.Signals(signum).name} at step {step}; checkpoint saved in "
      f"{run.workdir / 'checkpoints'}. Run the same command to resume."))


def _finish(run: _Run, state: Any, progress: Progress, step: int) -> dict[str, Any]:
  """The test split with the best checkpoint, if asked for; ``summary.json``."""
  spec = run.spec
  if step < spec.total_steps and not progress.stopper.stopped:
    run.logger.info(f"Stopped after epoch {spec.epoch(step)} of {run.config.num_epochs} "
                    f"(stop_after_epochs); start again without it to continue.")
  summary = {"step": step, "epochs": step / spec.steps_per_epoch, "history": progress.history,
             "best": progress.stopper.state_dict()}
  if "test" in run.data:
    best = (run.checkpoints.restore_best(run.trainer.abstract_state) if "val" in run.data
            else None)
    variables = best[0].variables if best else state.variables
    test = evaluate(run.trainer.eval_step, variables, run.data["test"],
                    run.config.eval_batch_size, run.trainer.mesh)
    run.logger.write(step, "test", test)
    run.logger.info(f"test (best checkpoint): top1 {test['top1']:.4f} top5 {test['top5']:.4f}")
    summary["test"] = test
  if jax.process_index() == 0:
    (run.workdir / "summary.json").write_text(json.dumps(summary, indent=2))
  return summary


def _close(checkpoints: Checkpoints, logger: MetricsLogger) -> None:
  """Finishes pending saves and flushes metrics; a failing save is reported, not re-raised here
  (the exception already propagating is the one to see)."""
  try:
    checkpoints.close()
  except Exception as e:  # noqa: BLE001
    print(f"WARNING: finishing the last checkpoint save failed: {e}", flush=True)
  logger.close()
