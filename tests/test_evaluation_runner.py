"""The named evaluators of config.evals (evaluation/specs.py) and the runner over them (evaluation/runner.py),
with a fake evaluation sampler: which evaluators run at which step, the metric names and row files, the
trace check of hint + completion, and the errors that name the config key at fault."""
import os
import types

import numpy as np
import pytest

from configs import base
from jaxghpo import evaluation, experiment, validation
from jaxghpo.data.tasks import chains
from jaxghpo.evaluation import specs

EASY = [chains.make_example(p) for p in ("a+1=", "b+1=", "c+2=")]
HARD = [chains.make_example(p) for p in ("k+3-5+2=", "d+1-2+3=")]


def _config(**evals):
  c = base.get_base_config()
  c.data.prompts_per_step, c.rollout.group_size, c.eval.num_samples, c.eval_every_steps = 4, 4, 2, 10
  for name, e in evals.items():
    c.evals[name] = e
  return c


class FakeSampler:
  """The evaluation GroupSampler's interface: every sample writes the problem's valid trace after its hint
  (so valid_pass@1 is 1 with the hint as context), except that greedy calls answer with one wrong letter."""

  def __init__(self):
    self.calls = []

  def __call__(self, params, examples, ratios, rng, *, width, temperature, stop_threshold=None, stop_window=1):
    self.calls.append({"n": len(examples), "width": width, "temperature": temperature,
                       "ratios": [float(r) for r in ratios]})
    G = 4
    hints, completions = [], []
    for ex, ratio in zip(examples, ratios):
      k = int(round(float(ratio) * len(ex.steps)))
      hint = "".join(s + ex.step_sep for s in ex.steps[:k])
      rest = ex.step_sep.join(ex.steps[k:])
      hints.append(hint)
      completions.append(["z" if temperature == 0 else rest] * G)
    accuracy = np.asarray([[float(temperature > 0)] * G for _ in examples], np.float32).reshape(len(examples), G)
    return types.SimpleNamespace(completions=np.asarray(completions, object).reshape(len(examples), G),
                                 hint_text=np.asarray(hints, object), accuracy=accuracy, confidence=None,
                                 lengths=np.ones((len(examples), G), np.int32), stopped=None)


def _setup(sampler):
  problems = experiment.Problems(train=[], eval_sets={"easy": list(EASY), "hard": list(HARD)},
                                 extract_answer=chains.extract_answer,
                                 check_completion=lambda p, text: tuple(chains.check_completion(p, text)[:2]))
  return types.SimpleNamespace(problems=problems, eval_rollout=sampler)


def test_base_config_has_one_sampled_evaluator_over_every_set():
  c = _config()
  [spec] = specs.specs(c)
  assert (spec.name, spec.splits, spec.hint_ratio, spec.temperature, spec.mode) == ("sampled", (), 0.0, 1.0, "sampled")
  assert spec.samples == 2 and spec.every == 10  # eval.num_samples, eval_every_steps
  assert spec.split_names(["easy", "hard"]) == ["easy", "hard"]


def test_evaluators_run_when_due_with_todays_names(tmp_path):
  c = _config(greedy=evaluation.evaluator_config(temperature=0.0, samples=1),
              hinted=evaluation.evaluator_config(splits=("hard",), hint_ratio=0.5, every=5))
  sampler = FakeSampler()
  ev = evaluation.Evaluator(c, _setup(sampler), str(tmp_path))
  out = ev(None, 0)
  for split in ("easy", "hard"):
    assert out[f"eval/{split}/hint0/sampled/valid_pass@1"] == 1.0 and f"eval/{split}/hint0/sampled/pass@2" in out
    assert out[f"eval/{split}/hint0/greedy/pass@1"] == 0.0 and f"eval/{split}/hint0/greedy/pass@2" not in out
  # The hinted evaluator: the hint is context, the checker reads hint + completion.
  assert out["eval/hard/hint0.5/sampled/valid_pass@1"] == 1.0 and "eval/easy/hint0.5/sampled/pass@1" not in out
  assert out["eval/hard/hint0.5/sampled/num_problems"] == 2.0
  files = sorted(os.listdir(tmp_path / "eval"))
  assert files == ["easy_step000000_hint0.00_greedy.jsonl", "easy_step000000_hint0.00_sampled.jsonl",
                   "hard_step000000_hint0.00_greedy.jsonl", "hard_step000000_hint0.00_sampled.jsonl",
                   "hard_step000000_hint0.50_sampled.jsonl"]
  assert all(call["width"] == 4 for call in sampler.calls)
  # Between the run's ends only the evaluators due at the step: every=5 at 5; every=0 (eval_every_steps=10) at 10.
  assert [ev.due(s) for s in (3, 5, 10)] == [False, True, True]
  assert set(ev(None, 5, due_only=True)) == {k for k in out if "/hint0.5/" in k}
  assert set(ev(None, 10, due_only=True)) == set(out)
  assert ev(None, 7, due_only=True) == {}
  assert set(ev(None, 7)) == set(out)  # before and after training: every evaluator
  assert ev(None, 0, sampled=False) == {}  # no exact sets: nothing
  # The rows are today's: one per problem, hint and per-sample flags included.
  rows = [__import__("json").loads(line) for line in open(tmp_path / "eval" / "hard_step000000_hint0.50_sampled.jsonl")]
  assert [r["problem"] for r in rows] == [ex.problem for ex in HARD] and rows[0]["valid"] == [True, True]
  assert rows[0]["hint"] and rows[0]["hint_ratio"] == 0.5


