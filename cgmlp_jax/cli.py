"""What every command (``launch.py``, ``python -m cgmlp_jax.*``) does around its ``main``.

* The project's own errors (``errors.UserError``: a bad config, missing data, an unusable workdir
  or checkpoint) print as one ``error: ...`` line and exit with status 2; any other exception is a
  bug and keeps its traceback. ``CGMLP_JAX_TRACEBACK=1`` shows the traceback of both.
* ``--config=FILE[:ARGS]`` and its ``--config.FIELD=VALUE`` overrides are checked before absl and
  ml_collections see them (``preflight``): a config file that is missing or refuses its arguments,
  and an override of a field that does not exist, are one line with a did-you-mean instead of
  three chained ml_collections tracebacks. A model field the config file did not list
  (``--config.model_kw.depth=8``) is taken out of the command line and applied after parsing
  (``apply_model_overrides``), so every field of the model can be overridden.
* The commands without a training config (``python -m cgmlp_jax.tools.report`` and the like)
  parse their absl flags with ``parse_flags``: ``--help`` lists every argument with its
  description, and a mistake on the command line is one ``error:`` line too.
"""
import ast
import functools
import importlib.util
import os
import sys
import textwrap
import traceback
from typing import Any, Callable, NoReturn, Sequence

import ml_collections
from absl import app, flags, logging

from cgmlp_jax import models
from cgmlp_jax.errors import Aborted, ConfigError, UserError

TRACEBACK_ENV = "CGMLP_JAX_TRACEBACK"
HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull")


def fail(message: str) -> NoReturn:
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.exit(2)


def one_line_errors(main: Callable) -> Callable:
  """``main`` with its ``UserError``s printed as one line (exit status 2), and an abort (second
  Ctrl-C while training) as its one line (exit status 130)."""
  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    try:
      return main(*args, **kwargs)
    except Aborted as e:
      if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        raise
      print(e, file=sys.stderr, flush=True)
      sys.exit(Aborted.EXIT_STATUS)
    except UserError as e:
      if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
        raise
      fail(" ".join(str(e).split()))
  return wrapped


def parse_flags(argv: Sequence[str] | None, define: Callable[[flags.FlagValues], None], prog: str,
                doc: str, positional: tuple[str, str] | None = None,
                ) -> tuple[flags.FlagValues, list[str]]:
  """A command's flags and positional arguments, parsed from ``argv`` (without the program name;
  None: ``sys.argv[1:]``) into a fresh ``flags.FlagValues`` on which ``define`` defines the flags.

  ``positional``: the positional arguments' name and description (at least one is needed); None:
  the command takes none. A fresh ``FlagValues``, not absl's global ``FLAGS``: a module imported
  for its functions defines no flags, and a command's ``main(argv)`` can run many times in one
  process (the tests). ``--help`` prints ``command_help`` and exits 0; an unknown flag, a bad
  value, a missing required flag, or a positional argument too many or missing is one ``error:``
  line and exit status 2.
  """
  argv = sys.argv[1:] if argv is None else list(argv)
  values = flags.FlagValues()
  define(values)
  if any(arg in HELP_FLAGS for arg in argv):
    print(command_help(values, prog, doc, positional))
    sys.exit(0)
  try:
    rest = values([prog, *argv])[1:]
  except flags.Error as e:
    fail(" ".join(str(e).split()))
  if positional and not rest:
    fail(f"{prog} needs at least one {positional[0]} ({positional[1]}); see --help.")
  if rest and not positional:
    fail(f"Unexpected argument(s) {' '.join(rest)}: {prog} takes flags only (a list flag takes "
         f"its items comma-separated: --name=a,b); see --help.")
  return values, rest


def command_help(values: flags.FlagValues, prog: str, doc: str,
                 positional: tuple[str, str] | None = None) -> str:
  """Usage, ``doc``'s first paragraph, then each argument and flag with its description."""
  usage = f"usage: {prog} [--flag=value ...]"
  if positional:
    usage += f" {positional[0]} [{positional[0]} ...]"
  lines = [usage, "", " ".join(doc.split("\n\n")[0].split()), ""]
  if positional:
    lines += ["arguments:", f"  {positional[0]}: {positional[1]}", ""]
  lines.append("flags:")
  for name in values:
    flag = values[name]
    default = "" if flag.default in (None, "") else f" (default: {flag.default})"
    lines.append(textwrap.fill(f"--{'[no]' if flag.boolean else ''}{name}: {flag.help}{default}",
                               100, initial_indent="  ", subsequent_indent="      "))
  return "\n".join(lines)


