"""Two runs' metrics.jsonl row by row: the same steps, the same keys, the same numbers (a refactor's check).

    python tools/compare_runs.py RUN_A RUN_B [--tol 0] [--ignore time/,perf/]

Keys under --ignore prefixes (wall-clock timings by default) are left out. Prints each key that differs
(in either run only, or with its largest absolute difference) and exits 1 when anything differs beyond
--tol; exits 0 and prints the number of rows and values compared when the runs agree.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys


def read(workdir: str) -> dict[int, dict]:
  rows = {}
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    for line in f:
      if line.strip():
        row = json.loads(line)
        rows.setdefault(int(row["step"]), {}).update(row)
  return rows


def compare(a: dict[int, dict], b: dict[int, dict], tol: float, ignore: tuple[str, ...]) -> tuple[list[str], int]:
  problems, compared = [], 0
  if sorted(a) != sorted(b):
    problems.append(f"steps differ: {sorted(a)} vs {sorted(b)}")
  worst: dict[str, float] = {}
  for step in sorted(set(a) & set(b)):
    keys_a = {k for k in a[step] if not k.startswith(ignore)}
    keys_b = {k for k in b[step] if not k.startswith(ignore)}
    for k in sorted(keys_a ^ keys_b):
      problems.append(f"step {step}: key {k!r} only in {'A' if k in keys_a else 'B'}")
    for k in keys_a & keys_b:
      va, vb = a[step][k], b[step][k]
      compared += 1
      if isinstance(va, (int, float)) and isinstance(vb, (int, float)):
        if math.isnan(va) and math.isnan(vb):
          continue
        d = abs(float(va) - float(vb))
        if d > tol:
          worst[k] = max(worst.get(k, 0.0), d)
      elif va != vb:
        worst[k] = math.inf
  problems += [f"{k}: largest difference {d:g}" for k, d in sorted(worst.items())]
  return problems, compared


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("run_a")
  p.add_argument("run_b")
  p.add_argument("--tol", type=float, default=0.0)
  p.add_argument("--ignore", default="time/,perf/")
  args = p.parse_args(argv)
  a, b = read(args.run_a), read(args.run_b)
  problems, compared = compare(a, b, args.tol, tuple(x for x in args.ignore.split(",") if x))
  for line in problems:
    print(line)
  if problems:
    return 1
  print(f"identical: {len(a)} rows, {compared} values (ignoring {args.ignore}; tolerance {args.tol:g})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
