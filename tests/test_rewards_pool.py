"""WorkerPool: order, errors, soft and hard deadlines, crashes, threads, and no processes left behind.

The functions run in workers are built-ins (operator.add, int, time.sleep, pow, os._exit). The
forkserver that starts every worker is shared by all pools of a process and lives as long as it does,
so "nothing left behind" means no worker; the forkserver is checked only when the owner process ends.
"""

import operator
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest

from jaxghpo.rewards import pool as pool_lib
from tests.procs import reward_pool_processes
from jaxghpo.rewards.pool import WorkerPool

# sum(range(10**12)) spends hours in one C loop that never checks for signals, so the soft deadline
# (a signal handler) never runs: only the hard deadline can end it. (pow of huge ints, by contrast,
# checks for signals and is ended by the soft deadline.)
UNINTERRUPTIBLE = (range(10**12),)


def _gone(pids, timeout_s=5.0) -> bool:
  procs = []
  for pid in pids:
    try:
      procs.append(psutil.Process(pid))
    except psutil.NoSuchProcess:
      pass
  _, alive = psutil.wait_procs(procs, timeout=timeout_s)
  return all(p.status() == psutil.STATUS_ZOMBIE for p in alive)


@pytest.fixture(scope="module")
def add_pool():
  with WorkerPool(operator.add, num_workers=2, deadline_s=2.0) as p:
    yield p


@pytest.fixture
def no_new_processes():
  """Asserts that a test leaves behind no pool process that did not exist before it."""
  before = reward_pool_processes()
  yield
  assert reward_pool_processes() <= before


def test_results_in_order_and_workers_reused(add_pool):
  items = [(i, 10 * i) for i in range(20)]
  res = add_pool.map(items)
  assert res.values == [11 * i for i in range(20)]
  assert res.status == ["ok"] * 20
  assert (res.stats.items, res.stats.timeouts, res.stats.errors, res.stats.kills) == (20, 0, 0, 0)
  pids = add_pool.pids()
  assert len(pids) == 2
  add_pool.map([(1, 1)])
  assert add_pool.pids() == pids          # no restart between calls


def test_empty_batch(add_pool):
  res = add_pool.map([])
  assert res.values == [] and res.stats.items == 0


def test_deadline_counts_from_dispatch_not_from_the_call():
  # 6 items of 0.3 s on 2 workers take ~0.9 s in all, yet each is far inside its 1 s deadline.
  with WorkerPool(time.sleep, num_workers=2, deadline_s=1.0) as p:
    res = p.map([(0.3,)] * 6)
    assert res.status == ["ok"] * 6
    assert res.stats.timeouts == 0


def test_raising_item_scores_fallback_and_is_counted():
  with WorkerPool(int, num_workers=1, deadline_s=2.0, fallback=-1) as p:
    res = p.map([("7",), ("seven",), ("8",)])
    assert res.values == [7, -1, 8]
    assert res.status == ["ok", "error", "ok"]
    assert res.stats.errors == 1 and res.stats.restarts == 0


def test_soft_deadline_keeps_the_worker():
  with WorkerPool(time.sleep, num_workers=1, deadline_s=0.5, soft_fraction=0.6, fallback="late") as p:
    p.start()
    pid = p.pids()[0]
    res = p.map([(30.0,), (0.0,)])
    assert res.values == ["late", None]
    assert res.status == ["timeout", "ok"]
    # Ended by the soft timer: timed out, yet no worker was killed (the hard deadline kills) or replaced.
    assert (res.stats.timeouts, res.stats.kills, res.stats.restarts) == (1, 0, 0)
    assert p.pids() == [pid]                    # the same worker went on


def test_hard_deadline_kills_replaces_and_leaves_nothing_behind(no_new_processes):
  with WorkerPool(sum, num_workers=2, deadline_s=0.75, fallback=-1) as p:
    p.start()
    old = p.pids()
    res = p.map([UNINTERRUPTIBLE, (range(5),), ([2, 3],)])
    assert res.values == [-1, 10, 5]
    assert res.status == ["timeout", "ok", "ok"]
    assert (res.stats.timeouts, res.stats.kills, res.stats.restarts) == (1, 1, 1)  # ended by the hard deadline
    killed = set(old) - set(p.pids())
    assert len(killed) == 1 and len(p.pids()) == 2
    assert _gone(killed)
    assert p.map([([7],)] * 2).values == [7, 7]  # the replacement works
    pids = p.pids()
    assert len(pids) == 2 and set(pids) <= reward_pool_processes()
  assert not set(pids) & reward_pool_processes()


def test_worker_crash_is_an_error_and_the_pool_recovers(no_new_processes):
  with WorkerPool(os._exit, num_workers=1, deadline_s=2.0) as p:
    res = p.map([(3,)])
    assert res.status == ["error"]
    assert (res.stats.errors, res.stats.restarts) == (1, 1)
    assert len(p.pids()) == 1


