"""Imported once by the reward pool's forkserver (pool.PRELOAD), before it forks any worker: imports
math-verify and runs one comparison (math.warm_up, ~1.5 s), so every worker, a replacement for a
killed one included, is forked warm instead of paying it again.

A failure here only costs that speed: the workers run `warm_up` again and report its error.
"""
from jaxghpo.rewards import math as _math

try:
  _math.warm_up()
except Exception:  # noqa: BLE001 - math-verify missing or broken: the workers' own warm-up says why
  pass
