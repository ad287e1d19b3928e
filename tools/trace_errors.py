"""Right answers with invalid traces, by what the first wrong line got wrong (letter chains).

Reads a study's evaluation rows (`OUT/ARM/seedN/eval/SPLIT_stepNNNNNN_hint0.00_sampled.jsonl`, the
evaluation after training) and, for every completion whose answer is right but whose trace is not
valid, compares its lines with the unique valid trace (`chains.solve`) and classifies the first line
that differs:

  letter   the new letter is wrong
  restate  the line restates the wrong letter or operation on its left side
  tail     the copied tail of remaining operations is wrong (an operation changed, dropped, added)
  extra    more lines than the problem needs
  short    fewer lines than the problem needs (an early answer that happens to be right)
  malformed  the line has no single '='

    python tools/trace_errors.py --out runs/study --arms grpo,ghpo --split hard
    python tools/trace_errors.py --out runs/curves --arms grpo,ghpo --by_step   # every evaluation of every run
"""
import argparse
import collections
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxghpo.data.tasks import chains  # noqa: E402

KINDS = ("letter", "restate", "tail", "extra", "short", "malformed")


def first_error(problem: str, completion: str) -> tuple[str, int]:
  """(kind, line index) of the first line of `completion` that differs from the valid trace."""
  want = chains.solve(problem)
  lines = completion.split(";")
  for i, line in enumerate(lines):
    if i >= len(want):
      return "extra", i
    if line == want[i]:
      continue
    got_parts, want_parts = line.split("="), want[i].split("=")
    if len(got_parts) != 2:
      return "malformed", i
    if got_parts[0] != want_parts[0]:
      return "restate", i
    if got_parts[1][:1] != want_parts[1][:1]:
      return "letter", i
    return "tail", i
  return ("short", len(lines)) if len(lines) < len(want) else ("valid", -1)


def eval_step(path: str) -> int:
  return int(os.path.basename(path).split("_step")[1].split("_")[0])


def after_training_files(run_dir: str, split: str) -> list[str]:
  """The run's last sampled evaluation of `split`, if there was one after step 0 (none: [])."""
  files = sorted(glob.glob(os.path.join(run_dir, "eval", f"{split}_step*_hint0.00_sampled.jsonl")), key=eval_step)
  return files[-1:] if files and eval_step(files[-1]) > 0 else []


def classify(path: str, kinds: collections.Counter) -> tuple[int, int]:
  """Adds the file's right-but-invalid completions to `kinds`; returns (completions, valid ones)."""
  completions = valid_count = 0
  with open(path) as f:
    for line in f:
      row = json.loads(line)
      for text, right, valid in zip(row["completions"], row["answer_right"], row["valid"]):
        completions += 1
        valid_count += bool(valid)
        if right and not valid:
          kinds[first_error(row["problem"], text)[0]] += 1
  return completions, valid_count


def by_step(out: str, arm: str, split: str) -> list[dict]:
  """Per run and evaluation step: valid pass@1 and the share of completions with each error kind."""
  rows = []
  for run_dir in sorted(glob.glob(os.path.join(out, arm, "seed*"))):
    for path in sorted(glob.glob(os.path.join(run_dir, "eval", f"{split}_step*_hint0.00_sampled.jsonl"))):
      kinds = collections.Counter()
      completions, valid_count = classify(path, kinds)
      step = eval_step(path)
      rows.append({"arm": arm, "run": os.path.basename(run_dir), "step": step,
                   "valid_pass@1": valid_count / max(completions, 1),
                   **{k: kinds.get(k, 0) / max(completions, 1) for k in KINDS}})
  return rows


def count(out: str, arm: str, split: str) -> dict:
  kinds, completions, runs = collections.Counter(), 0, 0
  for run_dir in sorted(glob.glob(os.path.join(out, arm, "seed*"))):
    for path in after_training_files(run_dir, split):
      runs += 1
      completions += classify(path, kinds)[0]
  return {"arm": arm, "runs": runs, "completions": completions,
          "right_but_invalid": sum(kinds.values()), **{k: kinds.get(k, 0) for k in KINDS}}


def main(argv=None) -> list[dict]:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="the study directory (tools/study.py --out)")
  p.add_argument("--arms", required=True, help="comma-separated arm names")
  p.add_argument("--split", default="hard")
  p.add_argument("--by_step", action="store_true", help="every evaluation of every run (shares of completions)")
  args = p.parse_args(argv)
  if args.by_step:
    rows = [r for arm in args.arms.split(",") for r in by_step(args.out, arm, args.split)]
    print("| arm | run | step | valid pass@1 | " + " | ".join(KINDS) + " |")
    print("| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in KINDS) + " |")
    for r in rows:
      print(f"| {r['arm']} | {r['run']} | {r['step']} | {r['valid_pass@1']:.3f} | "
            + " | ".join(f"{r[k]:.3f}" for k in KINDS) + " |")
    print(json.dumps(rows))
    return rows
  results = [count(args.out, arm, args.split) for arm in args.arms.split(",")]
  print("| arm | runs | completions | right but invalid | " + " | ".join(KINDS) + " |")
  print("| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in KINDS) + " |")
  for r in results:
    share = r["right_but_invalid"] / max(r["completions"], 1)
    print(f"| {r['arm']} | {r['runs']} | {r['completions']} | {r['right_but_invalid']} ({share:.3f}) | "
          + " | ".join(str(r[k]) for k in KINDS) + " |")
  print(json.dumps(results))
  return results


if __name__ == "__main__":
  main()
