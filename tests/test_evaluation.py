"""Evaluation math on hand-worked numbers, and the driver's aggregation with a deterministic fake sampler."""
import json
import math
from itertools import combinations

import numpy as np
import pytest

from jaxghpo.experiments.chains import compare
from jaxghpo import evaluation as ev
from jaxghpo.data.example import Example


# ------------------------------------------------------------------------------------- pass@k
@pytest.mark.parametrize("n,c,k,want", [
    (5, 2, 1, 0.4),        # c / n
    (5, 2, 2, 0.7),        # 1 - C(3,2)/C(5,2) = 1 - 3/10
    (5, 0, 3, 0.0),
    (5, 5, 3, 1.0),
    (5, 3, 3, 1.0),        # k > n - c: every 3-subset holds a correct one
    (10, 1, 10, 1.0),
    (4, 1, 2, 0.5),        # 1 - C(3,2)/C(4,2) = 1 - 3/6
])
def test_pass_at_k_hand_worked(n, c, k, want):
  assert ev.pass_at_k(n, c, k) == pytest.approx(want, abs=1e-12)


def test_pass_at_k_is_vectorised_and_matches_subset_enumeration():
  n = np.array([5, 6, 8, 8])
  c = np.array([2, 1, 3, 0])
  got = ev.pass_at_k(n, c, 3)
  for i in range(4):
    samples = [1] * c[i] + [0] * (n[i] - c[i])
    subsets = list(combinations(samples, 3))
    assert got[i] == pytest.approx(np.mean([any(s) for s in subsets]), abs=1e-12)
  # Large n does not overflow (a binomial of 1000 would).
  assert ev.pass_at_k(1000, 10, 100) == pytest.approx(1 - math.comb(990, 100) / math.comb(1000, 100), rel=1e-9)


def test_pass_at_k_rejects_bad_input():
  with pytest.raises(ValueError, match="at least k=4"):
    ev.pass_at_k(3, 1, 4)
  with pytest.raises(ValueError, match="0 <= c <= n"):
    ev.pass_at_k(3, 4, 1)


def test_avg_at_k():
  assert ev.avg_at_k([[1, 0, 0, 0], [1, 1, 1, 0]]) == 0.5


# --------------------------------------------------------------------------------- voting
def test_majority_vote_and_ties():
  assert ev.majority_vote(["3", "5", "5", None, "3", "5"]) == "5"
  assert ev.majority_vote(["7", "4", "4", "7"]) == "7"          # tie: first seen wins
  assert ev.majority_vote(["4", "7", "7", "4"]) == "4"
  assert ev.majority_vote([None, None]) is None
  assert ev.majority_vote(["a", "b", "b"], weights=[3.0, 1.0, 1.0]) == "a"


# ---------------------------------------------------------------------------- DeepConf helpers
CONF = np.array([4.0, 2.0, 0.0, 6.0, 8.0, 99.0, 99.0])  # last two are padding (length 5)


def test_group_confidence_windows():
  np.testing.assert_allclose(ev.group_confidence(CONF, 2, length=5), [3.0, 1.0, 3.0, 7.0])
  np.testing.assert_allclose(ev.group_confidence(CONF, 3, length=5), [2.0, 8 / 3, 14 / 3])
  np.testing.assert_allclose(ev.group_confidence(CONF, 9, length=5), [4.0])   # shorter than the window
  assert ev.group_confidence(CONF, 2, length=0).shape == (0,)


def test_trace_level_confidences():
  assert ev.lowest_group_confidence(CONF, 2, length=5) == 1.0
  # 4 windows [3, 1, 3, 7]: the lowest 50% are {1, 3} -> 2; 10% still keeps one window -> 1.
  assert ev.bottom_percent_confidence(CONF, 2, length=5, percent=0.5) == 2.0
  assert ev.bottom_percent_confidence(CONF, 2, length=5, percent=0.1) == 1.0
  assert ev.tail_confidence(CONF, 2, length=5) == 7.0
  assert ev.tail_confidence(CONF, 10, length=5) == 4.0
  got = ev.trace_confidences(np.stack([CONF, CONF]), [5, 2], method="lowest_group", window=2)
  np.testing.assert_allclose(got, [1.0, 3.0])


