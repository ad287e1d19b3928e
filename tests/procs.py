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
  """Pids of our live descendants that belong to a reward pool (a zygote or a worker)."""
  out = set()
  for p in psutil.Process().children(recursive=True):
    try:
      if pool_lib.PROCESS_MARKER in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE:
        out.add(p.pid)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
      pass
  return out
