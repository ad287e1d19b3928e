"""Diagnostics on hand-made evaluation rows, with every count worked out by hand in the comments."""
import pytest

from jaxghpo import diagnostics, evaluation
from jaxghpo.data.tasks import chains, chains_diagnostics

# "k+3-5+2=" is level 3: k+3=n-5+2 ; n-5=i+2 ; i+2=k  (answer k)
CHAIN = "k+3-5+2="
COMPLETIONS = [
    "k+3=n-5+2;n-5=i+2;i+2=k",     # 0 correct, the whole work: 3 work steps, 3 valid
    "k+3=n-5+2;k",                 # 1 correct after 1 step: early, 2 operations skipped
    "k+3=n-5+2;n-5+2=k",           # 2 correct, the last two operations in one step: early, 1 skipped, 1 valid
    "k+3=n-5+2;n-5=i+2;i+2=k;k",   # 3 correct, answer restated after the chain ended: repeated
    "k+3=n-5+2;n-5=j+2;j+2=l",     # 4 wrong: step 2 mis-shifts (n-5 is i), step 3 is right given j: 2 valid
    "k",                           # 5 correct guess with no work: early, 3 skipped
    "zz",                          # 6 no answer letter
    "k+3=n-5+2;k+3=n-5+2",         # 7 a step written twice: repeated; ends without an answer letter
]
CORRECT = [True, True, True, True, False, True, False, False]
ROW_A = {"problem_id": 1, "level": 3, "problem": CHAIN, "answer": "k", "hint": "", "completions": COMPLETIONS,
         "correct": CORRECT}
# "a+1+1=": a+1=b+1 ; b+1=c. The hint's step counts as written work.
ROW_B = {"problem_id": 2, "level": 2, "problem": "a+1+1=", "answer": "c", "hint": "a+1=b+1;",
         "completions": ["b+1=c", "c"], "correct": [True, True]}
ROW_NOT_A_CHAIN = {"problem_id": 3, "level": 1, "problem": "what is 2+2?", "answer": "4", "hint": "",
                   "completions": ["4"], "correct": [True]}


@pytest.mark.parametrize("index, work, valid, skipped, repeated, answered, early", [
    (0, 3, 3, 0, False, True, False),
    (1, 1, 1, 2, False, True, True),
    (2, 2, 1, 1, False, True, True),
    (3, 3, 3, 0, True, True, False),
    (4, 3, 2, 0, False, True, False),
    (5, 0, 0, 3, False, True, True),
    (6, 0, 0, 0, False, False, False),
    (7, 2, 1, 0, True, False, False),
])
def test_check_trace_per_completion(index, work, valid, skipped, repeated, answered, early):
  t = chains_diagnostics.check_trace(CHAIN, COMPLETIONS[index])
  assert (t.level, t.work_steps, t.valid_steps, t.skipped_ops, t.repeated, t.answered, t.early) == (
      3, work, valid, skipped, repeated, answered, early)


def test_check_trace_counts_hint_steps_and_ignores_text_after_eos():
  assert chains_diagnostics.check_trace("a+1+1=", "b+1=c", hint="a+1=b+1;").early is False
  hinted_guess = chains_diagnostics.check_trace("a+1+1=", "c", hint="a+1=b+1;")
  assert (hinted_guess.work_steps, hinted_guess.skipped_ops, hinted_guess.early) == (1, 1, True)
  t = chains_diagnostics.check_trace(CHAIN, "k+3=n-5+2;n-5=i+2;i+2=k<eos>k;k;k")
  assert (t.steps_written, t.repeated, t.answer) == (3, False, "k")
  assert chains_diagnostics.check_trace(CHAIN, COMPLETIONS[3]).steps_written == 4  # chains.count_steps counts "k"


def test_check_trace_rejects_a_problem_that_is_not_a_chain():
  with pytest.raises(ValueError, match="malformed"):
    chains_diagnostics.check_trace("what is 2+2?", "4")


