"""One step of scheduler traffic: plan, sample, climb the retry ladder, update.

The trainer keeps its own loop (it also carries completions and token budgets); this is the same
sequence for simulations, benchmarks and tests, and a reference for the order of calls.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def run_step(sched, problem_ids, sample_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], *, levels=None,
             step=None):
  """Runs one step; returns (final_ratios float32 [B], final_rewards [B, G], metrics dict).

  sample_fn(ids [b], ratios [b]) -> accuracy rewards [b, G]; it is called once for the whole
  batch and then once per retry round with only the groups to re-sample. The group kept for each
  problem is the one sampled last, with the ratio it was sampled with.
  """
  ids = np.asarray(problem_ids, np.int64)
  ratios = sched.plan(ids, levels=levels, step=step)
  rewards = np.asarray(sample_fn(ids, ratios))
  final_ratios, final_rewards = ratios.copy(), rewards.copy()
  nxt = sched.retry(ids, ratios, rewards)
  while np.isfinite(nxt).any():
    idx = np.flatnonzero(np.isfinite(nxt))
    sub_rewards = np.asarray(sample_fn(ids[idx], nxt[idx]))
    final_ratios[idx] = nxt[idx]
    final_rewards[idx] = sub_rewards
    nxt_sub = sched.retry(ids[idx], nxt[idx], sub_rewards)
    nxt = np.full(ids.size, np.nan, np.float32)
    nxt[idx] = nxt_sub
  metrics = sched.update(ids, final_ratios, final_rewards, levels=levels)
  return final_ratios, final_rewards, metrics
