"""A pool of worker processes that runs one function per item under a hard deadline.

Why not `multiprocessing.Pool`: a pool worker stuck in C code (a sympy power tower, a huge factorial)
cannot be stopped, and a timed-out `AsyncResult` leaves the worker busy for minutes. Here every item
runs in a worker we own; when an item overruns its deadline the worker is SIGKILLed, the item gets the
fallback value and is counted, and a fresh worker starts in the background while the others go on.

Two deadlines per item:
  soft (`soft_fraction * deadline_s`): an interval timer in the worker raises an exception between
    Python bytecodes; the item scores as a timeout and the worker survives (no restart cost).
  hard (`deadline_s`): measured by the parent from dispatch; the worker is killed and replaced.

Workers are plain `python -c` subprocesses talking over a socketpair with
`multiprocessing.connection.Connection` framing. They do not re-import the parent's `__main__` (as the
"spawn" start method does) or the `jaxghpo` package (which may import jax): the function runs from its
module file, loaded by path. So a function given to the pool must live in a module that imports only
what a worker needs and uses no relative imports at module level. This file is loaded the same way and
therefore imports only the standard library.

Stopping: `close()` ends every worker and waits for it; pools still open at interpreter exit are
closed by an atexit hook; a worker whose parent dies exits on EOF of its socket (or, if it is busy, via
a watchdog thread that polls its parent pid).
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import importlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Sequence

# Runs in a fresh interpreter: drop the working directory from sys.path first (a file named math.py
# there would shadow the standard library), then load this file by path and enter the worker loop.
_BOOTSTRAP = (
    "import sys\n"
    "if sys.path and sys.path[0] in ('', '.'): del sys.path[0]\n"
    "import importlib.util\n"
    "spec = importlib.util.spec_from_file_location('_jaxghpo_pool_worker', sys.argv[1])\n"
    "mod = importlib.util.module_from_spec(spec)\n"
    "sys.modules[spec.name] = mod\n"
    "spec.loader.exec_module(mod)\n"
    "mod._worker_main(int(sys.argv[2]))\n"
)
# Marks worker command lines, so that tests (and people using `ps`) can find them.
WORKER_MARKER = "_jaxghpo_pool_worker"

_SOFT_TIMER_REPEAT_S = 0.05   # the soft timer re-fires until the item unwinds (code may swallow one)
_ORPHAN_POLL_S = 1.0


@dataclasses.dataclass
class PoolStats:
    """Counters of one `map` call (or, summed, of a pool's lifetime).

    items: items submitted. timeouts: items that overran a deadline (soft or hard); they got the
    fallback value. kills: workers killed at the hard deadline (a subset of timeouts, each one a
    restart). errors: items whose function raised or whose worker died. restarts: workers started to
    replace killed or dead ones. seconds: wall time of the call.
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
    """How a worker finds `fn`: ("file", path, qualname) for functions in a module file (loaded by path,
    without importing its package), ("module", name, qualname) for built-in modules (e.g. time.sleep)."""
    module_name = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if module_name is None or qualname is None or "<locals>" in qualname or "<lambda>" in qualname:
        raise ValueError(
            f"WorkerPool needs a module-level function, got {fn!r}; define it at the top level of a module.")
    module = sys.modules.get(module_name)
    path = getattr(module, "__file__", None)
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


# ----------------------------------------------------------------------------------------------
# Worker side (runs in the subprocess).

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
    result = ("timeout", None)
    try:
        try:
            result = ("ok", _call_with_soft_deadline(fn, args, soft_s))
        except _SoftDeadline:
            result = ("timeout", None)
        except Exception as e:  # noqa: BLE001 - any failure of one item scores that item only
            # Only the type: str() of a hostile sympy object can itself hang.
            result = ("error", type(e).__name__)
    except _SoftDeadline:   # the repeating timer fired again while the item was unwinding
        pass
    while True:             # make sure the timer is off before we touch the socket again
        try:
            _disarm()
            return result
        except _SoftDeadline:
            pass


def _watch_parent(parent_pid: int) -> None:
    # A busy worker never reads its socket, so it would not notice its parent dying; poll instead.
    while True:
        time.sleep(_ORPHAN_POLL_S)
        if os.getppid() != parent_pid:
            os._exit(0)


def _worker_main(fd: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle; it kills us
    conn = Connection(fd)
    init = conn.recv()
    sys.path[:] = init["sys_path"]
    if init["memory_limit_mb"]:
        import resource
        limit = int(init["memory_limit_mb"]) * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    threading.Thread(target=_watch_parent, args=(init["parent_pid"],), daemon=True).start()
    fn = _resolve(init["fn"])
    if init["init"] is not None:
        _resolve(init["init"])()
    signal.signal(signal.SIGALRM, _on_alarm)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        ticket, args, soft_s = msg
        kind, value = _run_item(fn, args, soft_s)
        reply = (kind, ticket, value)
        try:
            conn.send(reply)
        except (TypeError, AttributeError, ValueError, RecursionError) as e:   # unpicklable result
            conn.send(("error", ticket, f"unpicklable result: {type(e).__name__}"))


# ----------------------------------------------------------------------------------------------
# Parent side.

class _Worker:
    def __init__(self, proc: subprocess.Popen, conn: Connection, start_deadline: float):
        self.proc = proc
        self.conn = conn
        self.state = "starting"          # starting | idle | busy
        self.start_deadline = start_deadline
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
      init: optional module-level function run once per worker before it reports ready (warm-up:
        imports, caches); its cost is paid at start-up, not by the first item.
      soft_fraction: the in-worker soft deadline as a fraction of `deadline_s` (0 disables it).
      fallback: the value of an item that timed out or failed.
      memory_limit_mb: address-space limit per worker (0: none), so that a runaway allocation raises
        MemoryError in the worker instead of exhausting the host.
      startup_timeout_s: how long a worker may take to become ready before it counts as failed.

    Workers start lazily on the first `map` (or `start()`) and are reused across calls. Calls are
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
        self._workers: list[_Worker] = []
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()
        self._closed = False
        self._next_ticket = 0
        self._startup_failures = 0
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

    def start(self) -> None:
        """Starts the missing workers without waiting for them to become ready."""
        with self._lock:
            self._check_open()
            while len(self._workers) < self.num_workers:
                self._workers.append(self._spawn())

    def pids(self) -> list[int]:
        """Process ids of the current workers (starting or ready)."""
        with self._lock:
            return [w.proc.pid for w in self._workers]

    def close(self) -> None:
        """Stops every worker and waits for it to exit. Idempotent; a no-op in a forked child."""
        if os.getpid() != self._owner_pid:   # a forked copy must not kill its parent's workers
            self._workers = []
            return
        with self._lock:
            self._closed = True
            workers, self._workers = self._workers, []
            for w in workers:
                if w.state == "idle":
                    try:
                        w.conn.send(None)
                    except OSError:
                        pass
                else:
                    w.proc.kill()
            end = time.monotonic() + 2.0
            for w in workers:
                try:
                    w.proc.wait(timeout=max(0.0, end - time.monotonic()))
                except subprocess.TimeoutExpired:
                    w.proc.kill()
                    w.proc.wait()
                w.conn.close()
        _LIVE_POOLS.discard(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("WorkerPool is closed; create a new one.")

    def _spawn(self) -> _Worker:
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        # Workers are single-threaded; keep numeric libraries from starting thread pools.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = "1"
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _BOOTSTRAP, os.path.abspath(__file__), str(child_sock.fileno()),
                 WORKER_MARKER],
                pass_fds=[child_sock.fileno()], stdin=subprocess.DEVNULL,
                stdout=2,   # stray prints of a worker go to stderr, never into the caller's stdout
                env=env, close_fds=True)
        finally:
            child_sock.close()
        conn = Connection(parent_sock.detach())
        sys_path = [p for p in sys.path if p not in ("", ".")]
        conn.send({"sys_path": sys_path, "fn": self._fn_spec, "init": self._init_spec,
                   "memory_limit_mb": self.memory_limit_mb, "parent_pid": os.getpid()})
        return _Worker(proc, conn, time.monotonic() + self.startup_timeout_s)

    def _retire(self, w: _Worker) -> None:
        w.proc.kill()
        w.proc.wait()
        w.conn.close()

    def _replace(self, w: _Worker, stats: PoolStats) -> None:
        self._retire(w)
        self._workers[self._workers.index(w)] = self._spawn()
        stats.restarts += 1

    def _startup_failed(self, w: _Worker, stats: PoolStats, why: str) -> None:
        code = w.proc.poll()
        self._startup_failures += 1
        if self._startup_failures >= 3:
            self._retire(w)
            self._workers.remove(w)
            raise RuntimeError(
                f"WorkerPool workers for {self._fn_spec[2]} ({self._fn_spec[1]}) failed to start 3 times "
                f"in a row ({why}; exit code {code}); the worker traceback is on stderr above. Check that "
                f"the function's module imports in a fresh `{sys.executable}`.")
        self._replace(w, stats)

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
            self._check_open()
            self.start()
            queue = collections.deque(range(n))
            remaining = n
            try:
                while remaining:
                    now = time.monotonic()
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
                    waiting = [w for w in self._workers if w.state != "idle"]
                    wake = [w.deadline if w.state == "busy" else w.start_deadline for w in waiting]
                    timeout = max(0.0, min(wake) - now) if wake else 0.0
                    ready = set(wait([w.conn for w in waiting], timeout)) if waiting else set()
                    for w in waiting:
                        if w.conn not in ready:
                            continue
                        try:
                            msg = w.conn.recv()
                        except (EOFError, OSError):
                            if w.state == "busy":      # the worker died on this item (segfault, OOM kill)
                                status[w.item] = "error"
                                stats.errors += 1
                                remaining -= 1
                                self._replace(w, stats)
                            else:
                                self._startup_failed(w, stats, "exited before it was ready")
                            continue
                        if w.state == "starting":
                            w.state = "idle"
                            self._startup_failures = 0
                            continue
                        kind, ticket, value = msg
                        if ticket != w.ticket:     # a reply to an abandoned call; cannot happen normally
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
                        elif w.state == "starting" and now >= w.start_deadline:
                            self._startup_failed(w, stats, f"not ready after {self.startup_timeout_s:.0f} s")
            finally:
                # Only on an abnormal exit (e.g. KeyboardInterrupt) is a worker still busy: its reply
                # would belong to a finished call, so replace it.
                for w in list(self._workers):
                    if w.state == "busy":
                        self._replace(w, stats)
                stats.seconds = time.monotonic() - t0
                self.total.add(stats)
        return MapResult(values=values, status=status, stats=stats)
