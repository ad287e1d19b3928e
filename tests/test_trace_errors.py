"""tools/trace_errors.py: the first wrong line of a right-but-invalid chains trace, by kind."""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import trace_errors  # noqa: E402

PROBLEM = "q-1+1-2+4-4="  # q-1=p+1-2+4-4;p+1=q-2+4-4;q-2=o+4-4;o+4=s-4;s-4=o
VALID = "q-1=p+1-2+4-4;p+1=q-2+4-4;q-2=o+4-4;o+4=s-4;s-4=o"


def test_first_error_kinds():
  assert trace_errors.first_error(PROBLEM, VALID) == ("valid", -1)
  # A sign miscopied in the first line's tail; the later lines recompute from the problem.
  assert trace_errors.first_error(PROBLEM, VALID.replace("p+1-2", "p+1+2", 1)) == ("tail", 0)
  assert trace_errors.first_error(PROBLEM, "q-1=p+1-2+4-4;p+1=r-2+4-4") == ("letter", 1)
  assert trace_errors.first_error(PROBLEM, "q-1=p+1-2+4-4;p+2=q-2+4-4") == ("restate", 1)
  assert trace_errors.first_error(PROBLEM, "q-1=p+1-2+4-4;o") == ("malformed", 1)
  assert trace_errors.first_error(PROBLEM, "q-1=p+1-2+4-4;p+1=q-2+4-4") == ("short", 2)
  assert trace_errors.first_error(PROBLEM, VALID + ";o+0=o") == ("extra", 5)


def test_counts_only_right_answers_with_invalid_traces_after_training(tmp_path):
  tail_error = VALID.replace("p+1-2", "p+1+2", 1)
  row = {"problem": PROBLEM, "completions": [VALID, tail_error, "q-1=p+1-2+4-4;p+1=q"],
         "answer_right": [True, True, False], "valid": [True, False, False]}
  eval_dir = tmp_path / "ghpo" / "seed0" / "eval"
  eval_dir.mkdir(parents=True)
  # Step 0 (before training) is left out: only the last evaluation counts.
  (eval_dir / "hard_step000000_hint0.00_sampled.jsonl").write_text(json.dumps(row | {"answer_right": [True] * 3}) + "\n")
  (eval_dir / "hard_step000025_hint0.00_sampled.jsonl").write_text(json.dumps(row) + "\n")
  [result] = trace_errors.main(["--out", str(tmp_path), "--arms", "ghpo"])
  assert result["runs"] == 1 and result["completions"] == 3
  assert result["right_but_invalid"] == 1 and result["tail"] == 1 and result["short"] == 0


def test_by_step_reports_every_evaluation(tmp_path):
  tail_error = VALID.replace("p+1-2", "p+1+2", 1)
  eval_dir = tmp_path / "grpo" / "seed0" / "eval"
  eval_dir.mkdir(parents=True)
  for step, texts, valid in ((0, [VALID, VALID], [True, True]), (5, [VALID, tail_error], [True, False])):
    row = {"problem": PROBLEM, "completions": texts, "answer_right": [True, True], "valid": valid}
    (eval_dir / f"hard_step{step:06d}_hint0.00_sampled.jsonl").write_text(json.dumps(row) + "\n")
  rows = trace_errors.main(["--out", str(tmp_path), "--arms", "grpo", "--by_step"])
  assert [(r["step"], r["valid_pass@1"], r["tail"]) for r in rows] == [(0, 1.0, 0.0), (5, 0.5, 0.5)]
