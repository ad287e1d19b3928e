"""The shipped base policy (jaxghpo/assets/chains_base): its report's competence ramp, the report
against a fresh evaluation of a subset, and tools/evaluate.py's output contract."""
import json
import os
import sys

import numpy as np
import pytest

from jaxghpo import evaluation, experiment
from jaxghpo.data import tokenizer as tok_lib
from jaxghpo.data.tasks import chains

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = experiment.resolve_model_path("builtin:chains_base")
sys.path.insert(0, os.path.join(ROOT, "tools"))


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


def test_evaluate_tool_ends_with_the_contract_json_line(capsys):
  import evaluate as evaluate_tool
  out = evaluate_tool.main(["--model=builtin:chains_base", "--config=configs/default.py", "--num_problems=2",
                            "--num_samples=2"])
  last = capsys.readouterr().out.strip().splitlines()[-1]
  line = json.loads(last)
  assert line == json.loads(json.dumps(out))
  keys = ["1", "2", "3", "4", "5", "6", "7", "8", "ood_ops:3", "ood_ops:4"]
  for metric in ("valid_pass@1", "answer_pass@1"):
    assert list(line[metric]) == keys and all(0.0 <= v <= 1.0 for v in line[metric].values())
  assert all(line["valid_pass@1"][k] <= line["answer_pass@1"][k] for k in keys)


def test_evaluate_tool_decodes_with_tip_and_deepconf_online():
  """The tool's generate_fn through the one evaluator with the config's TIP penalty (strong enough that
  the penalised letters never appear) and DeepConf online (its metrics beside the offline vote)."""
  import evaluate as evaluate_tool
  from jaxghpo import deepconf
  from study import load_config
  config = load_config("configs/default.py")
  config.model.path = "builtin:chains_base"
  config.rollout.tip_penalty, config.rollout.tip_window, config.rollout.tip_phrases = 1e4, 10**6, "a,b,c"
  config.eval.deepconf.enabled, config.eval.deepconf.warmup_traces, config.eval.deepconf.window = True, 2, 4
  mesh = experiment.make_mesh(config)
  model, _, tokenizer = experiment.load_policy(config, mesh)
  sets = {"5": evaluate_tool.eval_sets(config, 2)["5"]}
  generate = evaluate_tool.make_generate(config, model, tokenizer, mesh, sets, num_samples=4, batch=2, seed=0)
  score = lambda texts, answers: [float(chains.extract_answer(t) == a) for t, a in zip(texts, answers)]
  m, rows = evaluation.evaluate(generate, sets["5"], k=1, num_samples=4, batch_size=2, score_fn=score,
                                check_fn=evaluation.chains_check, multihost=True,
                                deepconf=deepconf.from_config(config.eval, 4), vote_fn=chains.extract_answer)
  assert m["num_problems"] == 2 and 0.0 <= m["valid_pass@1"] <= 1.0
  assert m["deepconf/offline_tokens"] > 0 and 0.0 <= m["deepconf/tokens_saved_frac"] < 1.0
  for row in rows:
    assert row["deepconf"]["online_traces"] == 2 and len(row["token_confidences"]) == 4
    for text in row["completions"]:  # the completions (the problem is the prompt, not decoded)
      assert not set(text) & {"a", "b", "c"}, (row["problem"], text)
