"""The training config's schema, its defaults, and its validation.

Every field a run can use is declared here, with its default, so a typo on the command line
(``--config.lerning_rate=...``) or in a config file is an error, not a silently ignored key.
Experiment files under ``configs/`` start from ``base_config()`` and override a few fields.
"""
import difflib
import math

import ml_collections

from cgmlp_jax import data, models, parallel
from cgmlp_jax.errors import ConfigError


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  # Model: a registry name plus overrides of its fields (see cgmlp_jax.models.registry).
  c.model = "cgmlp_2conv"
  c.model_kw = ml_collections.ConfigDict()
  c.dtype = "float32"  # compute dtype: "float32" or "bfloat16" (params stay float32)
  # Weights to start from instead of a random init (fine-tuning): a workdir, published weights, a
  # .msgpack / timm .safetensors / .npz file, or hf-hub:ORG/NAME (cgmlp_jax/train/init_from.py).
  c.init = ""

  # Data: any TFDS image-classification dataset with "image" and "label" features.
  c.dataset = "cifar100"
  c.data_dir = ml_collections.FieldReference(None, field_type=str)  # None: TFDS default
  # Download and prepare a dataset that is not prepared in data_dir (TFDS's usual behaviour; one
  # process per host prepares); False never downloads (offline clusters).
  c.download = True
  c.train_split = "train"
  c.validation_split = ""  # "": hold out `holdout_fraction` of train
  c.holdout_fraction = 0.1
  c.test_split = ""  # "": no test evaluation; evaluated once, with the best checkpoint
  # "memory": read splits into host RAM once (fixed-size images); "stream": tf.data from disk every
  # epoch with random-resized-crop + flip on the host (any image size, any dataset size);
  # "auto": stream when images vary in size or the train split exceeds memory_limit_gb.
  c.input = "auto"
  c.memory_limit_gb = 8.0
  c.stream = ml_collections.ConfigDict(dict(min_crop_area=0.08, eval_crop=0.875,
                                            shuffle_buffer=10_000))
  c.augment = ml_collections.ConfigDict(dict(
      crop_padding=4, flip=True, zoom=0.0,
      # "zero_fill": one factor for both axes, resized and zoomed from the stored image in one
      # resampling, black outside it; "keras": Keras' RandomZoom on the model-size image
      # (independent height and width factors, reflected borders; data/augment.py)
      zoom_style="zero_fill",
      mixup_alpha=0.0, cutmix_alpha=0.0,
      random_erasing=0.0,
      # Per-channel normalisation in [0, 1] pixel units; empty: the dataset's own statistics
      # (cgmlp_jax/data/normalization.py; ImageNet's for a dataset it does not list).
      mean=(), std=()))

  # Optimisation.
  c.batch_size = 128  # global, over all devices and processes
  c.eval_batch_size = 512
  c.eval_flip = False  # test-time augmentation: average the logits of each image and its mirror
  c.num_epochs = 50
  # Stop after this many epochs (with a checkpoint and summary.json) while the schedule still
  # spans num_epochs: a screening run (cgmlp_jax/tools/sweep.py) that a later start without it
  # continues as if never stopped. 0: off.
  c.stop_after_epochs = 0
  c.label_smoothing = 0.1
  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=1e-3,
      schedule="cosine",  # "cosine" (after warmup), "constant" or "plateau"
      warmup_epochs=1.0,
      min_learning_rate=0.0,
      weight_decay=0.05,
      # "times_lr": decay = lr * weight_decay * param (optax); "absolute": weight_decay * param
      # every step, whatever the learning rate (TF-Addons AdamW, the Keras example; optim.py)
      weight_decay_mode="times_lr",
      decay_mask="kernels",  # "kernels": params with >= 2 dims; "all": biases and norms too
      b1=0.9, b2=0.999, eps=1e-8,
      grad_clip_norm=1.0,  # 0: no clipping
      # schedule="plateau": lr times plateau_factor after plateau_patience epochs whose validation
      # loss is not below (1 - plateau_rtol) * best - plateau_atol (optax reduce_on_plateau)
      plateau_factor=0.5, plateau_patience=3, plateau_rtol=1e-4, plateau_atol=0.0,
  ))
  c.early_stopping = ml_collections.ConfigDict(dict(
      metric="val_top1", mode="max", patience=0))  # patience 0: off

  # Loop, checkpoints, logging.
  c.log_every_steps = 50
  # Train steps the host may dispatch before the devices finish them (loop.RunAhead): enough to
  # hide the dispatch time, few enough that a stop request acts within as many steps; well under
  # 16 on a CPU split into devices (cpu_devices), where XLA deadlocks on longer queues.
  c.max_steps_ahead = 2
  c.checkpoint_every_steps = 500  # also at every epoch end and at the end of training
  c.keep_checkpoints = 2
  c.distributed = False  # jax.distributed.initialize() first (multi-host TPU/GPU)
  # CPU-only hosts: run the CPU as this many data-parallel JAX devices (0: JAX's default, one);
  # 2 trains ~1.2x faster on a 2-core machine (parallel.split_cpu, BENCHMARKS.md).
  c.cpu_devices = 2

  # Failures (README "Failures"): what to do on non-finite steps, a changed config, and a
  # checkpoint that does not fit ("fresh": train from scratch in workdir/fresh, keep the old one).
  c.skip_nonfinite_steps = False
  # With skip_nonfinite_steps: stop once this many steps in a row were skipped (the run no longer
  # trains; its checkpoints would only repeat the last good state).
  c.skip_nonfinite_limit = 100
  c.on_config_change = "warn"  # "warn" (print the diff) or "error"
  c.on_bad_checkpoint = "error"  # "error" or "fresh"
  return c


