"""Host time of the hint scheduler per RL step: plan + retry rounds + update.

A batch of --batch problems (G samples each) is drawn each step from a table already holding
--problems problems; --new_frac of each batch are problems never seen, so with the table full
every step also inserts and evicts. Rewards come from a fixed synthetic pass rate per problem, so
retries happen as in a GHPO run. Sampling time is excluded: only scheduler calls are timed.

  python tools/bench_scheduler.py [--problems 100000 --batch 512 --steps 50]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxghpo import curriculum  # noqa: E402


def bench(mode: str, args) -> tuple[float, float, float]:
  """Returns (median ms per step, ms per problem, mean retry rounds per step)."""
  cfg = curriculum.default_config()
  cfg.mode = mode
  cfg.adaptive_retry = True
  cfg.total_steps = args.warmup + args.steps  # anneal decays over the benchmark
  cfg.max_problems = args.problems
  sched = curriculum.HintScheduler(cfg)
  rng = np.random.default_rng(0)
  pass_prob = rng.random(10 * args.problems) ** 3  # many hard problems, so the ladder runs
  levels_all = rng.integers(0, 10, 10 * args.problems)

  # Fill the table: every problem seen once.
  for start in range(0, args.problems, 16384):
    ids = np.arange(start, min(start + 16384, args.problems))
    sched.update(ids, np.zeros(ids.size, np.float32), (rng.random((ids.size, args.group)) < 0.3).astype(np.float32),
                 levels=levels_all[ids])
  assert sched.problems.size == args.problems

  def sample(ids, ratios):
    p = np.clip(pass_prob[ids] + ratios, 0, 1)
    return (rng.random((ids.size, args.group)) < p[:, None]).astype(np.float32)

  next_new = args.problems
  times, rounds = [], []
  for step in range(args.warmup + args.steps):
    num_new = int(args.new_frac * args.batch)
    ids = np.concatenate([rng.choice(next_new, args.batch - num_new, replace=False),
                          np.arange(next_new, next_new + num_new)]).astype(np.int64)
    next_new += num_new
    levels = levels_all[ids]
    # Rewards are drawn before timing each call so only the scheduler is on the clock.
    elapsed, n_rounds = 0.0, 0
    t = time.perf_counter()
    ratios = sched.plan(ids, levels=levels)
    elapsed += time.perf_counter() - t
    rewards = sample(ids, ratios)
    final_ratios, final_rewards = ratios.copy(), rewards.copy()
    t = time.perf_counter()
    nxt = sched.retry(ids, ratios, rewards)
    elapsed += time.perf_counter() - t
    while np.isfinite(nxt).any():
      n_rounds += 1
      idx = np.flatnonzero(np.isfinite(nxt))
      sub = sample(ids[idx], nxt[idx])
      final_ratios[idx], final_rewards[idx] = nxt[idx], sub
      t = time.perf_counter()
      nxt_sub = sched.retry(ids[idx], nxt[idx], sub)
      elapsed += time.perf_counter() - t
      nxt = np.full(ids.size, np.nan, np.float32)
      nxt[idx] = nxt_sub
    t = time.perf_counter()
    sched.update(ids, final_ratios, final_rewards, levels=levels)
    elapsed += time.perf_counter() - t
    if step >= args.warmup:
      times.append(elapsed)
      rounds.append(n_rounds)
  ms = 1e3 * float(np.median(times))
  return ms, ms / args.batch, float(np.mean(rounds))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--problems", type=int, default=100_000)
  parser.add_argument("--batch", type=int, default=512)
  parser.add_argument("--group", type=int, default=8)
  parser.add_argument("--steps", type=int, default=50)
  parser.add_argument("--warmup", type=int, default=5)
  parser.add_argument("--new_frac", type=float, default=0.05)
  parser.add_argument("--modes", default="none,ghpo,adaptive,anneal")
  args = parser.parse_args()
  print(f"scheduler host time per step: {args.problems} problems in memory, batch {args.batch}, G={args.group}, "
        f"{args.new_frac:.0%} new problems per batch (insert + evict), median of {args.steps} steps")
  for mode in args.modes.split(","):
    ms, ms_per_problem, rounds = bench(mode, args)
    print(f"  {mode:9s} {ms:7.3f} ms/step  {1e3 * ms_per_problem:7.2f} us/problem  "
          f"({rounds:.1f} retry rounds/step)")


if __name__ == "__main__":
  main()
