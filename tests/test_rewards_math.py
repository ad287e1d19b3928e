"""math_reward: gold-answer parsing, agreement with math-verify, hostile completions, no leftovers.

One pool (the default verifier behind `rewards.math_reward`) serves the whole module; its start-up
(importing math-verify once, in the forkserver) dominates the module's time.
"""

import random
import threading

import numpy as np
import pytest

from jaxghpo import rewards
from jaxghpo.rewards import math as rmath
from tests.procs import reward_pool_processes

NUM_WORKERS = 2
HOSTILE_DEADLINE_S = 1.0


@pytest.fixture(scope="module")
def verifier():
  """The default verifier, configured small; shut down (and checked) at the end of the module."""
  before = reward_pool_processes()
  rewards.configure(num_workers=NUM_WORKERS, deadline_s=5.0)
  v = rmath.default_verifier()
  v.pool.start()
  yield v
  rewards.shutdown()
  assert reward_pool_processes() <= before


# ---------------------------------------------------------------------------------------------
# Pure text handling (no processes).

@pytest.mark.parametrize("gold, latex", [
    ("\\frac{1}{2}", "$\\frac{1}{2}$"),
    ("  [1,2) ", "$[1,2)$"),
    ("$\\{1,2\\}$", "$\\{1,2\\}$"),
    ("$$x^2+1$$", "$x^2+1$"),
    ("\\(3\\)", "$3$"),
    ("\\[3\\]", "$3$"),
    ("\\boxed{5}", "\\boxed{5}"),
    ("a\nb", "$a b$"),
    ("", ""),
    ("$ $", ""),
])
def test_gold_to_latex(gold, latex):
  assert rmath.gold_to_latex(gold) == latex


def test_completion_target():
  assert rmath.completion_target("we get \\boxed{3}") == ("we get \\boxed{3}", False)
  assert rmath.completion_target("<answer>1</answer> then <answer> \\frac12 </answer>") == ("$\\frac12$", True)
  assert rmath.completion_target("<answer>so \\boxed{2}</answer>") == ("so \\boxed{2}", False)
  assert rmath.completion_target("<answer>unclosed") == ("<answer>unclosed", False)


# ---------------------------------------------------------------------------------------------
# Agreement with math-verify on ordinary cases.

ORDINARY = [  # (completion, gold as MATH writes it, expected score)
    ("So the answer is \\boxed{\\frac{1}{2}}.", "0.5", 1.0),
    ("So the answer is \\boxed{0.5}.", "\\frac{1}{2}", 1.0),
    ("\\boxed{\\dfrac{1}{2}}", "$\\frac12$", 1.0),
    ("\\boxed{0.51}", "\\frac{1}{2}", 0.0),
    ("The interval is \\boxed{[1,2)}", "[1,2)", 1.0),
    ("The interval is \\boxed{(1,2]}", "[1,2)", 0.0),
    ("\\boxed{(-\\infty, 3] \\cup [5, \\infty)}", "(-\\infty,3]\\cup[5,\\infty)", 1.0),
    ("\\boxed{\\{2, 1\\}}", "\\{1,2\\}", 1.0),
    ("\\boxed{\\{1, 3\\}}", "\\{1,2\\}", 0.0),
    ("The length is \\boxed{5 \\text{ cm}}.", "5", 1.0),
    ("The length is \\boxed{5}.", "5\\text{ cm}", 1.0),
    ("\\boxed{50\\%}", "50\\%", 1.0),
    ("\\boxed{1+x^2}", "x^2+1", 1.0),
    ("\\boxed{x^2-1}", "x^2+1", 0.0),
    ("\\boxed{\\sqrt{12}}", "2\\sqrt{3}", 1.0),
    ("\\boxed{\\$18.90}", "\\$18.90", 1.0),
    ("\\boxed{10000}", "10,\\!000", 1.0),
    ("\\boxed{\\text{(C)}}", "\\text{(C)}", 1.0),
    ("\\boxed{(3,-1)}", "(3,-1)", 1.0),
    ("First \\boxed{4}, no wait: \\boxed{5}", "5", 0.0),   # math-verify reads both boxes as {4, 5}
    ("The final answer is $7$", "\\boxed{7}", 1.0),           # anchored, no box
    ("I computed 2+2 = 7 and stopped", "7", 0.0),            # a bare number is not an answer
    ("<think>easy</think><answer>\\frac{3}{4}</answer>", "0.75", 1.0),
    ("<think>easy</think><answer>[1,2)</answer>", "$[1,2)$", 1.0),
    ("no answer at all", "3", 0.0),
]