SCHEDULES = ("cosine", "constant", "plateau")
DTYPES = ("float32", "bfloat16")
EARLY_STOP_METRICS = ("val_top1", "val_top5", "val_loss")


def unknown_field(name: str, valid, what: str = "config field") -> ConfigError:
  """``Unknown config field 'x'; did you mean 'y'? Valid: ...``"""
  leaf = name.rsplit(".", 1)[-1]
  close = difflib.get_close_matches(leaf, list(valid), n=1)
  hint = f" Did you mean {name[:len(name) - len(leaf)] + close[0]!r}?" if close else ""
  return ConfigError(f"Unknown {what} {name!r}.{hint} Valid: {', '.join(sorted(valid))}.")


def _check_keys(config, reference, prefix=""):
  for key in config.keys():
    if key not in reference:
      raise unknown_field(prefix + key, reference.keys())
    if isinstance(reference[key], ml_collections.ConfigDict) and key != "model_kw":
      _check_keys(config[key], reference[key], prefix + key + ".")


def _check_ranges(config) -> None:
  """Values that would train to nothing or diverge: refused instead of saved as "best"."""
  opt, model_kw = config.optimizer, config.model_kw
  checks = [("optimizer.learning_rate", opt.learning_rate, 0, None, "> 0"),
            ("optimizer.min_learning_rate", opt.min_learning_rate, None, None, ">= 0"),
            ("optimizer.weight_decay", opt.weight_decay, None, None, ">= 0"),
            ("optimizer.plateau_rtol", opt.plateau_rtol, None, 1, "in [0, 1)"),
            ("optimizer.plateau_atol", opt.plateau_atol, None, None, ">= 0"),
            ("optimizer.warmup_epochs", opt.warmup_epochs, None, None, ">= 0"),
            ("optimizer.grad_clip_norm", opt.grad_clip_norm, None, None, ">= 0 (0: off)"),
            ("early_stopping.patience", config.early_stopping.patience, None, None, ">= 0"),
            ("label_smoothing", config.label_smoothing, None, 1, "in [0, 1)")]
  checks += [(f"model_kw.{k}", model_kw[k], None, 1, "in [0, 1)")
             for k in ("dropout_rate", "head_dropout_rate", "drop_path_rate") if k in model_kw]
  for name, value, above, below, rule in checks:
    if value < 0 or (above is not None and value <= above) or (below is not None and
                                                                value >= below):
      raise ConfigError(f"{name}={value} cannot train; it must be {rule}.")
  if not 0 < opt.plateau_factor < 1 or opt.plateau_patience < 0:
    raise ConfigError(f"optimizer.plateau_factor must be in (0, 1) and plateau_patience >= 0; got "
                      f"{opt.plateau_factor}, {opt.plateau_patience}.")
  if opt.min_learning_rate > opt.learning_rate:
    raise ConfigError(f"optimizer.min_learning_rate={opt.min_learning_rate} is above "
                      f"learning_rate={opt.learning_rate}.")


