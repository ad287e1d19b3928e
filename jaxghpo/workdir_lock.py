"""One run per workdir: a lease file DIR/run.lock with its owner and a heartbeat, through paths.py (so a
gs:// workdir holds one too).

    with workdir_lock.held(workdir):   # every process calls it; process 0 takes the lease, all agree
      ... the run ...

The lease is JSON: {"host", "pid", "started", "heartbeat", "token"} (times in seconds since the epoch).
A second run on the same workdir is refused (WorkdirLocked, naming the other run). A lease is taken over,
with a message, when it is stale: its heartbeat is older than STALE_S (the run died without releasing
it: SIGKILL, a lost VM), or its owner is a process on this host that no longer exists. The owner rewrites
the heartbeat every HEARTBEAT_S seconds from a daemon thread and removes the file when the run ends.

Two runs that start within the same moment: locally the lease is created with O_EXCL (one wins); on an
object store, which has no exclusive create, each writes its lease and reads it back, and the one that
reads another's token is refused.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from typing import Iterator

from jaxghpo import paths

LOCK_FILE = "run.lock"
HEARTBEAT_S = 30.0
STALE_S = 180.0  # six missed heartbeats


class WorkdirLocked(RuntimeError):
  """Another run holds the workdir's lease."""


def _describe(lease: dict, now: float) -> str:
  started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(lease.get("started", 0))))
  age = now - float(lease.get("heartbeat", 0))
  return f"host {lease.get('host')}, pid {lease.get('pid')}, started {started}, heartbeat {age:.0f} s ago"


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # another user's process
  return True


def stale_reason(lease: dict, now: float, host: str) -> str | None:
  """Why `lease` may be taken over (its heartbeat is STALE_S old; its owner on this host is gone), or None."""
  age = now - float(lease.get("heartbeat", 0))
  if age > STALE_S:
    return f"its heartbeat is {age:.0f} s old (> {STALE_S:.0f} s)"
  if lease.get("host") == host and not _pid_alive(int(lease.get("pid", -1))):
    return f"its process {lease.get('pid')} on this host is gone"
  return None


def _read(path: str) -> dict | None:
  try:
    lease = json.loads(paths.read_text(path))
  except FileNotFoundError:
    return None
  except (ValueError, OSError):
    return {}  # unreadable (a half-written object): an unknown owner with no heartbeat, stale
  return lease if isinstance(lease, dict) else {}


class Lease:
  """This process's lease on `workdir` (acquire / release); the heartbeat runs in a daemon thread."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.path = paths.join(workdir, LOCK_FILE)
    now = time.time()
    self.lease = {"host": socket.gethostname(), "pid": os.getpid(), "started": now, "heartbeat": now,
                  "token": uuid.uuid4().hex}
    self._stop = threading.Event()
    self._thread = None

  def acquire(self) -> None:
    paths.makedirs(self.workdir)
    other = _read(self.path)
    now = time.time()
    if other is not None:
      reason = stale_reason(other, now, self.lease["host"])
      if reason is None:
        raise WorkdirLocked(
            f"workdir {self.workdir} is in use by another run ({_describe(other, now)}; lease {self.path}). "
            "Wait for it to end or use another --workdir. A run that died leaves its lease: it is taken over once "
            f"its heartbeat is {STALE_S:.0f} s old, at once on the same host when its process is gone.")
      print(f"workdir lock: taking over {self.path} of the run that held it ({_describe(other, now)}): {reason}",
            flush=True)
      self._write()
    elif not self._create():
      return self.acquire()  # another run created it in between: judge that one
    mine = _read(self.path)
    if not mine or mine.get("token") != self.lease["token"]:  # lost a race on a store without exclusive create
      raise WorkdirLocked(f"workdir {self.workdir}: another run took the lease {self.path} at the same moment "
                          f"({_describe(mine or {}, time.time())}); use another --workdir or wait for it to end")
    self._thread = threading.Thread(target=self._beat, name="workdir-lock-heartbeat", daemon=True)
    self._thread.start()

  def _create(self) -> bool:
    """Writes the lease if none exists (exclusive locally); False when another run's appeared first."""
    if paths.is_remote(self.path):
      self._write()
      return True
    try:
      fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, "w") as f:
      f.write(json.dumps(self.lease))
    return True

  def _write(self) -> None:
    paths.write_text(self.path, json.dumps(self.lease))

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      current = _read(self.path)
      if not current or current.get("token") != self.lease["token"]:
        print(f"workdir lock: {self.path} was taken over by another run ({_describe(current or {}, time.time())}); "
              "two runs may now write this workdir", flush=True)
        return
      self.lease["heartbeat"] = time.time()
      try:
        self._write()
      except OSError as e:  # a full disk or a network error: the next beat tries again
        print(f"workdir lock: heartbeat not written ({e})", flush=True)

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=10)
    current = _read(self.path)
    if current and current.get("token") == self.lease["token"]:
      paths.remove(self.path)


@contextlib.contextmanager
def held(workdir: str) -> Iterator[None]:
  """The run's lease on `workdir` for the block. Several processes: process 0 takes it and the others
  agree on the outcome (a collective: every process calls this), so a refusal stops every process."""
  import jax
  lease = Lease(workdir) if jax.process_index() == 0 else None
  error = None
  if lease is not None:
    try:
      lease.acquire()
    except WorkdirLocked as e:
      error = str(e)
  if jax.process_count() > 1:
    from jaxghpo.parallel import hosts
    error = hosts.allgather_json(error)[0]
  if error is not None:
    raise WorkdirLocked(error)
  try:
    yield
  finally:
    if lease is not None:
      lease.release()