def _math_verify_in_process(completion: str, gold: str) -> float:
  """math-verify called directly (main thread, its own timeouts) with the same extraction configs."""
  from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
  text, as_gold = rmath.completion_target(completion)
  gold_cfg = [LatexExtractionConfig(), ExprExtractionConfig()]
  pred_cfg = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False),
              ExprExtractionConfig(try_extract_without_anchor=False)]
  g = parse(rmath.gold_to_latex(gold), gold_cfg, extraction_mode="first_match")
  p = parse(text, gold_cfg if as_gold else pred_cfg, extraction_mode="first_match")
  return float(bool(g) and bool(p) and verify(g, p))


def test_ordinary_cases_agree_with_math_verify(verifier):
  completions = [c for c, _, _ in ORDINARY]
  golds = [g for _, g, _ in ORDINARY]
  expected = np.array([e for _, _, e in ORDINARY], np.float32)
  pids = verifier.pool.pids()
  scores = rewards.math_reward(completions, golds)
  assert verifier.pool.pids() == pids          # the same workers serve every call
  assert scores.dtype == np.float32 and scores.shape == (len(ORDINARY),)
  wrong = [(c, g, s, e) for c, g, s, e in zip(completions, golds, scores, expected) if s != e]
  assert not wrong
  direct = np.array([_math_verify_in_process(c, g) for c, g in zip(completions, golds)], np.float32)
  np.testing.assert_array_equal(scores, direct)
  stats = rewards.last_stats()
  assert (stats.items, stats.timeouts, stats.errors, stats.kills) == (len(ORDINARY), 0, 0, 0)
  assert stats.correct == int(expected.sum())
  assert stats.pred_unparsed == 2       # "2+2 = 7 ..." and "no answer at all"


def test_gold_without_delimiters_needs_the_wrapping(verifier):
  # Bare "[1,2)" is not LaTeX math to math-verify; wrapped, it is an interval.
  from math_verify import parse
  assert parse("[1,2)") != parse("$[1,2)$")
  assert rewards.math_reward(["\\boxed{[1,2)}"], ["[1,2)"])[0] == 1.0


def test_unparsable_gold_is_counted(verifier):
  scores = rewards.math_reward(["\\boxed{3}", "\\boxed{3}"], ["", "3"])
  np.testing.assert_array_equal(scores, [0.0, 1.0])
  assert rewards.last_stats().gold_unparsed == 1


def test_answers_may_be_numbers_and_inputs_are_checked(verifier):
  np.testing.assert_array_equal(rewards.math_reward(["\\boxed{12}"], [12]), [1.0])
  assert rewards.math_reward([], []).shape == (0,)
  with pytest.raises(ValueError, match="2 completions but 1 answers"):
    rewards.math_reward(["a", "b"], ["1"])
  with pytest.raises(TypeError, match=r"completions\[1\]"):
    rewards.math_reward(["a", None], ["1", "2"])
  with pytest.raises(TypeError, match="list of strings"):
    rewards.math_reward("\\boxed{1}", "1")


def test_configure_restarts_only_on_change(verifier):
  rewards.configure(num_workers=NUM_WORKERS, deadline_s=5.0)        # the same options
  assert rmath.default_verifier() is verifier
  with pytest.raises(TypeError, match="unknown option"):
    rewards.configure(workers=3)
  with pytest.raises(ValueError, match="deadline_s"):
    rewards.configure(deadline_s=0.0)
  assert rmath.default_verifier() is verifier                        # bad options change nothing


def test_works_off_the_main_thread(verifier):
  # math-verify's own signal timeouts raise off the main thread; the pool's workers do not care.
  out = []
  t = threading.Thread(target=lambda: out.append(rewards.math_reward(["\\boxed{2}"], ["2"])))
  t.start()
  t.join()
  np.testing.assert_array_equal(out[0], [1.0])


