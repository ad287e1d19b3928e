"""The fixed evaluation set of a procedural task: the same problems for every arm, seed and run.

Each (split, level) has a pool of 1024 problems drawn once with seed FIXED_EVAL_SEED + level, independent
of every run's seed; a set of n problems is the pool's first n, so a quick run sees a prefix of a full one.
"""
from __future__ import annotations

from typing import Sequence

FIXED_EVAL_SEED = 1000  # the fixed set's seed: independent of every run's seed, never re-drawn
FIXED_SET_PROBLEMS = 128  # problems per level of the full fixed set (tools/evaluate.py's default)
_POOL = 1024  # problems drawn per (split, level); a set of n problems is the first n (n <= _POOL)


def fixed_level_set(task, split: str, level: int, num_problems: int, seed: int = FIXED_EVAL_SEED) -> list:
  """The first num_problems of the fixed pool of (split, level): the same problems for every arm,
  seed and run, and a smaller set is a prefix of a larger one (quick runs see a subset)."""
  if not 0 < int(num_problems) <= _POOL:
    raise ValueError(f"eval num_problems={num_problems} must be in 1..{_POOL} per level")
  return task.generate(split, _POOL, int(seed) + int(level), levels=[int(level)])[:int(num_problems)]


def fixed_eval_sets(task, num_problems: int, *, levels: Sequence[int] = tuple(range(1, 7)),
                    ood_levels: Sequence[int] = (7, 8), ood_ops_levels: Sequence[int] = (3, 4),
                    seed: int = FIXED_EVAL_SEED) -> dict[str, list]:
  """The fixed evaluation set of a procedural task, one key per level: {key: problems}.

  keys: "1".."6" (test split), "7", "8" (the length-OOD split "ood": problems longer than any
  trained) and "ood_ops:3", "ood_ops:4" (the operator-OOD split, when the task has one);
  num_problems per key (fixed_level_set).
  """
  sets: dict[str, list] = {}
  for split, lvls, fmt in (("test", levels, "{}"), ("ood", ood_levels, "{}"),
                           ("ood_ops", ood_ops_levels, "ood_ops:{}")):
    if split not in task.SPLITS:
      continue
    for level in lvls:
      sets[fmt.format(int(level))] = fixed_level_set(task, split, level, num_problems, seed)
  return sets
