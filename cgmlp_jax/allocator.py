"""Keeps glibc's malloc from returning XLA:CPU's per-step temporary buffers to the kernel.

On every train step XLA:CPU allocates each device's temporary buffer (~320 MB for ``gmlp_paper``
at batch 128) and frees it again. glibc serves blocks that large with ``mmap`` and gives them back
with ``munmap``, so every step faults in and zeroes ~165k fresh pages: ~260 ms of kernel time per
step, the largest single cost of a CPU step (BENCHMARKS.md). Three ``mallopt`` settings make glibc
keep and reuse that memory instead, and the same step runs 1.6-1.8x faster with bit-identical
results:

* ``M_ARENA_MAX = 1``: every thread allocates from the main arena (the heap grown by ``brk``);
  XLA's worker threads would otherwise get arenas of their own, which serve large blocks by mmap;
* ``M_MMAP_MAX = 0``: no block is ever served by ``mmap``, so large ones come from the heap too;
* ``M_TRIM_THRESHOLD = 2**31 - 1``: freed memory at the top of the heap is not handed back (the
  largest value a C int holds; one beyond it is silently ignored).

The price is that the process keeps its peak heap: its resident memory stays at the largest it
has been (measured in BENCHMARKS.md over a full epoch; it does not grow step over step).

``configure()`` runs when ``cgmlp_jax`` is imported, so ``launch.py``, the ``python -m cgmlp_jax.*``
commands and the tests get it without setting anything. It must come before JAX starts its
backends: once XLA's threads have their own arenas the settings no longer reach them. It does
nothing (and says why, in ``STATUS``)
* when ``CGMLP_JAX_MALLOC=default`` is set (the switch to turn it off);
* on a C library other than glibc (macOS, musl), where there is no ``mallopt`` of this kind;
* when ``GLIBC_TUNABLES`` already sets malloc tunables (the user's choice wins);
* when an accelerator (a GPU or TPU plugin of JAX, or ``JAX_PLATFORMS`` naming one) will run the
  model: the host then only feeds data, and one arena for every host thread would serialise them.
"""
import ctypes
import ctypes.util
import importlib.util
import os
import sys

ENV_SWITCH = "CGMLP_JAX_MALLOC"  # "default": leave malloc as it is
# glibc's malloc.h parameter numbers.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
_SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")

STATUS = "not configured"  # what configure() did, for logs and benchmarks


def _accelerator() -> str | None:
  """The accelerator JAX will compute on, judged without importing JAX; None for the CPU."""
  platforms = os.environ.get("JAX_PLATFORMS", "").lower()
  if platforms:
    first = platforms.split(",")[0].strip()
    return None if first == "cpu" else first
  for name in _ACCELERATOR_PLUGINS:
    if importlib.util.find_spec(name) is not None:
      return name
  return None


def configure() -> str:
  """Applies the settings above where they help; returns (and records in ``STATUS``) what it did."""
  global STATUS
  STATUS = _configure()
  return STATUS


def _configure() -> str:
  if os.environ.get(ENV_SWITCH, "").lower() == "default":
    return f"off ({ENV_SWITCH}=default)"
  if not sys.platform.startswith("linux"):
    return f"off (not glibc: {sys.platform})"
  if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
    return "off (GLIBC_TUNABLES sets malloc)"
  accelerator = _accelerator()
  if accelerator:
    return f"off (accelerator: {accelerator})"
  if "jax" in sys.modules and _jax_backends_started():
    return "off (JAX's backends started before cgmlp_jax was imported)"
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    gnu_get_libc_version = libc.gnu_get_libc_version
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return "off (not glibc)"
  gnu_get_libc_version.restype = ctypes.c_char_p
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  if not all(mallopt(param, value) for param, value in _SETTINGS):  # mallopt returns 1 on success
    return "off (mallopt refused)"
  return f"on (glibc {gnu_get_libc_version().decode()}: arena_max=1, mmap_max=0, no trim)"


def _jax_backends_started() -> bool:
  xla_bridge = sys.modules.get("jax._src.xla_bridge")
  return bool(xla_bridge and getattr(xla_bridge, "_backends", None))
