"""Host cost of math-verify rewards: seconds to score one RL step's completions in jaxghpo's worker pool.

Completions are math-style responses (a few sentences of reasoning, then \\boxed{answer}), half right,
with LaTeX fractions, roots and plain integers as answers; the pool's workers are warm (started and
math-verify imported) before timing, as in a run after its first step. Compare with a step's device time.

  python tools/bench_rewards.py                 # 128 completions (16 problems x 8), best of 3
  python tools/bench_rewards.py --rows 1024
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

ANSWERS = [r"\frac{3}{4}", r"2\sqrt{5}", "17", r"\frac{\pi}{6}", "-3", r"4+2\sqrt{3}", "120", r"\frac{1}{2}"]


def completions(rows: int):
  texts, golds = [], []
  for i in range(rows):
    gold = ANSWERS[i % len(ANSWERS)]
    said = gold if i % 2 == 0 else ANSWERS[(i + 3) % len(ANSWERS)]
    texts.append(f"We expand the expression and collect terms. Step {i}: the product simplifies, and after "
                 f"cancelling the common factor we get the value below.\nTherefore the answer is $\\boxed{{{said}}}$.")
    golds.append(gold)
  return texts, golds


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--rows", type=int, default=128)
  p.add_argument("--workers", type=int, default=0, help="0: the pool's default")
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args(argv)
  from jaxghpo.rewards.math import MathVerifier
  texts, golds = completions(args.rows)
  kw = {"num_workers": args.workers} if args.workers else {}
  with MathVerifier(**kw) as verifier:
    rewards, _ = verifier.score(texts, golds)  # starts and warms the workers
    assert [round(float(r)) for r in rewards] == [1 - i % 2 for i in range(args.rows)], rewards
    best = float("inf")
    for _ in range(args.repeats):
      t0 = time.perf_counter()
      verifier.score(texts, golds)
      best = min(best, time.perf_counter() - t0)
  print(f"math-verify, {args.rows} completions: {best * 1e3:.0f} ms ({best / args.rows * 1e3:.2f} ms each; "
        f"{os.cpu_count()} CPUs), best of {args.repeats}")


if __name__ == "__main__":
  main()
