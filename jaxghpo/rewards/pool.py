"""A pool of worker processes that runs one function per item under a hard deadline.

Why not `multiprocessing.Pool`: a worker stuck in C code (a sympy power tower, a huge factorial)
cannot be interrupted, and a timed-out `AsyncResult` leaves the worker busy for minutes. Here each
item runs in a worker we own; when it overruns its deadline the worker is SIGKILLed, the item gets the
fallback value and is counted, and a replacement takes its place while the other workers go on.

Two deadlines per item:
  soft (`soft_fraction * deadline_s`): an interval timer in the worker raises an exception between
    Python bytecodes; the item is a timeout and the worker survives. Most hostile inputs end here.
  hard (`deadline_s`): kept by the parent from dispatch; the worker is killed and replaced.

Processes. The pool starts one "zygote": a fresh `python -c` interpreter (never a fork of the caller,
which may hold JAX threads) that imports the function's module and runs `init` (for math-verify:
~1-2 s of sympy imports) once. Workers are forked from the zygote on request, already warm, in a few
milliseconds, so replacing a killed worker is cheap. The zygote passes the parent its end of each
worker's socketpair (SCM_RIGHTS); parent and worker then talk with `multiprocessing.connection`
framing. The zygote ignores SIGCHLD, so killed workers are reaped by the kernel at once.

Neither zygote nor workers import the parent's `__main__` (as "spawn" does) or the `jaxghpo` package
(which may import jax): the function's module file is loaded by path. So a function given to the pool
must live in a module that imports only what a worker needs, with no relative imports at module
level. This file is loaded the same way and therefore imports only the standard library.

Stopping: `close()` ends the workers and the zygote and waits until they are gone; pools still open
at interpreter exit are closed by an atexit hook; if the parent dies, the zygote exits on EOF of its
control socket, and on Linux the kernel SIGKILLs each worker when the zygote exits (PR_SET_PDEATHSIG,
set in the worker right after the fork): this needs no Python code to run in the worker, so a worker
stuck in a C loop that holds the GIL dies too. Elsewhere an idle worker exits on EOF of its socket and
a busy one through a watchdog thread that polls the parent's pid (it needs the GIL).
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import importlib
import importlib.util
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Sequence

# Runs in a fresh interpreter: drop the working directory from sys.path first (a file named math.py
# there would shadow the standard library), then load this file by path and become the zygote.
_BOOTSTRAP = (
    "import sys\n"
    "if sys.path and sys.path[0] in ('', '.'): del sys.path[0]\n"
    "import importlib.util\n"
    "spec = importlib.util.spec_from_file_location('_jaxghpo_pool_zygote', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = mod\n"
    "spec.loader.exec_module(mod)\n"
    "mod._zygote_main(int(sys.argv[2]))\n"
)
# On the command line of the zygote and of every worker (forked from it), for `ps` and for tests.
PROCESS_MARKER = "jaxghpo-reward-pool"

_SOFT_TIMER_REPEAT_S = 0.05   # the soft timer re-fires until the item unwinds (code may swallow one)
_ORPHAN_POLL_S = 1.0
_FORK_REPLY_TIMEOUT_S = 30.0
_GONE_TIMEOUT_S = 5.0


@dataclasses.dataclass
class PoolStats:
  """Counters of one `map` call (or, summed in `WorkerPool.total`, of a pool's lifetime).

  items: items submitted. timeouts: items that overran a deadline (soft or hard); they got the
  fallback value. kills: workers killed at the hard deadline (a subset of timeouts). errors: items
  whose function raised or whose worker died. restarts: workers forked to replace killed or dead
  ones. seconds: wall time of the call.
  """

  items: int = 0
  timeouts: int = 0
  kills: int = 0
  errors: int = 0
  restarts: int = 0
  seconds: float = 0.0

  def add(self, other: "PoolStats") -> None:
    for f in dataclasses.fields(self):
      setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclasses.dataclass
class MapResult:
  """values[i]: the function's result for item i, or the pool's fallback when status[i] is not "ok".
  status[i]: "ok" | "timeout" | "error"."""

  values: list
  status: list
  stats: PoolStats


def function_spec(fn: Callable) -> tuple[str, str, str]:
  """How the zygote finds `fn`: ("file", path, qualname) for functions in a module file (loaded by
  path, without importing its package), ("module", name, qualname) for built-in modules."""
  module_name = getattr(fn, "__module__", None)
  qualname = getattr(fn, "__qualname__", None)
  if module_name is None or qualname is None or "<locals>" in qualname or "<lambda>" in qualname:
    raise ValueError(
        f"WorkerPool needs a module-level function, got {fn!r}; define it at the top level of a module.")
  path = getattr(sys.modules.get(module_name), "__file__", None)
  if path:
    return ("file", os.path.abspath(path), qualname)
  return ("module", module_name, qualname)


def _resolve(spec: tuple[str, str, str]) -> Callable:
  kind, where, qualname = spec
  if kind == "file":
    name = "_jaxghpo_pool_fn_" + os.path.splitext(os.path.basename(where))[0]
    module = sys.modules.get(name)
    if module is None:
      file_spec = importlib.util.spec_from_file_location(name, where)
      module = importlib.util.module_from_spec(file_spec)
      sys.modules[name] = module
      file_spec.loader.exec_module(module)
  else:
    module = importlib.import_module(where)
  obj: Any = module
  for part in qualname.split("."):
    obj = getattr(obj, part)
  return obj


def default_num_workers() -> int:
  """Small by default (2 on a 2-core machine, up to 8 on a big host); override with the
  JAXGHPO_REWARD_WORKERS environment variable or the `num_workers` argument."""
  env = os.environ.get("JAXGHPO_REWARD_WORKERS")
  if env:
    try:
      n = int(env)
    except ValueError:
      raise ValueError(f"JAXGHPO_REWARD_WORKERS={env!r} is not an integer; set it to e.g. 2.") from None
    if n < 1:
      raise ValueError(f"JAXGHPO_REWARD_WORKERS={env!r} must be >= 1.")
    return n
  return max(2, min(8, (os.cpu_count() or 2) // 4))


def _send_obj(sock: socket.socket, obj: Any) -> None:
  data = pickle.dumps(obj)
  sock.sendall(struct.pack("!Q", len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
  buf = b""
  while len(buf) < n:
    chunk = sock.recv(n - len(buf))
    if not chunk:
      raise EOFError("peer closed the socket")
    buf += chunk
  return buf


def _recv_obj(sock: socket.socket) -> Any:
  (n,) = struct.unpack("!Q", _recv_exact(sock, 8))
  return pickle.loads(_recv_exact(sock, n))


def _alive(pid: int) -> bool:
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


# ----------------------------------------------------------------------------------------------
# Zygote and worker side (run in the subprocess and its forks).

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


def _run_item(fn: Callable, args: tuple, soft_s: float) -> tuple[str, Any]:
  """("ok", value) | ("timeout", None) | ("error", exception type name)."""
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
  while True:             # the timer must be off before we touch the socket again
    try:
      _disarm()
      return result
    except _SoftDeadline:
      pass


def _watch_parent(parent_pid: int) -> None:
  # A busy worker never reads its socket, so it would not notice the parent dying; poll instead.
  while True:
    time.sleep(_ORPHAN_POLL_S)
    if not _alive(parent_pid):
      os._exit(0)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _libc_prctl():
  """libc's prctl (Linux), loaded once in the zygote so a fresh worker only calls it; None elsewhere."""
  if not sys.platform.startswith("linux"):
    return None
  import ctypes
  try:
    return ctypes.CDLL(None, use_errno=True).prctl
  except (OSError, AttributeError):
    return None


def _die_with_parent(prctl, parent_pid: int) -> None:
  """Asks the kernel to SIGKILL this process when its parent (the zygote) exits; exits at once if the
  parent is already gone (the fork raced with its exit)."""
  if prctl is not None:
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
  if os.getppid() != parent_pid:
    os._exit(0)


def _worker_loop(conn: Connection, fn: Callable, init: dict) -> None:
  signal.signal(signal.SIGCHLD, signal.SIG_DFL)
  if init["memory_limit_mb"]:
    import resource
    limit = int(init["memory_limit_mb"]) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
  threading.Thread(target=_watch_parent, args=(init["parent_pid"],), daemon=True).start()
  signal.signal(signal.SIGALRM, _on_alarm)
  while True:
    try:
      msg = conn.recv()
    except (EOFError, OSError):
      return
    if msg is None:
      return
    ticket, args, soft_s = msg
    kind, value = _run_item(fn, args, soft_s)
    try:
      conn.send((kind, ticket, value))
    except (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError) as e:
      conn.send(("error", ticket, f"unpicklable result: {type(e).__name__}"))


def _fork_worker(ctl: socket.socket, fn: Callable, init: dict, prctl=None) -> None:
  parent_end, child_end = socket.socketpair()
  zygote_pid = os.getpid()
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    pid = os.fork()
  except OSError as e:
    parent_end.close()
    child_end.close()
    socket.send_fds(ctl, [struct.pack("!q", -e.errno)], [])
    return
  if pid == 0:   # the worker
    code = 0
    try:
      _die_with_parent(prctl, zygote_pid)
      ctl.close()
      parent_end.close()
      _worker_loop(Connection(child_end.detach()), fn, init)
    except BaseException:  # noqa: BLE001 - report, then leave without running the zygote's code
      import traceback
      traceback.print_exc()
      code = 1
    finally:
      os._exit(code)
  child_end.close()
  socket.send_fds(ctl, [struct.pack("!q", pid)], [parent_end.fileno()])
  parent_end.close()


def _zygote_main(ctl_fd: int) -> None:
  signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle
  ctl = socket.socket(fileno=ctl_fd)
  init = _recv_obj(ctl)
  sys.path[:] = init["sys_path"]
  fn = _resolve(init["fn"])
  if init["init"] is not None:
    _resolve(init["init"])()
  signal.signal(signal.SIGCHLD, signal.SIG_IGN)   # the kernel reaps exited workers: no zombies
  prctl = _libc_prctl()
  _send_obj(ctl, ("ready", os.getpid()))
  while True:
    try:
      request = ctl.recv(1)
    except OSError:
      request = b""
    if not request:          # the parent closed the pool or died
      os._exit(0)
    _fork_worker(ctl, fn, init, prctl)


# ----------------------------------------------------------------------------------------------
# Parent side.

class _Worker:
  def __init__(self, pid: int, conn: Connection):
    self.pid = pid
    self.conn = conn
    self.state = "idle"          # idle | busy
    self.item = -1
    self.ticket = -1
    self.deadline = 0.0


_LIVE_POOLS: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()


def _close_live_pools() -> None:
  for pool in list(_LIVE_POOLS):
    pool.close()


atexit.register(_close_live_pools)


class WorkerPool:
  """Runs `fn(*args)` for each args tuple in worker processes, each item under a hard deadline.

  Args:
    fn: module-level function (see the module docstring for where it may live).
    num_workers: worker processes (default `default_num_workers()`).
    deadline_s: hard per-item deadline in seconds, from dispatch to reply.
    init: optional module-level function run once in the zygote before any worker is forked
      (imports, caches), so that its cost is paid once per pool, not per worker.
    soft_fraction: the in-worker soft deadline as a fraction of `deadline_s` (0 disables it).
    fallback: the value of an item that timed out or failed.
    memory_limit_mb: address-space limit per worker (0: none), so that a runaway allocation raises
      MemoryError in the worker instead of exhausting the host.
    startup_timeout_s: how long the zygote may take to import and run `init`.

  Processes start lazily on the first `map` (or `start()`) and are reused across calls. Calls are
  serialised by a lock, so the pool may be shared between threads.
  """

  def __init__(self, fn: Callable, *, num_workers: int | None = None, deadline_s: float = 5.0,
               init: Callable | None = None, soft_fraction: float = 0.8, fallback: Any = None,
               memory_limit_mb: int = 4096, startup_timeout_s: float = 120.0):
    if num_workers is None:
      num_workers = default_num_workers()
    if num_workers < 1:
      raise ValueError(f"num_workers={num_workers} must be >= 1.")
    if not deadline_s > 0:
      raise ValueError(f"deadline_s={deadline_s} must be > 0 seconds.")
    if not 0.0 <= soft_fraction < 1.0:
      raise ValueError(f"soft_fraction={soft_fraction} must be in [0, 1); 0 turns the soft deadline off.")
    self.num_workers = int(num_workers)
    self.deadline_s = float(deadline_s)
    self.soft_fraction = float(soft_fraction)
    self.fallback = fallback
    self.memory_limit_mb = int(memory_limit_mb)
    self.startup_timeout_s = float(startup_timeout_s)
    self._fn_spec = function_spec(fn)
    self._init_spec = function_spec(init) if init is not None else None
    self._zygote: subprocess.Popen | None = None
    self._ctl: socket.socket | None = None
    self._workers: list[_Worker] = []
    self._lock = threading.RLock()
    self._owner_pid = os.getpid()
    self._closed = False
    self._next_ticket = 0
    self.total = PoolStats()
    _LIVE_POOLS.add(self)

  # -- lifecycle --------------------------------------------------------------------------

  def __enter__(self) -> "WorkerPool":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def __del__(self):
    try:
      self.close()
    except Exception:  # noqa: BLE001 - interpreter shutdown may have torn modules down
      pass

  @property
  def closed(self) -> bool:
    return self._closed

  def start(self) -> None:
    """Starts the zygote (blocking until it is warm) and forks the missing workers."""
    with self._lock:
      if self._closed:
        raise RuntimeError("WorkerPool is closed; create a new one.")
      while len(self._workers) < self.num_workers:
        self._workers.append(self._fork())

  def pids(self) -> list[int]:
    """Process ids of the current workers (a snapshot; does not wait for a running call)."""
    return [w.pid for w in list(self._workers)]

  @property
  def zygote_pid(self) -> int | None:
    return None if self._zygote is None else self._zygote.pid

  def close(self) -> None:
    """Stops the workers and the zygote and waits until they are gone. Idempotent; a no-op in a
    forked copy of the parent (it must not stop the original's processes).

    If another thread is inside `map` (say, at interpreter exit), close() does not wait for it
    beyond a second: it kills the workers, and that `map` raises RuntimeError.
    """
    if os.getpid() != self._owner_pid:
      return
    locked = self._lock.acquire(timeout=1.0)
    try:
      self._closed = True
      workers, self._workers = self._workers, []
      for w in workers:
        if locked and w.state == "idle":
          try:
            w.conn.send(None)        # a polite stop; it exits at once
          except OSError:
            pass
        else:
          _kill(w.pid)
        if locked:
          w.conn.close()
      pids = [w.pid for w in workers]
      if not _wait_gone(pids, 2.0):        # (reaped by the zygote, so stop that last)
        for pid in pids:
          _kill(pid)
        _wait_gone(pids, _GONE_TIMEOUT_S)
      self._stop_zygote()
    finally:
      if locked:
        self._lock.release()
    _LIVE_POOLS.discard(self)

  def _stop_zygote(self) -> None:
    if self._ctl is not None:
      self._ctl.close()
      self._ctl = None
    if self._zygote is not None:
      try:
        self._zygote.wait(timeout=2.0)
      except subprocess.TimeoutExpired:
        self._zygote.kill()
        self._zygote.wait()
      self._zygote = None

  def _start_zygote(self) -> None:
    parent_sock, child_sock = socket.socketpair()
    env = dict(os.environ)
    # Workers are single-threaded; keep numeric libraries from starting thread pools.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
      env[var] = "1"
    try:
      self._zygote = subprocess.Popen(
          [sys.executable, "-c", _BOOTSTRAP, os.path.abspath(__file__), str(child_sock.fileno()),
           PROCESS_MARKER],
          pass_fds=[child_sock.fileno()], stdin=subprocess.DEVNULL,
          stdout=2,   # stray prints of workers go to stderr, never into the caller's stdout
          env=env, close_fds=True)
    finally:
      child_sock.close()
    self._ctl = parent_sock
    sys_path = [p for p in sys.path if p not in ("", ".")]
    try:
      parent_sock.settimeout(self.startup_timeout_s)
      _send_obj(parent_sock, {"sys_path": sys_path, "fn": self._fn_spec, "init": self._init_spec,
                              "memory_limit_mb": self.memory_limit_mb, "parent_pid": os.getpid()})
      _recv_obj(parent_sock)                       # ("ready", pid)
      parent_sock.settimeout(_FORK_REPLY_TIMEOUT_S)
    except (OSError, EOFError) as e:                 # socket.timeout is an OSError
      code = self._zygote.poll()
      self._stop_zygote()
      raise RuntimeError(
          f"WorkerPool could not start worker processes for {self._fn_spec[2]} "
          f"({self._fn_spec[1]}): {type(e).__name__} {e} (exit code {code}). Its traceback, if "
          f"any, is on stderr above; check that the module imports in a fresh `{sys.executable}`."
      ) from e

  def _fork(self) -> _Worker:
    """A warm worker forked from the zygote (restarting the zygote once if it has died)."""
    for attempt in (0, 1):
      if self._closed:
        raise RuntimeError("WorkerPool was closed while a call was running.")
      if self._zygote is None:
        self._start_zygote()
      try:
        self._ctl.sendall(b"F")
        data, fds, _, _ = socket.recv_fds(self._ctl, 8, 1)
        if not data:
          raise EOFError("the zygote closed its socket")
        data += _recv_exact(self._ctl, 8 - len(data)) if len(data) < 8 else b""
      except (OSError, EOFError):
        self._stop_zygote()
        if attempt:
          raise
        continue
      (pid,) = struct.unpack("!q", data)
      if not fds:
        raise RuntimeError(f"WorkerPool: fork of a worker failed: {os.strerror(-pid)}.")
      os.set_inheritable(fds[0], False)
      return _Worker(pid, Connection(fds[0]))
    raise AssertionError("unreachable")

  def _replace(self, w: _Worker, stats: PoolStats) -> None:
    _kill(w.pid)
    w.conn.close()
    self._workers[self._workers.index(w)] = self._fork()
    stats.restarts += 1

  # -- work -------------------------------------------------------------------------------

  def map(self, args_list: Sequence[tuple], *, deadline_s: float | None = None) -> MapResult:
    """Runs fn(*args) for every args tuple; returns values, per-item status and counters.

    Never raises for a bad item: an item that raises, overruns `deadline_s` (default: the pool's)
    or kills its worker gets `fallback`. Raises RuntimeError only if workers cannot start at all.
    """
    deadline_s = self.deadline_s if deadline_s is None else float(deadline_s)
    if not deadline_s > 0:
      raise ValueError(f"deadline_s={deadline_s} must be > 0 seconds.")
    soft_s = self.soft_fraction * deadline_s
    n = len(args_list)
    values = [self.fallback] * n
    status = ["pending"] * n
    stats = PoolStats(items=n)
    t0 = time.monotonic()
    with self._lock:
      self.start()
      queue = collections.deque(range(n))
      remaining = n
      try:
        while remaining:
          for w in list(self._workers):
            if w.state == "idle" and queue:
              i = queue.popleft()
              self._next_ticket += 1
              try:
                w.conn.send((self._next_ticket, tuple(args_list[i]), soft_s))
              except OSError:      # died while idle (e.g. the OOM killer): retry the item
                queue.appendleft(i)
                self._replace(w, stats)
                continue
              w.state, w.item, w.ticket = "busy", i, self._next_ticket
              w.deadline = time.monotonic() + deadline_s
          busy = [w for w in self._workers if w.state == "busy"]
          timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
          ready = set(wait([w.conn for w in busy], timeout))
          for w in busy:
            if w.conn not in ready:
              continue
            try:
              kind, ticket, value = w.conn.recv()
            except (EOFError, OSError):  # the worker died on this item (segfault, OOM kill)
              status[w.item] = "error"
              stats.errors += 1
              remaining -= 1
              self._replace(w, stats)
              continue
            if ticket != w.ticket:       # cannot happen: each call drains its workers
              continue
            if kind == "ok":
              values[w.item] = value
            elif kind == "timeout":
              stats.timeouts += 1
            else:
              stats.errors += 1
            status[w.item] = kind
            remaining -= 1
            w.state = "idle"
          now = time.monotonic()
          for w in list(self._workers):
            if w.state == "busy" and now >= w.deadline:
              status[w.item] = "timeout"
              stats.timeouts += 1
              stats.kills += 1
              remaining -= 1
              self._replace(w, stats)
      finally:
        # Only after an abnormal exit (e.g. KeyboardInterrupt) is a worker still busy; its
        # reply would land in the next call, so replace it.
        for w in list(self._workers):
          if w.state == "busy":
            self._replace(w, stats)
        stats.seconds = time.monotonic() - t0
        self.total.add(stats)
    return MapResult(values=values, status=status, stats=stats)


def _kill(pid: int) -> None:
  try:
    os.kill(pid, signal.SIGKILL)
  except ProcessLookupError:
    pass


def _wait_gone(pids: Sequence[int], timeout_s: float) -> bool:
  """Waits until none of `pids` is alive; False if some still are after timeout_s."""
  end = time.monotonic() + timeout_s
  while True:
    left = [p for p in pids if _alive(p)]
    if not left:
      return True
    if time.monotonic() >= end:
      return False
    time.sleep(0.005)
