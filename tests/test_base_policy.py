"""The shipped base policy (jaxghpo/assets/chains_base): its report's competence ramp and the report
against a fresh evaluation of a subset (tools/evaluate.py on it: tests/test_evaluate_tool.py)."""
import json
import os

import numpy as np
import pytest

from jaxghpo import evaluation, experiment
from jaxghpo.data import tokenizer as tok_lib
from jaxghpo.data.tasks import chains

BASE = experiment.resolve_model_path("builtin:chains_base")


def _report():
  with open(os.path.join(BASE, "base_policy_report.json")) as f:
    return json.load(f)


def test_report_holds_a_profile_per_level_with_histograms():
  r = _report()
  keys = ["1", "2", "3", "4", "5", "6", "7", "8", "ood_ops:3", "ood_ops:4"]
  assert list(r["profile"]) == keys and list(r["sampled"]["valid_pass@1"]) == keys
  for key in keys:
    row = r["profile"][key]
    assert len(row["per_problem"]) == row["num_problems"] == r["num_problems"] >= 128
    assert sum(row["hist_counts"]) == row["num_problems"]
    assert row["valid_pass@1"] == pytest.approx(np.mean(row["per_problem"]), abs=1e-4)
  # The recorded verdict is the ramp's bands applied to the recorded numbers.
  for level, (lo, hi) in r["ramp"].items():
    assert r["inside_ramp"][level] == (lo <= r["profile"][level]["valid_pass@1"] <= hi)
  # Competence falls with the level (a ramp, not a cliff).
  means = [r["profile"][str(lv)]["valid_pass@1"] for lv in range(1, 7)]
  assert means[2] > means[3] > means[4] > means[5] > 0


def test_per_problem_success_is_intermediate_not_bimodal():
  r = _report()
  for level in ("4", "5"):
    p = np.asarray(r["profile"][level]["per_problem"])
    assert np.mean((p > 0.01) & (p < 0.99)) >= 0.9, (level, np.quantile(p, [0.1, 0.5, 0.9]))


def test_report_matches_a_fresh_exact_evaluation_of_a_subset():
  from jaxghpo import models
  r = _report()
  model, _ = models.from_pretrained(BASE)
  tok = tok_lib.load(BASE)
  sets = evaluation.fixed_eval_sets(chains, 8)
  for key in ("2", "4", "5", "6"):
    fresh = np.exp(evaluation.true_trace_logprob(model, tok, sets[key]))
    np.testing.assert_allclose(fresh, r["profile"][key]["per_problem"][:8], rtol=2e-3, atol=1e-5)


def test_sampled_profile_agrees_with_the_exact_one():
  r = _report()
  n = r["sampled"]["num_problems"] * r["sampled"]["num_samples"]
  for key, row in r["profile"].items():
    exact, sampled = row["valid_pass@1"], r["sampled"]["valid_pass@1"][key]
    assert abs(sampled - exact) <= 4 * np.sqrt(max(exact * (1 - exact), 1e-4) / n) + 0.01, key