def test_the_trace_check_reads_the_hint_and_the_completion():
  ev = evaluation.Evaluator(_config(), _setup(FakeSampler()))
  assert ev.check_fn(HARD[0], "k+3=n-5+2;", "n-5=i+2;i+2=k") == (True, True)
  assert ev.check_fn(HARD[0], "", "n-5=i+2;i+2=k") == (False, True)
  no_check = _setup(FakeSampler())
  no_check.problems.check_completion = None
  assert evaluation.Evaluator(_config(), no_check).check_fn is None


@pytest.mark.parametrize("evals, old, match", [
    ({"x": evaluation.evaluator_config(splits=("hard",))}, {}, None),
    ({"x": {"splits": "hard", "hint_ratio": 0.0, "temperature": 1.0, "samples": 0, "every": 0}}, {},
     r"config.evals.x.splits='hard': must be a tuple"),
    ({"g": evaluation.evaluator_config(temperature=0.0)}, {}, r"config.evals.g.samples=0: a greedy evaluator"),
    ({"x": evaluation.evaluator_config(samples=8)}, {}, r"config.evals.x.samples=8: .*group_size=4"),
    ({"x": evaluation.evaluator_config(hint_ratio=1.5)}, {}, r"config.evals.x.hint_ratio=1.5"),
    ({"x": {"splits": (), "hint_ratio": 0.0, "temperature": 1.0, "samples": 0}}, {}, r"missing keys \['every'\]"),
    ({}, {"hint_ratios": "0.0,0.5"}, r"config.eval.hint_ratios was replaced by config.evals"),
    ({}, {"greedy": True}, r"config.eval.greedy was replaced by config.evals"),
])
def test_evaluator_fields_are_checked_naming_the_key(evals, old, match):
  c = _config(**evals)
  for key, value in old.items():
    c.eval[key] = value
  if match is None:
    specs.specs(c)
    experiment.validate_values(c)
    return
  with pytest.raises(validation.StartupError, match=match):
    specs.specs(c)
  with pytest.raises(validation.StartupError, match=match.split(":")[0]):
    experiment.validate_values(c)  # the run's validation names the same key (check_ranges may word it)


def test_splits_must_exist_and_no_two_evaluators_measure_the_same_thing():
  with pytest.raises(validation.StartupError, match=r"config.evals.h.splits=\('hardd',\): \['hardd'\] are not"):
    evaluation.Evaluator(_config(h=evaluation.evaluator_config(splits=("hardd",))), _setup(FakeSampler()))
  with pytest.raises(validation.StartupError, match="config.evals.again and config.evals.sampled both measure"):
    evaluation.Evaluator(_config(again=evaluation.evaluator_config(splits=("hard",))), _setup(FakeSampler()))
  c = _config(hinted=evaluation.evaluator_config(splits=("hard",), hint_ratio=0.5),
              more=evaluation.evaluator_config(splits=("hard",), hint_ratio=0.75))
  assert specs.split_hint_ratios(c, ["easy", "hard"]) == {"easy": 0.0, "hard": 0.75}