def test_shortcut_stats_hand_worked():
  s = chains_diagnostics.shortcut_stats([ROW_A, ROW_B, ROW_NOT_A_CHAIN])
  # 10 completions (the non-chain row is skipped). Early answers: A1, A2, A5, B1 -> 4.
  assert s["completions"] == 10
  assert s["shortcut_rate"] == pytest.approx(4 / 10)
  # Correct: A0 A1 A2 A3 A5 B0 B1 = 7, of which early: A1 A2 A5 B1 = 4.
  assert s["correct_rate"] == pytest.approx(7 / 10)
  assert s["correct_shortcut_rate"] == pytest.approx(4 / 7)
  # Skips: A1 (2), A2 (1), A5 (3), B1 (1): 4 completions, 7 operations.
  assert s["skip_rate"] == pytest.approx(4 / 10)
  assert s["skipped_ops_mean"] == pytest.approx(7 / 10)
  assert s["repeat_rate"] == pytest.approx(2 / 10)  # A3, A7
  # Work steps: A 3+1+2+3+3+0+0+2 = 14, B 2+1 = 3; valid: A 3+1+1+3+2+0+0+1 = 11, B 2+1 = 3.
  assert s["work_steps_mean"] == pytest.approx(17 / 10)
  assert s["valid_step_frac"] == pytest.approx(14 / 17)
  assert s["answered_rate"] == pytest.approx(8 / 10)  # all but A6, A7
  assert s["level_mean"] == pytest.approx((8 * 3 + 2 * 2) / 10)


def test_shortcut_stats_without_correct_completions_gives_none():
  row = dict(ROW_A, completions=["zz"], correct=[False])
  s = chains_diagnostics.shortcut_stats([row])
  assert s["correct_shortcut_rate"] is None and s["valid_step_frac"] is None and s["shortcut_rate"] == 0.0


def _row(pid, level, correct):
  return {"problem_id": pid, "level": level, "problem": "a+1=", "answer": "b", "hint": "",
          "completions": ["a+1=b"] * len(correct), "correct": correct}


def test_easy_regression_pairs_problems():
  before = [_row(1, 1, [True]), _row(2, 1, [True]), _row(3, 2, [False]), _row(4, 2, [True])]
  after = [_row(1, 1, [True]), _row(2, 1, [False]), _row(3, 2, [True]), _row(4, 2, [True]),
           _row(5, 2, [False])]  # problem 5 was not evaluated before: not compared
  r = diagnostics.easy_regression(before, after)
  assert r["problems"] == 4
  assert (r["pass@1/before"], r["pass@1/after"], r["pass@1/delta"]) == (0.75, 0.75, 0.0)
  assert (r["pass@1/before/level_1"], r["pass@1/after/level_1"], r["pass@1/delta/level_1"]) == (1.0, 0.5, -0.5)
  assert (r["pass@1/before/level_2"], r["pass@1/after/level_2"]) == (0.5, 1.0)
  assert r["lost_frac"] == pytest.approx(1 / 3)  # solved before: 1, 2, 4; lost: 2
  assert r["gained_frac"] == 1.0  # unsolved before: 3; gained: 3


def test_easy_regression_pairs_repeated_problems_by_occurrence():
  r = diagnostics.easy_regression([_row(1, 1, [True]), _row(1, 1, [True]), _row(2, 1, [False])],
                                  [_row(1, 1, [True]), _row(1, 1, [False]), _row(2, 1, [False])])
  assert r["problems"] == 3 and r["pass@1/before"] == pytest.approx(2 / 3) and r["pass@1/after"] == pytest.approx(1 / 3)
  assert r["lost_frac"] == 0.5


def test_easy_regression_counts_a_problem_solved_by_more_than_half_of_its_samples():
  r = diagnostics.easy_regression([_row(1, 1, [True, True, False])], [_row(1, 1, [True, False, False])])
  assert r["pass@1/before"] == pytest.approx(2 / 3) and r["pass@1/after"] == pytest.approx(1 / 3)
  assert r["lost_frac"] == 1.0 and r["gained_frac"] is None


