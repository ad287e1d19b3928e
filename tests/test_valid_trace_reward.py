"""The valid-trace reward ("valid_trace"): 1 only for a trace whose every written step is right, with the
prompt-side hint as the start of the trace; wired from the group sampler through experiment.reward_fn."""
import jax
import numpy as np
import pytest

from jaxghpo import experiment, rewards, train
from jaxghpo.data.tasks import chains
from tests.train_fixtures import tiny_config


def _problem(level: int, seed: int = 0):
  return chains.generate("test", 1, seed, levels={level: 1.0})[0]


def test_valid_trace_scores_whole_traces_with_their_hint():
  ex = _problem(4)
  trace = chains.STEP_SEP.join(ex.steps)
  shortcut = ex.steps[-1]  # the right answer line with the steps skipped
  hint = ex.steps[0] + chains.STEP_SEP
  rest = chains.STEP_SEP.join(ex.steps[1:])
  check = lambda problem, text: chains.check_completion(problem, text)[0]
  cfg = rewards.default_config()
  cfg.weights = {"valid_trace": 1.0, "exact": 0.0}
  cfg.accuracy = "exact"
  completions = [trace, shortcut, rest, rest]
  contexts = ["", "", hint, ""]  # the last continues a hint it was not given: invalid
  total, accuracy, parts = rewards.combine(cfg, completions, [ex.answer] * 4, extract=chains.extract_answer,
                                           check_trace=check, problems=[ex.problem] * 4, contexts=contexts)
  assert parts["valid_trace"].tolist() == [1.0, 0.0, 1.0, 0.0]
  assert accuracy.tolist() == [1.0, 1.0, 1.0, 1.0] and total.tolist() == [1.0, 0.0, 1.0, 0.0]
  with pytest.raises(ValueError, match="valid_trace needs problems with a trace checker"):
    rewards.combine(cfg, [trace], [ex.answer], extract=chains.extract_answer)


def test_valid_trace_needs_the_chains_task_at_start():
  cfg = tiny_config("builtin:chains_base", **{"rewards.weights": {"valid_trace": 1.0}, "data.source": "files",
                                              "data.files": ("x.jsonl",)})
  with pytest.raises(ValueError, match="config.rewards.weights.*valid_trace"):
    experiment.validate(cfg, num_devices=8, num_processes=1)


@pytest.mark.parametrize("corruption", ["none", "garble"])
def test_group_sampler_scores_the_hint_with_the_completion(tmp_path, corruption):
  """With the shipped base policy (which writes valid level-3 traces): a true hint in the prompt plus the
  completion is a valid trace; a garbled one is not, though the answer is right."""
  cfg = tiny_config("builtin:chains_base", **{"rewards.weights": {"valid_trace": 1.0},
                                              "hints.corruption": corruption, "data.task_configs.chains.train_levels": {"4": 1.0},
                                              "rollout.max_prompt_len": 64, "rollout.max_new_tokens": 48})
  trainer = train.Trainer(cfg, str(tmp_path / "run"))
  examples = [ex for ex in trainer.setup.problems.train if ex.level == 4][:4]
  groups = trainer.setup.rollout(trainer.params, examples, np.full(4, 0.75, np.float32), jax.random.key(0))
  hinted = [bool(h) for h in groups.hint_text]
  assert all(hinted)
  for i, ex in enumerate(examples):
    for j in range(groups.completions.shape[1]):
      valid, right, _ = chains.check_completion(ex.problem, groups.hint_text[i] + groups.completions[i, j])
      assert groups.rewards[i, j] == float(valid)
      assert groups.accuracy[i, j] == float(chains.extract_answer(groups.completions[i, j]) == ex.answer)
  if corruption == "none":
    assert groups.rewards.mean() > 0.5  # the base policy continues a 75% hint of level 4 validly
  else:
    assert groups.rewards.max() == 0.0 and groups.accuracy.max() == 1.0  # right answers, invalid traces