def _leaves(config, prefix: str = ""):
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}{key}.")
    else:
      yield prefix + key, value


def _check_finite(config) -> None:
  """NaN / inf pass every ``<`` / ``>`` range check; refused here, whatever the field."""
  for name, value in _leaves(config):
    values = value if isinstance(value, (tuple, list)) else (value,)
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
      raise ConfigError(f"{name}={value} cannot train; it must be a finite number.")


# Model fields a run sets itself: the class count comes from the dataset, the dtype from `dtype`.
_RUN_MODEL_FIELDS = {"num_classes": "the dataset's class count", "dtype": "--config.dtype"}


def _check_run_fields(config) -> None:
  for field, source in _RUN_MODEL_FIELDS.items():
    if field in config.model_kw:
      raise ConfigError(f"model_kw.{field} cannot be set: it is {source}.")
  if not isinstance(config.seed, int) or config.seed < 0:
    raise ConfigError(f"seed must be an integer >= 0; got {config.seed!r}.")
  if not isinstance(config.skip_nonfinite_limit, int) or config.skip_nonfinite_limit < 1:
    raise ConfigError(f"skip_nonfinite_limit must be an integer >= 1; got "
                      f"{config.skip_nonfinite_limit!r}.")
  if config.input == "stream" and (config.augment.crop_padding or config.augment.zoom):
    raise ConfigError("input='stream' crops on the host (random-resized-crop); set "
                      "augment.crop_padding=0 and augment.zoom=0, or input='memory'.")
  try:
    data.resolve_splits(config.train_split, config.validation_split or None,
                        config.holdout_fraction)
  except data.DataError as e:
    raise ConfigError(str(e)) from None


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for a config that cannot work, before any data is read or code compiled."""
  _check_keys(config, base_config())
  _check_finite(config)
  _check_run_fields(config)
  if config.dtype not in DTYPES:
    raise ConfigError(f"dtype={config.dtype!r}; use one of {DTYPES}.")
  if config.optimizer.schedule not in SCHEDULES:
    raise ConfigError(f"optimizer.schedule={config.optimizer.schedule!r}; use one of {SCHEDULES}.")
  for name, allowed in (("input", ("auto", "memory", "stream")),
                        ("optimizer.weight_decay_mode", ("times_lr", "absolute")),
                        ("optimizer.decay_mask", ("kernels", "all")),
                        ("augment.zoom_style", data.ZOOM_STYLES),
                        ("on_config_change", ("warn", "error")),
                        ("on_bad_checkpoint", ("error", "fresh"))):
    value = config
    for key in name.split("."):
      value = value[key]
    if value not in allowed:
      raise ConfigError(f"{name}={value!r}; use one of {allowed}.")
  es = config.early_stopping
  if es.metric not in EARLY_STOP_METRICS or es.mode not in ("min", "max"):
    raise ConfigError(f"early_stopping needs metric in {EARLY_STOP_METRICS} and mode in "
                     f"('min', 'max'); got {es.metric!r}, {es.mode!r}.")
  if config.stop_after_epochs < 0:
    raise ConfigError(f"stop_after_epochs must be >= 0 (0: off); got {config.stop_after_epochs}.")
  if config.cpu_devices < 0:
    raise ConfigError(f"cpu_devices must be >= 0 (0: JAX's default); got {config.cpu_devices}.")
  for name in ("batch_size", "eval_batch_size", "num_epochs", "log_every_steps",
               "max_steps_ahead", "checkpoint_every_steps", "keep_checkpoints"):
    if config[name] <= 0:
      raise ConfigError(f"{name} must be positive; got {config[name]}.")
  if not 0.0 <= config.holdout_fraction < 1.0:
    raise ConfigError(f"holdout_fraction must be in [0, 1); got {config.holdout_fraction}.")
  has_validation = bool(config.validation_split) or config.holdout_fraction > 0
  if not has_validation and (config.optimizer.schedule == "plateau" or es.patience > 0):
    raise ConfigError("optimizer.schedule='plateau' and early_stopping.patience > 0 need a "
                     "validation set: set holdout_fraction > 0 or validation_split.")
  _check_ranges(config)
  try:
    parallel.check_batch_size(config.batch_size, "batch_size")
    parallel.check_batch_size(config.eval_batch_size, "eval_batch_size")
    build_model(config, num_classes=2)  # unknown variant / override, sizes that do not fit
    augment_config(config, model_image_size(config))  # augmentation ranges, mean/std lengths
  except ValueError as e:
    raise ConfigError(str(e)) from None


def build_model(config: ml_collections.ConfigDict, num_classes: int) -> models.GatedMLPClassifier:
  return models.get(config.model, num_classes=num_classes, dtype=config.dtype,
                    **config.model_kw.to_dict())


def augment_config(config: ml_collections.ConfigDict, image_size: int) -> data.AugmentConfig:
  """The on-device augmentation of a run, with the normalisation resolved (``normalization``)."""
  mean, std = normalization(config)
  return data.AugmentConfig(image_size=image_size, **{**config.augment, "mean": mean, "std": std})


def normalization(config: ml_collections.ConfigDict) -> tuple[tuple[float, ...], ...]:
  """``(mean, std)``: ``augment.mean`` / ``augment.std`` when set, else the dataset's own."""
  if config.augment.mean or config.augment.std:
    return tuple(config.augment.mean), tuple(config.augment.std)
  return data.dataset_stats(config.dataset)


