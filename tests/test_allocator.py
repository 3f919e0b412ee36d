"""The malloc settings of cgmlp_jax.allocator: applied on import, measurable, switchable off."""
import os
import subprocess
import sys

import pytest

# Allocates and frees a 64 MiB block twice; prints the minor page faults of the second time. glibc's
# default serves such a block by mmap and unmaps it on free, so the second allocation faults in all
# ~16k pages again; with the settings the heap keeps the memory and the second one reuses it.
SCRIPT = """
import ctypes, resource
import cgmlp_jax
from cgmlp_jax import allocator
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 64 << 20
def touch():
  p = libc.malloc(size)
  ctypes.memset(p, 1, size)
  libc.free(p)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, allocator.STATUS)
"""


def _run(**env) -> tuple[int, str]:
  env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
  out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                       check=True).stdout.split(maxsplit=1)
  return int(out[0]), out[1].strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_buffers_are_reused_without_new_page_faults_unless_switched_off():
  faults, status = _run(CGMLP_JAX_MALLOC=None, GLIBC_TUNABLES=None, JAX_PLATFORMS=None)
  assert status.startswith("on (glibc"), status
  assert faults < 1000, faults  # ~16k pages without the settings
  faults, status = _run(CGMLP_JAX_MALLOC="default")
  assert status == "off (CGMLP_JAX_MALLOC=default)"
  assert faults > 10_000, faults


@pytest.mark.parametrize("env, status", [
    (dict(JAX_PLATFORMS="cuda"), "off (accelerator: cuda)"),
    (dict(GLIBC_TUNABLES="glibc.malloc.arena_max=2"), "off (GLIBC_TUNABLES sets malloc)"),
])
def test_left_alone_for_accelerators_and_the_users_own_tunables(env, status):
  assert _run(**{"CGMLP_JAX_MALLOC": None, **env})[1] == status
