"""The project's own errors: mistakes a user can fix, which the commands print as one line.

Every such error derives from ``UserError``. ``cgmlp_jax.cli`` prints it as ``error: MESSAGE`` and
exits with status 2, without a traceback; any other exception is a bug and keeps its traceback.
``CGMLP_JAX_TRACEBACK=1`` shows the traceback of a ``UserError`` too.
"""


class UserError(Exception):
  """A mistake in the command, config, data, workdir or checkpoint that the message says how to fix."""


class ConfigError(UserError, ValueError):
  """A config (file, argument or override) that cannot train."""


class DataError(UserError, ValueError):
  """A user-facing data problem (missing dataset or split, unsupported features, bad sizes)."""


class WeightsError(UserError, ValueError):
  """Weights that cannot be read or fetched, or do not fit the model (missing, extra or
  mis-shaped arrays)."""


class Aborted(KeyboardInterrupt):
  """The user aborted at once (a second Ctrl-C), without a checkpoint; the commands print the
  message as one line and exit with ``EXIT_STATUS``, as a shell does for Ctrl-C. The message may
  be a function, called when printed: after the saves already under way have ended."""

  EXIT_STATUS = 130  # 128 + SIGINT

  def __init__(self, message):
    super().__init__()
    self._message = message

  def __str__(self) -> str:
    return self._message() if callable(self._message) else self._message