def check_channels(config: ml_collections.ConfigDict, channels: int | None) -> None:
  """A dataset of ``channels`` channels (None: not known yet) against the normalisation: a
  grayscale or RGBA dataset without statistics of its own is refused in one line, not
  normalised with ImageNet's three."""
  mean, std = normalization(config)
  if channels is None or channels == len(mean) == len(std):
    return
  whose = ("augment.mean / augment.std" if config.augment.mean or config.augment.std else
           "its default (ImageNet's, for a dataset without statistics of its own)")
  raise ConfigError(
      f"{config.dataset} images have {channels} channels but the normalisation has {len(mean)}, "
      f"{whose}; set --config.augment.mean and --config.augment.std to {channels} values each "
      f"(the per-channel mean and std of the train split, in [0, 1] pixel units).")


def model_image_size(config: ml_collections.ConfigDict) -> int:
  """The input resolution of the configured model, without building it."""
  return config.model_kw.get("image_size", models.VARIANTS[config.model]["image_size"])


_TRUE, _FALSE = ("", "1", "true", "yes"), ("0", "false", "no")


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a config argument ``"k1=v1,flag"`` (``--config=file.py:k1=v1,flag``) over defaults.

  A bare ``flag`` sets a boolean default to True; other values are converted to the default's type,
  strictly: ``small=ture`` or ``epochs=ten`` is a ConfigError naming the argument. A default given
  as a type (``epochs=int``) means "no default": the value is None unless the argument is given,
  and then it must be a positive number.
  """
  out = ml_collections.ConfigDict({k: None if isinstance(v, type) else v
                                   for k, v in defaults.items()})
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise unknown_field(key, defaults, "config argument")
    default = defaults[key]
    kind = default if isinstance(default, type) else type(default)
    try:
      if kind is bool:
        if value.lower() not in _TRUE + _FALSE:
          raise ValueError
        out[key] = value.lower() in _TRUE
      else:
        out[key] = kind(value)
    except ValueError:
      raise ConfigError(f"Config argument {key}={value!r} is not a {kind.__name__}.") from None
    if isinstance(default, type) and out[key] <= 0:
      raise ConfigError(f"Config argument {key}={value!r} must be positive.")
  return out
