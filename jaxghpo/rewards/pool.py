"""A pool of worker processes that runs one function per item under a hard deadline (pebble underneath).

Why not `multiprocessing.Pool`: a worker stuck in C code (a sympy power tower, a huge factorial) cannot
be interrupted, and a timed-out `AsyncResult` leaves the worker busy for minutes. `pebble.ProcessPool`
does what we need: `schedule(fn, timeout=...)` counts the deadline from the moment a worker takes the
item, stops that worker when it overruns and starts a replacement while the others go on.

Two deadlines per item:
  soft (`soft_fraction * deadline_s`): an interval timer in the worker raises an exception between
    Python bytecodes; the item is a timeout and the worker survives. Most hostile inputs end here.
  hard (`deadline_s`): pebble's timeout; the worker is killed and replaced.

Processes. Workers start from multiprocessing's "forkserver" (never a fork of the caller, which may hold
JAX threads). The forkserver preloads `PRELOAD` (pool_worker.py, the code that runs in the workers, and
math-verify with one comparison run: ~1.5 s, paid once per process), so a worker, and a replacement for
a killed one, is forked warm. A function given to the pool is pickled by reference: it must be a
module-level function whose module imports without jax (workers import it by name, and, as
multiprocessing does, re-import the caller's `__main__` module under the name `__mp_main__`: a script
keeps its work under `if __name__ == "__main__":`, or the pool fails to start, saying so).

What stays ours, and why (the minimum pebble lacks):
  - the soft deadline (pebble has only the hard one, which costs a worker restart per timeout);
  - SIGTERM back to its default action in each worker: pebble stops a worker with SIGTERM and only
    3 s later with SIGKILL, and its SIGTERM handler is Python code that cannot run while the worker is
    stuck in a C loop holding the GIL; with the default action the kernel ends it at once;
  - no orphans: when the trainer is SIGKILLed, pebble's idle workers exit on EOF of their pipe, but a
    busy one never reads it. Each worker asks the kernel (Linux PR_SET_PDEATHSIG) to SIGKILL it when its
    parent, the forkserver, exits, and the forkserver exits, at once (preload.py), on EOF of a pipe from
    its owner when the owner dies (each worker closes its inherited copy of that pipe, which would keep
    the forkserver up); no Python code has to run in the worker. Elsewhere a watchdog thread polls the
    owner's pid;
  - per-item status and counters (`MapResult`), an address-space limit per worker, and `close()` that
    waits until the workers are gone. Pools still open at interpreter exit are closed by an atexit hook.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import dataclasses
import math
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import sys
import threading
import time
import weakref
from typing import Any, Callable, Sequence

import pebble

from jaxghpo.rewards import pool_worker

# Imported once by the forkserver, before it forks any worker (a module that fails to import is skipped):
# the workers' side of the pool, and math-verify, warmed up (preload.py).
PRELOAD = ("jaxghpo.rewards.pool_worker", "jaxghpo.rewards.preload")

_GONE_TIMEOUT_S = 5.0
_REPLACE_S = 5.0              # per item in a call's overall bound: a worker's replacement and the IPC


@dataclasses.dataclass
class PoolStats:
  """Counters of one `map` call (or, summed in `WorkerPool.total`, of a pool's lifetime).

  items: items submitted. timeouts: items that overran a deadline (soft or hard); they got the
  fallback value. kills: workers killed at the hard deadline (a subset of timeouts). errors: items
  whose function raised or whose worker died. restarts: workers started to replace killed or dead
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


def check_function(fn: Callable, what: str = "function") -> None:
  """Fails unless `fn` can be pickled by reference (a module-level function or built-in)."""
  qualname = getattr(fn, "__qualname__", None)
  if getattr(fn, "__module__", None) is None or qualname is None or "<locals>" in qualname or "<lambda>" in qualname:
    raise ValueError(f"WorkerPool needs a module-level function as its {what}, got {fn!r}; define it at the "
                     "top level of a module.")


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


def forkserver_pid() -> int | None:
  """Pid of this process's forkserver (the parent of every worker), or None before it starts."""
  return getattr(multiprocessing.forkserver._forkserver, "_forkserver_pid", None)


_LIVE_POOLS: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()


def _close_live_pools() -> None:
  for pool in list(_LIVE_POOLS):
    pool.close()


atexit.register(_close_live_pools)


def _context():
  """multiprocessing's forkserver context, with PRELOAD set if the forkserver has not started yet (one
  forkserver serves a process; if other code started it first, workers warm up in pool_worker.worker_init)."""
  ctx = multiprocessing.get_context("forkserver")
  if forkserver_pid() is None:
    ctx.set_forkserver_preload(list(PRELOAD))
  return ctx


class WorkerPool:
  """Runs `fn(*args)` for each args tuple in worker processes, each item under a hard deadline.

  Args:
    fn: module-level function (see the module docstring for where it may live).
    num_workers: worker processes (default `default_num_workers()`).
    deadline_s: hard per-item deadline in seconds, from the moment a worker takes the item.
    init: optional module-level function run once in each worker before its first item (imports,
      caches); what PRELOAD imports is already loaded, so this is cheap for math-verify.
    soft_fraction: the in-worker soft deadline as a fraction of `deadline_s` (0 disables it).
    fallback: the value of an item that timed out or failed.
    memory_limit_mb: address-space limit per worker (0: none), so that a runaway allocation raises
      MemoryError in the worker instead of exhausting the host.
    startup_timeout_s: how long starting the workers (and the forkserver's imports) may take.

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
    check_function(fn)
    if init is not None:
      check_function(init, "init")
    self.fn = fn
    self.init = init
    self.num_workers = int(num_workers)
    self.deadline_s = float(deadline_s)
    self.soft_fraction = float(soft_fraction)
    self.fallback = fallback
    self.memory_limit_mb = int(memory_limit_mb)
    self.startup_timeout_s = float(startup_timeout_s)
    self._pool: pebble.ProcessPool | None = None
    self._lock = threading.RLock()
    self._owner_pid = os.getpid()
    self._closed = False
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
    """Starts the workers and waits until one has run an item (the forkserver's imports are done)."""
    with self._lock:
      if self._closed:
        raise RuntimeError("WorkerPool is closed; create a new one.")
      if self._pool is not None:
        return
      self._pool = pebble.ProcessPool(
          max_workers=self.num_workers, initializer=pool_worker.worker_init,
          initargs=(self.init, self.memory_limit_mb, os.getpid()), context=_context())
      try:
        self._pool.schedule(pool_worker.ping, timeout=self.startup_timeout_s).result(timeout=self.startup_timeout_s + 5.0)
      except BaseException as e:
        self._stop_pebble()
        raise RuntimeError(
            f"WorkerPool could not start worker processes for {self.fn!r}: {type(e).__name__} {e}. A "
            f"traceback, if any, is on stderr above; check that {getattr(self.fn, '__module__', '?')} and "
            f"{getattr(self.init, '__module__', None)} import in a fresh `{sys.executable}`, and that the "
            "main script keeps its work under `if __name__ == '__main__':` (workers re-import it).") from e

  def pids(self) -> list[int]:
    """Process ids of the current workers (a snapshot; reads pebble's worker table)."""
    pool = self._pool
    if pool is None:
      return []
    return [pid for pid in list(pool._pool_manager.worker_manager.workers) if pid is not None]

  def close(self) -> None:
    """Stops the workers and waits until they are gone. Idempotent; a no-op in a forked copy of the
    parent (it must not stop the original's processes).

    If another thread is inside `map` (say, at interpreter exit), close() does not wait for it
    beyond a second: it kills the workers, and that `map` raises RuntimeError.
    """
    if os.getpid() != self._owner_pid:
      return
    locked = self._lock.acquire(timeout=1.0)
    try:
      self._closed = True
      self._stop_pebble()
    finally:
      if locked:
        self._lock.release()
    _LIVE_POOLS.discard(self)

  def _stop_pebble(self) -> None:
    pool, self._pool = self._pool, None
    if pool is None:
      return
    pids = [pid for pid in list(pool._pool_manager.worker_manager.workers) if pid is not None]
    pool.stop()
    pool.join()
    if not _wait_gone(pids, _GONE_TIMEOUT_S):
      for pid in pids:
        _kill(pid)
      _wait_gone(pids, _GONE_TIMEOUT_S)

  # -- work -------------------------------------------------------------------------------

  def map(self, args_list: Sequence[tuple], *, deadline_s: float | None = None) -> MapResult:
    """Runs fn(*args) for every args tuple; returns values, per-item status and counters.

    Never raises for a bad item: an item that raises, overruns `deadline_s` (default: the pool's)
    or kills its worker gets `fallback`. Raises RuntimeError only if workers cannot start at all
    or the pool is closed during the call.
    """
    deadline_s = self.deadline_s if deadline_s is None else float(deadline_s)
    if not deadline_s > 0:
      raise ValueError(f"deadline_s={deadline_s} must be > 0 seconds.")
    soft_s = self.soft_fraction * deadline_s
    n = len(args_list)
    values = [self.fallback] * n
    status = ["timeout"] * n
    stats = PoolStats(items=n)
    t0 = time.monotonic()
    with self._lock:
      self.start()
      try:
        futures = self._schedule(args_list, soft_s, deadline_s, stats)
        # Each item ends by its deadline once taken; this bound only guards against a pool that stops
        # taking items (every worker lost at once).
        bound = t0 + self.startup_timeout_s + math.ceil(n / self.num_workers) * (deadline_s + _REPLACE_S)
        pending = set(futures)
        while pending and time.monotonic() < bound and not self._closed:
          _, pending = concurrent.futures.wait(pending, timeout=0.1)
        if self._closed:    # close() from another thread stopped the workers under this call
          raise RuntimeError("WorkerPool was closed while a call was running.")
        if pending:         # the pool is broken: start afresh on the next call
          for f in pending:
            f.cancel()
          self._stop_pebble()
          stats.restarts += self.num_workers
        for i, f in enumerate(futures):
          if f in pending:
            stats.timeouts += 1
            continue
          status[i], value = self._outcome(f, stats)
          if status[i] == "ok":
            values[i] = value
        if stats.restarts and self._pool is not None:
          self._wait_for_workers()
      finally:
        stats.seconds = time.monotonic() - t0
        self.total.add(stats)
    return MapResult(values=values, status=status, stats=stats)

  def _wait_for_workers(self) -> None:
    """Waits (up to startup_timeout_s) until pebble has replaced the workers it stopped, so that a call
    returns with the pool at full strength, as it began."""
    end = time.monotonic() + self.startup_timeout_s
    while len(self.pids()) < self.num_workers and time.monotonic() < end:
      time.sleep(0.01)

  def _schedule(self, args_list, soft_s: float, deadline_s: float, stats: PoolStats) -> list:
    """Futures of every item; restarts a pool that pebble reports broken (a worker died while idle)."""
    for attempt in (0, 1):
      try:
        return [self._pool.schedule(pool_worker.run_item, args=(self.fn, tuple(args), soft_s), timeout=deadline_s)
                for args in args_list]
      except RuntimeError:
        if attempt or self._closed:
          raise
        self._stop_pebble()
        stats.restarts += self.num_workers
        self.start()
    raise AssertionError("unreachable")

  @staticmethod
  def _outcome(future, stats: PoolStats) -> tuple[str, Any]:
    """(status, value) of one finished future, counting it in stats."""
    try:
      kind, value = future.result(timeout=0)
    except concurrent.futures.TimeoutError:           # pebble's hard deadline: the worker was killed
      stats.timeouts += 1
      stats.kills += 1
      stats.restarts += 1
      return "timeout", None
    except pebble.ProcessExpired:                      # the worker died on this item (segfault, OOM kill)
      stats.errors += 1
      stats.restarts += 1
      return "error", None
    except Exception:  # noqa: BLE001 - unpicklable arguments or result, a broken pool: this item only
      stats.errors += 1
      return "error", None
    if kind == "timeout":
      stats.timeouts += 1
    elif kind == "error":
      stats.errors += 1
    return kind, value


def _kill(pid: int) -> None:
  try:
    os.kill(pid, signal.SIGKILL)
  except ProcessLookupError:
    pass


def _wait_gone(pids: Sequence[int], timeout_s: float) -> bool:
  """Waits until none of `pids` is alive; False if some still are after timeout_s."""
  end = time.monotonic() + timeout_s
  while True:
    left = [p for p in pids if pool_worker.alive(p)]
    if not left:
      return True
    if time.monotonic() >= end:
      return False
    time.sleep(0.005)
