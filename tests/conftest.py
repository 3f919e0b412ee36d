"""Test-wide setup: 8 fake CPU devices so sharded code paths run on any machine.

The device count must be set before JAX initialises its backends, hence at import time here.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
