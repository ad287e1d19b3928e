"""Imported once by the reward pool's forkserver (pool.PRELOAD), before it forks any worker.

1. Imports math-verify and runs one comparison (math.warm_up, ~1.5 s), so every worker, a replacement for
   a killed one included, is forked warm instead of paying it again. A failure here only costs that
   speed: the workers run `warm_up` again and report its error.
2. Makes the forkserver leave at once when it exits (its owner died or exited): a worker busy in C is
   ended by PR_SET_PDEATHSIG only when the forkserver is gone, and a normal interpreter exit of a
   forkserver holding sympy takes seconds (atexit hooks, among them pebble's, and module teardown).
   Only in the forkserver: the hook is registered when this module is imported from inside
   multiprocessing.forkserver.main, never in a process that imports it otherwise.
"""
import atexit
import multiprocessing.forkserver
import os
import sys

from jaxghpo.rewards import math as _math


def _imported_by_forkserver() -> bool:
  frame = sys._getframe(1)
  while frame is not None:
    if frame.f_code is multiprocessing.forkserver.main.__code__:
      return True
    frame = frame.f_back
  return False


try:
  _math.warm_up()
except Exception:  # noqa: BLE001 - math-verify missing or broken: the workers' own warm-up says why
  pass

if _imported_by_forkserver():
  atexit.register(os._exit, 0)   # registered last, so it runs first