def test_combine_with_math_accuracy_and_format(verifier):
  config = rewards.default_config()
  config.num_workers = NUM_WORKERS
  config.deadline_s = 5.0
  total, accuracy, parts = rewards.combine(
      config, ["\\boxed{\\frac{1}{2}}", "<answer>0.5</answer>", "\\boxed{3}"], ["0.5", "0.5", "0.5"])
  np.testing.assert_array_equal(accuracy, [1.0, 1.0, 0.0])
  np.testing.assert_array_equal(parts["format"], [1.0, 0.0, 1.0])
  np.testing.assert_allclose(total, [1.5, 1.0, 0.5])
  assert rmath.default_verifier() is verifier         # same pool: the config matched it


# ---------------------------------------------------------------------------------------------
# Hostile completions.

def _hostile_completions() -> list[str]:
  rng = random.Random(0)
  garbage = bytes(rng.getrandbits(8) for _ in range(20_000)).decode("latin-1")
  kinds = [
      "\\boxed{9^{9^{9^{9}}}}",                                 # a power tower
      "x" * 1_000_000 + " so \\boxed{5}",                        # a megabyte of text (answer kept)
      "\\boxed{" + "{" * 5000 + "5" + "}" * 5000 + "}",          # thousands of nested braces
      "\\boxed{" + "{" * 5000 + "5",                             # ... never closed
      "the answer is \\boxed{5",                                 # an unclosed box
      garbage,                                                   # binary garbage
      "\\boxed{" + garbage[:200].replace("}", "") + "}",         # garbage inside a box
      "\\boxed{100000!}",                                        # huge factorials
      "\\boxed{(10^{10})!}",
      "\\boxed{10^{10^{10}}}",
      "\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}",   # deep fractions
      "$1+1$ " * 150_000,                                        # a megabyte of formulas
      "\\boxed{5}",                                              # an honest one
  ]
  return [kinds[i % len(kinds)] for i in range(64)]


def test_hostile_batch_ends_by_deadlines_and_leaves_no_process(verifier):
  completions = _hostile_completions()
  before = set(verifier.pool.pids())
  out = []
  call = threading.Thread(target=lambda: out.append(
      rewards.math_reward(completions, ["5"] * 64, deadline_s=HOSTILE_DEADLINE_S)))
  call.start()
  # A deadline against a hang only (every item may use its whole deadline, in turns, many times over).
  call.join(timeout=HOSTILE_DEADLINE_S * 64 + 300)
  assert not call.is_alive(), "math_reward did not return"
  scores = out[0]
  stats = rewards.last_stats()
  assert scores.shape == (64,) and scores.dtype == np.float32
  honest = [i for i, c in enumerate(completions) if c in ("\\boxed{5}",) or c.endswith("so \\boxed{5}")]
  np.testing.assert_array_equal(np.nonzero(scores)[0], honest)   # only the honest ones (and the tail-kept one)
  assert stats.items == 64 and stats.timeouts >= 5
  assert stats.timeouts + stats.correct + stats.pred_unparsed + stats.errors <= 64
  # Workers that were killed are gone; the pool still has its workers and still works.
  killed = before - set(verifier.pool.pids())
  assert not killed & reward_pool_processes()
  assert len(verifier.pool.pids()) == NUM_WORKERS
  np.testing.assert_array_equal(rewards.math_reward(["\\boxed{5}"], ["5"]), [1.0])
  # Shutdown: every worker is gone (killed ones were already).
  pids = set(verifier.pool.pids())
  assert len(pids) == NUM_WORKERS
  assert pids <= reward_pool_processes()
  rewards.shutdown()
  assert not pids & reward_pool_processes()


def test_hard_kill_path_with_math_verify():
  # With the soft deadline off, a hostile item can only end by the kill: the worker is replaced
  # and nothing is left behind.
  with rewards.MathVerifier(num_workers=1, deadline_s=0.75, soft_fraction=0.0) as v:
    v.pool.start()
    old = set(v.pool.pids())
    scores, stats = v.score(["\\boxed{9^{9^{9^{9}}}}", "\\boxed{2}"], ["5", "2"])
    np.testing.assert_array_equal(scores, [0.0, 1.0])
    assert (stats.timeouts, stats.kills, stats.restarts) == (1, 1, 1)
    pids = set(v.pool.pids())
    assert not old & pids and not old & reward_pool_processes()
  assert not pids & reward_pool_processes()
