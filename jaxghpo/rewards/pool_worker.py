"""The workers' side of the reward pool (pool.py): the item wrapper with its soft deadline, and the
initializer pebble runs in each worker (kill at once on SIGTERM, die with the owner, memory limit).

Imported by the forkserver before it forks workers (pool.PRELOAD); imports only the standard library.
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import threading
import time
from typing import Any, Callable

_SOFT_TIMER_REPEAT_S = 0.05   # the soft timer re-fires until the item unwinds (code may swallow one)
_ORPHAN_POLL_S = 1.0


def alive(pid: int) -> bool:
  """True while `pid` exists and is not a zombie (a zombie has exited; only its entry remains)."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
  except (OSError, IndexError):
    return True


class _SoftDeadline(BaseException):
  """Raised by the soft timer. A BaseException so that `except Exception` in library code (sympy,
  math-verify) does not swallow it."""


_soft_armed = False


def _on_alarm(signum, frame):
  if _soft_armed:
    raise _SoftDeadline()


def _disarm() -> None:
  global _soft_armed
  _soft_armed = False
  signal.setitimer(signal.ITIMER_REAL, 0.0)


def _call_with_soft_deadline(fn: Callable, args: tuple, soft_s: float):
  global _soft_armed
  if soft_s <= 0:
    return fn(*args)
  _soft_armed = True
  signal.setitimer(signal.ITIMER_REAL, soft_s, _SOFT_TIMER_REPEAT_S)
  try:
    return fn(*args)
  finally:
    _disarm()


def run_item(fn: Callable, args: tuple, soft_s: float) -> tuple[str, Any]:
  """("ok", value) | ("timeout", None) | ("error", exception type name). The task pebble runs."""
  result: tuple[str, Any] = ("timeout", None)
  try:
    try:
      result = ("ok", _call_with_soft_deadline(fn, args, soft_s))
    except _SoftDeadline:
      result = ("timeout", None)
    except Exception as e:  # noqa: BLE001 - a failure of one item scores that item only
      # Only the type: str() of a hostile sympy object can itself hang.
      result = ("error", type(e).__name__)
  except _SoftDeadline:   # the repeating timer fired again while the item was unwinding
    pass
  while True:             # the timer must be off before pebble touches the pipe again
    try:
      _disarm()
      return result
    except _SoftDeadline:
      pass


def ping() -> int:
  return os.getpid()


def _watch_owner(owner_pid: int) -> None:
  while True:
    time.sleep(_ORPHAN_POLL_S)
    if not alive(owner_pid):
      os._exit(0)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent() -> bool:
  """Asks the kernel to SIGKILL this process when its parent exits (Linux); exits at once if the parent
  is already gone. False where prctl is unavailable."""
  if not sys.platform.startswith("linux"):
    return False
  import ctypes
  parent = os.getppid()
  try:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
  except (OSError, AttributeError):
    return False
  if os.getppid() != parent:
    os._exit(0)
  return True


def _release_forkserver() -> None:
  """Closes this worker's copy of the forkserver's "owner alive" pipe. multiprocessing hands every
  forkserver child a copy, and the forkserver exits only at EOF of that pipe, so a worker busy in C
  would keep it (and, through PR_SET_PDEATHSIG, itself) alive after the owner dies."""
  server = multiprocessing.forkserver._forkserver
  fd = getattr(server, "_forkserver_alive_fd", None)
  if fd is not None:
    try:
      os.close(fd)
    except OSError:
      pass
    server._forkserver_alive_fd = None


def worker_init(init: Callable | None, memory_limit_mb: int, owner_pid: int) -> None:
  """pebble's initializer: runs in each worker before it takes an item."""
  signal.signal(signal.SIGTERM, signal.SIG_DFL)   # see the module docstring
  _release_forkserver()
  if not _die_with_parent():
    threading.Thread(target=_watch_owner, args=(owner_pid,), daemon=True).start()
  if memory_limit_mb:
    import resource
    limit = int(memory_limit_mb) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  signal.signal(signal.SIGALRM, _on_alarm)
  if init is not None:
    init()