def test_close_leaves_no_process(no_new_processes):
  p = WorkerPool(operator.add, num_workers=3, deadline_s=1.0)
  p.map([(1, 2)] * 5)
  pids = p.pids()
  assert len(pids) == 3 and set(pids) <= reward_pool_processes()
  p.close()
  assert _gone(pids, timeout_s=0.0)                # close() waited for them
  assert not set(pids) & reward_pool_processes()
  with pytest.raises(RuntimeError, match="closed"):
    p.map([(1, 2)])


def test_pool_shared_between_threads():
  with WorkerPool(pow, num_workers=2, deadline_s=5.0) as p:
    results = {}

    def run(name, items):
      results[name] = p.map(items).values

    threads = [threading.Thread(target=run, args=(i, [(2, i), (3, i)])) for i in range(4)]
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    assert results == {i: [2**i, 3**i] for i in range(4)}


def test_close_does_not_wait_for_a_hung_call_in_another_thread(no_new_processes):
  p = WorkerPool(sum, num_workers=1, deadline_s=60.0)
  p.start()
  outcome = []

  def run():
    try:
      p.map([UNINTERRUPTIBLE])
    except RuntimeError as e:
      outcome.append(str(e))

  hung = threading.Thread(target=run)
  hung.start()
  time.sleep(0.2)
  pids = p.pids()
  closer = threading.Thread(target=p.close)
  closer.start()
  closer.join(timeout=60)  # a deadline against a hang, not a speed bound
  assert not closer.is_alive(), "close() waited for the hung call"
  assert _gone(pids)
  hung.join(timeout=10)
  assert not hung.is_alive()
  assert outcome and "closed" in outcome[0]


def test_processes_end_when_the_parent_exits_or_is_killed(tmp_path):
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = textwrap.dedent(f"""
        import operator, os, sys, time
        sys.path.insert(0, {repo!r})
        from jaxghpo.rewards.pool import WorkerPool, forkserver_pid
        if __name__ == "__main__":  # workers re-import the main module, as multiprocessing's do
          p = WorkerPool(operator.add, num_workers=2, deadline_s=1.0)
          assert p.map([(1, 2)]).values == [3]
          print(" ".join(str(x) for x in p.pids() + [forkserver_pid()]), flush=True)
          if sys.argv[1] == "hang":
            time.sleep(60)
          # else: exit without close(): the atexit hook must stop the pool
    """)
  path = tmp_path / "parent.py"
  path.write_text(script)
  for mode in ("exit", "hang"):
    with subprocess.Popen([sys.executable, str(path), mode], stdout=subprocess.PIPE, text=True) as proc:
      pids = [int(x) for x in proc.stdout.readline().split()]
      assert len(pids) == 3
      if mode == "hang":
        proc.send_signal(signal.SIGKILL)   # no atexit: the children must notice on their own
      proc.wait(timeout=30)
    assert _gone(pids, timeout_s=5.0), mode


def test_bad_arguments():
  with pytest.raises(ValueError, match="module-level function"):
    WorkerPool(lambda x: x)
  with pytest.raises(ValueError, match="num_workers"):
    WorkerPool(operator.add, num_workers=0)
  with pytest.raises(ValueError, match="soft_fraction"):
    WorkerPool(operator.add, soft_fraction=1.0)


def test_default_num_workers_is_small_and_configurable(monkeypatch):
  monkeypatch.delenv("JAXGHPO_REWARD_WORKERS", raising=False)
  assert 2 <= pool_lib.default_num_workers() <= 8
  monkeypatch.setenv("JAXGHPO_REWARD_WORKERS", "3")
  assert pool_lib.default_num_workers() == 3
  monkeypatch.setenv("JAXGHPO_REWARD_WORKERS", "lots")
  with pytest.raises(ValueError, match="JAXGHPO_REWARD_WORKERS"):
    pool_lib.default_num_workers()


def test_workers_busy_in_c_die_with_a_sigkilled_parent(tmp_path):
  """Workers in a C loop that holds the GIL (no watchdog thread can run) still die with the pool's owner."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = textwrap.dedent(f"""
        import sys, threading, time
        sys.path.insert(0, {repo!r})
        from jaxghpo.rewards.pool import WorkerPool
        if __name__ == "__main__":
          p = WorkerPool(sum, num_workers=2, deadline_s=600.0)
          p.start()
          threading.Thread(target=p.map, args=([(range(10**12),)] * 2,), daemon=True).start()
          time.sleep(1.0)  # both workers are now inside sum()
          print(" ".join(str(x) for x in p.pids()), flush=True)
          time.sleep(600)
    """)
  path = tmp_path / "owner.py"
  path.write_text(script)
  with subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True) as proc:
    pids = [int(x) for x in proc.stdout.readline().split()]
    assert len(pids) == 2
    assert all(psutil.Process(pid).cpu_percent(interval=0.2) > 0 for pid in pids)  # busy
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  assert _gone(pids, timeout_s=60.0)  # a deadline against a hang: they die rather than run on in sum()