def load_config_file(spec: str) -> ml_collections.ConfigDict:
  """``get_config(ARGS)`` of ``FILE`` for ``spec = "FILE[:ARGS]"``, as ml_collections loads it."""
  path, _, arg = spec.partition(":")
  if not os.path.isfile(path):
    raise ConfigError(f"Config file {path!r} not found (from --config={spec}); the configs are "
                      f"in configs/, e.g. --config=configs/cgmlp.py.")
  loader_spec = importlib.util.spec_from_file_location("_cgmlp_jax_config", path)
  module = importlib.util.module_from_spec(loader_spec)
  try:
    loader_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f"Config file {path}, line {e.lineno}: {e.msg}.") from None
  except Exception as e:  # noqa: BLE001  (the file's own code failed)
    raise _config_file_error(path, spec, e) from None
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"Config file {path} defines no get_config(); a config file returns its "
                      f"ml_collections.ConfigDict from get_config(arg=None).")
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(f"--config={spec}: {e}") from None
  except Exception as e:  # noqa: BLE001
    raise _config_file_error(path, spec, e) from None
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f"get_config() in {path} returned a {type(config).__name__}, not an "
                      f"ml_collections.ConfigDict; start from train.config.base_config() and "
                      f"change its fields.")
  return config


def _config_file_error(path: str, spec: str, error: Exception) -> ConfigError:
  """``Config file F, line N: TypeError: ...``: the deepest line of F the error passed."""
  lines = [frame.lineno for frame in traceback.extract_tb(error.__traceback__)
           if os.path.abspath(frame.filename) == os.path.abspath(path)]
  where = f", line {lines[-1]}" if lines else ""
  return ConfigError(f"Config file {path}{where} (from --config={spec}) failed: "
                     f"{type(error).__name__}: {error}")


def _parse_value(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text  # a bare string: --config.model_kw.axes=alternate


def setup_process(config: ml_collections.ConfigDict, reads_data: bool = True) -> None:
  """Process-wide settings a run needs before JAX starts its backends: the CPU split into
  ``config.cpu_devices`` devices, joining a multi-host job (``config.distributed``), and, in a
  process that ``reads_data`` with TensorFlow, TensorFlow kept off the accelerators (the
  benchmarks, on synthetic data, never start it). (The allocator is set up on importing the
  package, log levels by ``run``.)"""
  from cgmlp_jax import parallel  # noqa: PLC0415  (after the malloc setup)
  parallel.split_cpu(config.cpu_devices)
  if config.distributed:
    parallel.initialize_distributed()
  if reads_data:
    import tensorflow as tf  # noqa: PLC0415
    tf.config.set_visible_devices([], "GPU")


def run(main: Callable[[list[str]], Any]) -> None:
  """``absl.app.run(main)`` for a command with ``--config``: ``preflight`` first, the model
  overrides applied to ``FLAGS.config`` before ``main``, ``UserError``s as one line."""
  # ml_collections reads the overrides from sys.argv itself: hand it the checked ones.
  sys.argv, overrides = one_line_errors(preflight)(sys.argv)

  def with_overrides(argv):
    logging.set_verbosity(logging.WARNING)  # progress is printed; JAX's and orbax's INFO is noise
    apply_model_overrides(flags.FLAGS.config, overrides)
    return main(argv)

  app.run(one_line_errors(with_overrides))


def preflight(argv: list[str], model_fields=models.FIELDS) -> tuple[list[str], dict[str, Any]]:
  """Checks ``argv``'s config file and overrides (see the module docstring).

  Returns ``argv`` without the model overrides the config file does not list, and those overrides.
  """
  from cgmlp_jax.train import config as config_lib  # noqa: PLC0415  (after the malloc setup)
  spec = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
  if spec is None:
    return argv, {}
  config = load_config_file(spec)
  kept, model_overrides = [], {}
  for arg in argv:
    if not arg.startswith("--config.") or "=" not in arg:
      kept.append(arg)
      continue
    name, value = arg[len("--config."):].split("=", 1)
    *parents, leaf = name.split(".")
    if parents == ["model_kw"]:
      if leaf not in model_fields:
        raise config_lib.unknown_field(name, model_fields, "model field")
      if leaf not in config.model_kw:
        model_overrides[leaf] = _parse_value(value)
        continue
    else:
      node = config
      for i, key in enumerate(parents + [leaf]):
        if not isinstance(node, ml_collections.ConfigDict) or key not in node:
          valid = node.keys() if isinstance(node, ml_collections.ConfigDict) else ()
          raise config_lib.unknown_field(".".join((parents + [leaf])[:i + 1]), valid)
        node = node[key]
    kept.append(arg)
  return kept, model_overrides


def apply_model_overrides(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> None:
  if not overrides:
    return
  with config.unlocked():
    for key, value in overrides.items():
      config.model_kw[key] = value