def test_confidence_filtered_vote():
  answers = ["1", "1", "1", "2", "2"]
  conf = [0.1, 0.2, 0.3, 5.0, 4.0]
  assert ev.majority_vote(answers) == "1"
  assert ev.confidence_filtered_vote(answers, conf, keep_frac=0.4) == "2"   # keeps the two confident "2"s
  assert ev.confidence_filtered_vote(answers, conf, keep_frac=1.0) == "2"   # weighted: 9.0 vs 0.6
  assert ev.confidence_filtered_vote(answers, conf, keep_frac=1.0, weighted=False) == "1"
  # keep 3 of 5 (ceil 0.5 * 5): "2", "2" and the best "1".
  assert ev.confidence_filtered_vote(answers, [9.0, 0.2, 0.3, 5.0, 4.0], keep_frac=0.5) == "1"


def test_early_stop_savings():
  lengths = [5, 4, 3]
  windows = [ev.group_confidence([4.0, 2.0, 0.0, 6.0, 8.0], 2),   # [3, 1, 3, 7]: first < 2 at j=1 -> stop after token 2
             ev.group_confidence([5.0, 5.0, 5.0, 5.0], 2),         # never below: no saving
             ev.group_confidence([0.0, 0.0, 0.0], 2)]              # below at j=0 -> ends after 2 tokens
  got = ev.early_stop_savings(windows, lengths, threshold=2.0)
  assert got == {"tokens_total": 12.0, "tokens_kept": 3.0 + 4.0 + 2.0, "tokens_saved": 3.0,
                 "frac_saved": 0.25, "traces_stopped": 2.0}
  assert ev.early_stop_savings(windows, lengths, threshold=2.0, window=2) == got
  # Threshold from warm-up traces: keep the top half -> the median of their confidences.
  assert ev.stop_threshold([1.0, 3.0, 2.0, float("nan")], keep_frac=0.5) == 2.0
  assert ev.stop_threshold([1.0, 2.0, 3.0, 4.0, 5.0], keep_frac=0.25) == 4.0


# -------------------------------------------------------------------------------------- driver
def _examples():
  # Levels 1 and 3; answers are the problem's id as text.
  return [Example(problem_id=pid, problem=f"p{pid}", steps=("s",), answer=str(pid), level=lvl)
          for pid, lvl in [(10, 1), (11, 1), (12, 3), (13, 3)]]


def _fake_generate(calls):
  """Deterministic by example: problem i's sample j is right iff j < correct_count[pid]."""
  correct_count = {10: 4, 11: 2, 12: 1, 13: 0}

  def generate(examples, hint_ratio, num_samples):
    calls.append((len(examples), hint_ratio, num_samples))
    completions, confidences = [], []
    for ex in examples:
      good = correct_count[ex.problem_id]
      completions.append([ex.answer if j < good else "wrong" for j in range(num_samples)])
      confidences.append([2.0 if j < good else 1.0 for j in range(num_samples)])
    return completions, confidences

  return generate


def _score(completions, answers):
  return np.array([float(c == a) for c, a in zip(completions, answers)], np.float32)


