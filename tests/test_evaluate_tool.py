"""tools/evaluate.py: the trainer's evaluator as a tool. The same metrics as the trainer's evaluation for the
same policy, problems and seed; the contract JSON line on the shipped base policy; TIP and DeepConf online
from the config."""
import json
import os
import sys

import pytest

from jaxghpo import evaluation, train
from tests.train_fixtures import make_tiny_policy, tiny_config

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
import evaluate as evaluate_tool  # noqa: E402
from study import load_config  # noqa: E402


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
  return make_tiny_policy(str(tmp_path_factory.mktemp("policy")))


def test_the_tool_and_the_trainer_give_the_same_metrics(policy, tmp_path, monkeypatch, capsys):
  """The trainer's step-0 evaluation (its config: a sampled and a greedy evaluator) and the tool on the same
  config file, policy, seed and sampler width: the sampled numbers agree exactly, level by level."""
  config = tiny_config(policy)  # configs/smoke.py, small: easy = level 2, hard = level 3, 4 problems each
  P, n = int(config.data.prompts_per_step), int(config.eval.num_samples)
  trainer = train.Trainer(config, str(tmp_path / "run"))
  try:
    metrics = trainer.evaluate(0)
  finally:
    trainer.checkpointer.close()
  monkeypatch.setattr(evaluate_tool, "load_config", lambda spec: tiny_config(policy))
  out = evaluate_tool.main([f"--model={policy}", "--config=tiny", f"--num_problems={config.eval.num_problems}",
                            f"--num_samples={n}", f"--batch={P}", f"--seed={config.seed}",
                            f"--out={tmp_path / 'rows'}"])
  assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == json.loads(json.dumps(out))
  assert list(out["valid_pass@1"]) == ["2", "3"]
  for split, level in (("easy", 2), ("hard", 3)):
    prefix = f"eval/{split}/hint0/sampled/"
    assert out["valid_pass@1"][str(level)] == metrics[f"{prefix}valid_pass@1/level_{level}"]
    assert out["answer_pass@1"][str(level)] == metrics[f"{prefix}answer_pass@1/level_{level}"]
    # The very samples: the tool's rows are the trainer's rows.
    trainer_rows = [json.loads(line) for line in open(evaluation.eval_rows_path(tmp_path / "run", split, 0, 0.0,
                                                                                tag="sampled"))]
    tool_rows = [json.loads(line) for line in open(tmp_path / "rows" / f"{level}.jsonl")]
    assert [r["completions"] for r in tool_rows] == [r["completions"] for r in trainer_rows]
  assert out["num_problems"] == 4 and out["num_samples"] == n


def test_evaluate_tool_ends_with_the_contract_json_line(capsys):
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
  """The tool's evaluator with the config's TIP penalty (strong enough that the penalised letters never
  appear) and DeepConf online (its metrics beside the offline vote)."""
  config = load_config("configs/default.py")
  config.rollout.tip_penalty, config.rollout.tip_window, config.rollout.tip_phrases = 1e4, 10**6, ("a", "b", "c")
  config.eval.deepconf.enabled, config.eval.deepconf.warmup_traces, config.eval.deepconf.window = True, 2, 4
  t = config.data.task_configs.chains
  t.easy_levels = t.mid_levels = t.ood_levels = t.ood_ops_levels = ()
  t.hard_levels = (5,)
  config = evaluate_tool.tool_config(config, model="builtin:chains_base", num_problems=2, num_samples=4, batch=2)
  parts, params = evaluate_tool.build(config)
  [(spec, split, m, rows)] = list(evaluation.Evaluator(config, parts).sampled(params, 0))
  prefix = "eval/hard/hint0/sampled/"
  assert (split, spec.samples) == ("hard", 4)
  assert m[prefix + "num_problems"] == 2 and 0.0 <= m[prefix + "valid_pass@1"] <= 1.0
  assert m[prefix + "deepconf/offline_tokens"] > 0 and 0.0 <= m[prefix + "deepconf/tokens_saved_frac"] < 1.0
  for row in rows:
    assert row["deepconf"]["online_traces"] == 2 and len(row["token_confidences"]) == 4
    for text in row["completions"]:  # the completions (the problem is the prompt, not decoded)
      assert not set(text) & {"a", "b", "c"}, (row["problem"], text)
