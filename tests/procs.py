"""Process helpers shared by the tests that spawn workers."""
from __future__ import annotations

import psutil

from jaxghpo.rewards import pool as pool_lib


def wait_all(procs, timeout: float = 120) -> list[str]:
  """Waits for every spawned process (stdout captured as text); kills any still running on the way out."""
  logs = []
  try:
    for p in procs:
      logs.append(p.communicate(timeout=timeout)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return logs


def reward_pool_processes() -> set[int]:
  """Pids of our live descendants that are reward-pool workers (children of our forkserver, which
  starts every worker; the forkserver itself is shared by all pools and lives as long as we do)."""
  server = pool_lib.forkserver_pid()
  out = set()
  if server is None:
    return out
  for p in psutil.Process().children(recursive=True):
    try:
      if p.ppid() == server and p.status() != psutil.STATUS_ZOMBIE:
        out.add(p.pid)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
      pass
  return out