def test_evaluate_aggregates_overall_and_per_level(tmp_path):
  calls = []
  metrics, rows = ev.evaluate(_fake_generate(calls), _examples(), k=2, num_samples=4, score_fn=_score,
                              hint_ratio=0.25, batch_size=3, answer_fn=lambda c: None if c == "wrong" else c)
  assert calls == [(3, 0.25, 4), (1, 0.25, 4)]
  # Per problem (n=4): c = 4, 2, 1, 0 -> pass@1 = 1, .5, .25, 0; pass@2 = 1, 1 - 1/6, 1 - 3/6, 0.
  p2 = [1.0, 5 / 6, 0.5, 0.0]
  want = {
      "pass@1": 0.4375, "pass@2": np.mean(p2), "avg@4": 0.4375, "maj@4": 0.75, "conf_maj@4": 0.75,
      "num_problems": 4.0,
      "pass@1/level_1": 0.75, "pass@2/level_1": np.mean(p2[:2]), "avg@4/level_1": 0.75, "maj@4/level_1": 1.0,
      "conf_maj@4/level_1": 1.0, "num_problems/level_1": 2.0,
      "pass@1/level_3": 0.125, "pass@2/level_3": 0.25, "avg@4/level_3": 0.125, "maj@4/level_3": 0.5,
      "conf_maj@4/level_3": 0.5, "num_problems/level_3": 2.0,
  }
  # Without a trace checker the answer pass@1 is pass@1 of the score.
  want.update({"answer_" + key: v for key, v in want.items() if key.startswith("pass@1")})
  assert metrics.keys() == want.keys()
  for key, value in want.items():
    assert metrics[key] == pytest.approx(value, abs=1e-12), key
  assert rows[2]["problem_id"] == 12 and rows[2]["level"] == 3 and rows[2]["problem"] == "p12"
  assert rows[2]["completions"] == ["12", "wrong", "wrong", "wrong"]
  assert rows[2]["scores"] == [1.0, 0.0, 0.0, 0.0] and rows[2]["hint_ratio"] == 0.25

  path = ev.write_rows(ev.eval_rows_path(tmp_path, "test", 100, 0.25), rows)
  assert path == str(tmp_path / "eval" / "test_step000100_hint0.25.jsonl")
  with open(path) as f:
    assert [json.loads(line) for line in f] == rows
  assert ev.prefix_metrics({"pass@1": 0.5}, "eval/test/") == {"eval/test/pass@1": 0.5}


def test_evaluate_without_confidences_and_with_dict_examples():
  def generate(examples, hint_ratio, num_samples):
    return [[ex["answer"]] * num_samples for ex in examples]

  examples = [{"problem_id": 1, "problem": "q", "answer": "x"}]
  metrics, rows = ev.evaluate(generate, examples, k=1, score_fn=_score)
  assert metrics == {"pass@1": 1.0, "answer_pass@1": 1.0, "avg@1": 1.0, "num_problems": 1.0}  # unknown level: no per-level keys
  assert rows[0]["level"] == -1 and "confidences" not in rows[0]
  with pytest.raises(ValueError, match="expected 3 per example"):
    ev.evaluate(lambda e, h, n: [["x"] * 2], examples, k=1, num_samples=3, score_fn=_score)
  with pytest.raises(ValueError, match="num_samples=2 is below k=4"):
    ev.evaluate(generate, examples, k=4, num_samples=2, score_fn=_score)


