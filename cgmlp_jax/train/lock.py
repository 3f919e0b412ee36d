"""One run per workdir: ``WORKDIR/lock`` names the process that trains in it (host, pid, start).

Without it a second ``launch.py`` on a running workdir resumed from the first one's checkpoints
while it trained, both wrote ``metrics.jsonl``, and the second one's checkpoints, ``best/`` and
``summary.json`` replaced the first's. Now the second start is refused in one line naming the
holder. A lock whose process is gone (same host, pid no longer running, or running but started
later: a reused pid) is stale, and is taken over with one printed line; a lock held from another
host cannot be checked from here, so it is refused with the way to clear it.

On a local file system the lock file is also ``flock``-ed while held: two starts at the same moment
cannot both take it, and the kernel drops the flock of a killed process (its file, left behind,
then reads as stale). A remote workdir (``gs://...``) gets the file alone.

A multi-process run locks once, in process 0; the others learn whether it could. Everything that
trains into a workdir (``launch.py``, ``cgmlp_jax.sweep``'s points, tests) goes through
``train_and_evaluate``, which takes the lock (``take``) and, decorated with ``releases_locks``,
removes it when it returns or raises (a stop on SIGTERM / Ctrl-C included).
"""
import contextvars
import datetime
import fcntl
import functools
import json
import os
import socket
from typing import Any, Callable

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from cgmlp_jax.train.workdir import WorkdirError

LOCK_FILE = "lock"
_HELD: contextvars.ContextVar[list | None] = contextvars.ContextVar("workdir_locks", default=None)


def _process_start(pid: int) -> str | None:
  """The start time of process ``pid`` (clock ticks after boot, /proc), None where unknown: with
  the pid it tells a running holder from a later process that reuses its pid."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _this_process() -> dict[str, Any]:
  return {"host": socket.gethostname(), "pid": os.getpid(),
          "pid_start": _process_start(os.getpid()),
          "since": datetime.datetime.now().isoformat(timespec="seconds")}


def _is_this_process(holder: dict) -> bool:
  me = _this_process()
  return all(holder.get(k) == me[k] for k in ("host", "pid", "pid_start"))


def _has_ended(holder: dict) -> bool:
  """Whether the holder's process is known to be gone: only a process of this host can tell."""
  if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
    return False
  try:
    os.kill(holder["pid"], 0)
  except ProcessLookupError:
    return True
  except PermissionError:  # another user's live process
    return False
  started = _process_start(holder["pid"])
  return bool(holder.get("pid_start") and started and started != holder["pid_start"])


def _parse(text: str) -> dict:
  try:
    holder = json.loads(text) if text.strip() else {}
  except json.JSONDecodeError:
    holder = None
  return holder if isinstance(holder, dict) else {"host": "?", "pid": "?", "unreadable": text[:80]}


def _describe(holder: dict) -> str:
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
          + (f" (since {holder['since']})" if holder.get("since") else ""))


def _busy(workdir: epath.Path, path: epath.Path, holder: dict) -> WorkdirError:
  other_host = holder.get("host") != socket.gethostname()
  return WorkdirError(
      f"Workdir {workdir} is in use by another run: {_describe(holder)} holds {path}. Wait for "
      f"it to finish or stop it, or choose another --workdir"
      + (f"; if that run has ended (its host went down), delete {path}." if other_host else "."))


class WorkdirLock:
  """``acquire()`` or ``WorkdirError`` naming the holder; ``release()`` removes the file."""

  def __init__(self, workdir: str | epath.PathLike):
    self.workdir = epath.Path(workdir)
    self.path = self.workdir / LOCK_FILE
    self._fd: int | None = None
    self._held = False
    self._local = "://" not in str(self.workdir)

  def acquire(self) -> None:
    holder = self._open_local() if self._local else _parse(
        self.path.read_text() if self.path.exists() else "")
    if holder and not _is_this_process(holder):
      if not _has_ended(holder):
        self._close()
        raise _busy(self.workdir, self.path, holder)
      print(f"Taking over the stale lock {self.path}: {_describe(holder)} has ended.", flush=True)
    self._write(json.dumps(_this_process()))
    self._held = True

  def _open_local(self) -> dict:
    """Opens and flocks the lock file; the holder it names (``{}`` if none)."""
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = _parse(os.pread(fd, 4096, 0).decode(errors="replace"))
        os.close(fd)
        raise _busy(self.workdir, self.path, holder) from None
      try:
        same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
      except FileNotFoundError:
        same_file = False
      if same_file:  # else its holder removed it between our open and flock: open the new one
        self._fd = fd
        return _parse(os.pread(fd, 4096, 0).decode(errors="replace"))
      os.close(fd)

  def _write(self, text: str) -> None:
    if self._fd is None:
      self.path.write_text(text)
      return
    os.ftruncate(self._fd, 0)
    os.pwrite(self._fd, text.encode(), 0)
    os.fsync(self._fd)

  def _close(self) -> None:
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None

  def release(self) -> None:
    """Removes the lock file if it still names this process; never raises."""
    try:
      if self._held:
        text = (os.pread(self._fd, 4096, 0).decode(errors="replace") if self._fd is not None
                else self.path.read_text() if self.path.exists() else "")
        if _is_this_process(_parse(text)):
          self.path.unlink()
    except OSError as e:
      print(f"WARNING: could not remove the workdir lock {self.path}: {e}", flush=True)
    finally:
      self._held = False
      self._close()


def take(workdir: str | epath.PathLike) -> None:
  """Locks ``workdir`` for this run (process 0 of a multi-process run, which tells the others);
  the lock is released when the function decorated with ``releases_locks`` ends."""
  held = _HELD.get()
  if held is None:
    raise RuntimeError("lock.take() outside a function decorated with lock.releases_locks.")
  lock, error = None, None
  if jax.process_index() == 0:
    lock = WorkdirLock(workdir)
    try:
      lock.acquire()
    except WorkdirError as e:
      error = e
  if jax.process_count() > 1:
    refused = int(np.max(multihost_utils.process_allgather(np.int32(error is not None))))
    if refused and error is None:
      error = WorkdirError(f"Process 0 could not lock workdir {workdir} (its output says why).")
  if error is not None:
    raise error
  if lock is not None:
    held.append(lock)


def releases_locks(fn: Callable) -> Callable:
  """``fn`` releasing every workdir lock it took with ``take`` when it returns or raises."""
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    held = []
    token = _HELD.set(held)
    try:
      return fn(*args, **kwargs)
    finally:
      _HELD.reset(token)
      for lock in reversed(held):
        lock.release()
  return wrapped
