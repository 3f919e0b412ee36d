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