# --------------------------------------------------------------- valid pass@1 and the fixed set
def test_valid_and_answer_pass_with_the_chains_checker_and_a_gather(monkeypatch):
  """Host 0 of two holds the first 2 of 3 problems (unequal shares), host 1 the last: host 0 makes the
  largest share's calls, and the metrics are over all 3 problems (rows gathered with their counts)."""
  import jax
  from jaxghpo.data.tasks import chains
  from jaxghpo.parallel import hosts
  exs = [chains.make_example("k+3-5+2="), chains.make_example("a+1="), chains.make_example("b+1=")]
  outs = {exs[0].problem: ["k+3=n-5+2;n-5=i+2;i+2=k", "k+3=n-5+2;n-5=k", "k+3=n-5+2;n-5=i+2;i+2=z", "x"],
          exs[1].problem: ["a+1=b", "a+1=b", "b", "a+1=c"], exs[2].problem: ["b+1=c"] * 4}
  calls = []
  gen = lambda chunk, ratio, n: (calls.append(len(chunk)) or [outs[e.problem] for e in chunk], None,
                                 [{"hint": ""} for _ in chunk])
  score = lambda texts, answers: [float(chains.extract_answer(t) == a) for t, a in zip(texts, answers)]
  other_host = {"level": np.array([1]), "correct": np.ones((1, 4), bool), "valid": np.ones((1, 4), bool),
                "answer_right": np.ones((1, 4), bool)}
  gathered = []

  def allgather_rows(arrays):
    gathered.append({k: v.shape for k, v in arrays.items()})
    return {k: np.concatenate([v, other_host[k]]) for k, v in arrays.items()}

  monkeypatch.setattr(hosts, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  monkeypatch.setattr(hosts, "agreed_max", lambda x: max(int(x), 1))
  monkeypatch.setattr(hosts, "allgather_rows", allgather_rows)
  check = lambda ex, hint, text: tuple(chains.check_completion(ex.problem, hint + text)[:2])
  m, rows = ev.evaluate(gen, exs, k=1, num_samples=4, batch_size=1, score_fn=score, check_fn=check,
                        multihost=True)
  assert calls == [1, 1] and len(rows) == 2  # host 0's share: problems 0 and 1
  # level 3: 1 valid of 4, answers right 2 of 4 (the early "k" is a lucky shortcut); level 1: host 0's
  # problem 2 valid, 3 right, host 1's 4 of 4
  assert m["valid_pass@1/level_3"] == 0.25 and m["answer_pass@1/level_3"] == 0.5
  assert m["valid_pass@1/level_1"] == 0.75 and m["answer_pass@1/level_1"] == 0.875
  assert m["num_problems"] == 3  # both hosts counted
  assert rows[0]["valid"] == [True, False, False, False] and rows[1]["hint"] == ""
  assert gathered == [{"level": (2,), "correct": (2, 4), "valid": (2, 4), "answer_right": (2, 4)}]


def test_more_calls_than_problems_and_scores_from_the_sampler(monkeypatch):
  """A host with fewer problems than the agreed calls still calls generate_fn (collectives), with an
  empty chunk; without score_fn the extras' scores are the samples' correctness."""
  from jaxghpo.parallel import hosts
  calls = []

  def gen(chunk, ratio, n):
    calls.append(len(chunk))
    return [["x"] * n for _ in chunk], None, [{"scores": [1.0, 0.0]} for _ in chunk]

  monkeypatch.setattr(hosts, "agreed_max", lambda x: 3)
  m, rows = ev.evaluate(gen, _examples()[:1], k=1, num_samples=2, batch_size=1, multihost=True)
  assert calls == [1, 0, 0] and rows[0]["correct"] == [True, False] and m["pass@1"] == 0.5
  with pytest.raises(ValueError, match="scores"):
    ev.evaluate(lambda chunk, r, n: [["x"] * n for _ in chunk], _examples()[:1], k=1)


def test_fixed_eval_set_is_fixed_and_prefix_stable():
  from jaxghpo.data.tasks import chains
  a = ev.fixed_eval_sets(chains, 16)
  b = ev.fixed_eval_sets(chains, 64)
  assert list(a) == ["1", "2", "3", "4", "5", "6", "7", "8", "ood_ops:3", "ood_ops:4"]
  for key in a:
    assert [e.problem for e in a[key]] == [e.problem for e in b[key][:16]]  # a quick set is a prefix
    assert {e.level for e in a[key]} == {int(key.split(":")[-1])}
  assert all(chains.split_of(e.problem) == "test" for key in "123456" for e in b[key])
  with pytest.raises(ValueError, match="num_problems"):
    ev.fixed_level_set(chains, "test", 3, 0)


def test_paired_bootstrap_hand_worked():
  from jaxghpo import report
  a = [[0.0, 0.0, 0.5, 1.0]] * 2
  same = compare.paired_bootstrap(a, a)
  assert same["diff"] == 0.0 and same["low"] == same["high"] == 0.0 and same["p"] == 1.0
  better = compare.paired_bootstrap(a, [[0.5, 0.5, 1.0, 1.0], [0.5, 0.5, 1.0, 1.0]])
  assert better["diff"] == pytest.approx(0.375) and better["low"] > 0 and better["p"] < 0.01
  assert (better["seeds"], better["problems"]) == (2, 4)