def test_vote_stats():
  rows = [{"problem": "a+1=", "answer": "b", "hint": "", "completions": ["a+1=b", "a+1=c", "a+1=c"],
           "correct": [True, False, False]},   # majority c: wrong
          {"problem": "a+2=", "answer": "c", "hint": "", "completions": ["a+2=c", "a+2=c", "a+2=d"],
           "correct": [True, True, False]}]    # majority c: right
  v = diagnostics.vote_stats(rows, chains.extract_answer)
  assert v == {"problems": 2.0, "maj_accuracy": 0.5, "sample_accuracy": pytest.approx(0.5)}


CONF_ROW = {"problem": "a+1=", "answer": "b", "hint": "", "completions": ["a+1=b", "a+1=c", "a+1=c", "a+1=c"],
            "correct": [True, False, False, False],
            "token_confidences": [[5, 5, 5, 5], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]]}


def test_confidence_stats_hand_worked():
  c = diagnostics.confidence_stats([CONF_ROW], chains.extract_answer, window=2, tail_tokens=2, keep_frac=0.5, warmup=2)
  # Plain majority: c (3 votes) is wrong. Filtered: keep 2 most confident (trace 0 at 5, trace 1 at 1,
  # the earlier of the ties); weighted vote b=5 vs c=1 -> b, right.
  assert c["maj_accuracy"] == 0.0 and c["conf_vote_accuracy"] == 1.0
  assert (c["conf_lowest/correct"], c["conf_lowest/wrong"]) == (5.0, 1.0)
  assert (c["conf_tail/correct"], c["conf_bottom10/wrong"]) == (5.0, 1.0)
  # Online: warm-up traces 0, 1 have lowest-window confidences 5, 1 -> threshold = median 3. Traces 2, 3
  # fall below it in their first window and stop after 2 of their 4 tokens: 4 of 16 tokens saved.
  assert c["tokens_saved_frac"] == pytest.approx(4 / 16)
  assert c["traces_stopped_frac"] == 1.0
  assert c["online_vote_accuracy"] == 1.0  # warm-up votes b, c: the tie goes to b, seen first
  assert c["conf_lowest/correct"] == evaluation.lowest_group_confidence([5, 5, 5, 5], 2)


def test_confidence_stats_skips_rows_without_confidences_and_uses_trace_level_ones():
  plain = {k: v for k, v in CONF_ROW.items() if k != "token_confidences"}
  assert diagnostics.confidence_stats([plain], chains.extract_answer) == {}
  trace_level = dict(plain, confidences=[0.9, 0.1, 0.2, 0.1])
  c = diagnostics.confidence_stats([trace_level], chains.extract_answer, keep_frac=0.25)
  assert c == {"problems": 1.0, "maj_accuracy": 0.0, "conf_vote_accuracy": 1.0}


def _chains_task():
  from configs.base import get_base_config
  from jaxghpo.data import tasks
  return tasks.task_for(get_base_config())


def test_run_diagnostics_reads_first_and_last_evaluation(tmp_path):
  wd = str(tmp_path)
  for step, easy_correct in ((0, [True]), (5, [True]), (10, [False])):
    evaluation.write_rows(evaluation.eval_rows_path(wd, "easy", step, 0.0, tag="greedy"),
                          [_row(1, 1, easy_correct)])
    evaluation.write_rows(evaluation.eval_rows_path(wd, "hard", step, 0.0, tag="sampled"), [ROW_A])
  d = diagnostics.run_diagnostics(wd, _chains_task())
  assert d["shortcut/hard/hint0/sampled/after/shortcut_rate"] == pytest.approx(3 / 8)
  assert d["shortcut/hard/hint0/sampled/before/completions"] == 8
  assert d["regression/easy/greedy/pass@1/before"] == 1.0 and d["regression/easy/greedy/pass@1/after"] == 0.0
  assert d["regression/easy/greedy/lost_frac"] == 1.0  # step 10 is "after", not the mid-run step 5
  assert "vote/hard/hint0/after/maj_accuracy" in d and not any(k.startswith("confidence/") for k in d)
  assert diagnostics.run_diagnostics(str(tmp_path / "nothing")) == {}
