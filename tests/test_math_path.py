"""The real user path through the RL loop: MATH-style JSONL rows (LaTeX solutions, \\boxed answers), a tiny
random Qwen2 with a byte-level BPE tokenizer trained here on math text and Qwen's chat template, the
"boxed" style, math-verify and format rewards in their worker pool, two GHPO steps with retries, and
evaluation avg@k on an eval file.

Checked: every hint ends on a solution-step boundary; the hint tokens of every trained prompt (the
batch's HINT segment) are exactly the hint and not the assistant header; every reward equals
math-verify's (and the format reward's) on the decoded completion. A random policy solves nothing, so
the first sample of one problem per call is replaced by a correct answer: the rewards then hold both
values, and GHPO retries only the groups that stayed all-wrong.
"""
import json
import os

import jax
import numpy as np
import pytest

from configs import base
from jaxghpo import evaluation, rewards, rl, train
from jaxghpo import rl_step as rl_step_lib
from tests import hf_fixtures

P, G = 4, 2
HEADER = "<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("math")
  policy = hf_fixtures.make_math_policy(str(root / "policy"))
  rows = hf_fixtures.math_rows(40)
  for name, part in (("train.jsonl", rows[:32]), ("eval.jsonl", rows[32:])):
    with open(root / name, "w") as f:
      f.writelines(json.dumps(r) + "\n" for r in part)
  c = base.get_base_config()
  c.model.path = policy
  c.num_steps = 2
  c.checkpoint_every_steps = 100
  c.export_at_end = False
  c.data.source, c.data.files, c.data.style = "files", (str(root / "train.jsonl"),), "boxed"
  c.data.prompts_per_step = P
  c.rollout.group_size = G
  c.rollout.max_prompt_len = 224
  c.rollout.max_new_tokens = 40
  c.rewards.weights = {"math": 1.0, "format": 0.5}
  c.rewards.accuracy = "math"
  c.rewards.format_pattern = "boxed"
  c.curriculum.mode = "ghpo"
  c.rl.learning_rate = 1e-4
  c.eval.files = (str(root / "eval.jsonl"),)
  c.eval.num_problems = 8
  c.eval.num_samples = 2
  c.evals.greedy = evaluation.evaluator_config(temperature=0.0, samples=1)
  return c, str(root / "run")


def test_math_path_through_the_rl_loop(setup, monkeypatch):
  config, workdir = setup
  trainer = train.Trainer(config, workdir)
  trainer.restore()
  tok, sep = trainer.setup.tokenizer, "\n"
  pad_id = tok.pad_token_id or 0
  rollouts, batches, correct_rows, solved = [], [], [], []
  group_sampler = trainer.setup.rollout

  def with_one_right_answer(sampler):
    def call(params, prompts, **kw):  # sample 0 of the call's first problem answers correctly
      out = sampler(params, prompts, **kw)
      if not prompts:
        return out
      tokens, lengths = np.array(out.tokens), np.array(out.lengths)
      ids = tok.encode(f"So the answer is $\\boxed{{{pending[0].answer}}}$.") + [tok.eos_token_id]
      tokens[0] = pad_id
      tokens[0, :len(ids)] = ids
      lengths[0] = len(ids)
      correct_rows.append(pending[0].problem_id)
      return out.replace(tokens=tokens, lengths=lengths)
    return call

  group_sampler.samplers = {p: with_one_right_answer(s) for p, s in group_sampler.samplers.items()}
  pending = []

  def recording_rollout(params, examples, ratios, rng, **kw):
    pending[:] = list(examples)
    groups = group_sampler(params, examples, ratios, rng, **kw)
    rollouts.append((list(examples), np.asarray(ratios), groups))
    solved.append(float(groups.accuracy.sum()))  # now: a retry later writes its groups into a copy
    return groups

  to_batch = rl_step_lib.groups_lib.to_batch

  def recording_to_batch(groups, adv, keep, **kw):
    batch = to_batch(groups, adv, keep, **kw)
    batches.append((groups, batch))
    return batch

  trainer.setup.rollout = recording_rollout
  monkeypatch.setattr(rl_step_lib.groups_lib, "to_batch", recording_to_batch)
  metrics = [trainer.rl_step(step, jax.random.fold_in(trainer.rng, step))[0] for step in range(2)]
  jax.block_until_ready(trainer.params)

  # GHPO: the all-wrong groups were re-sampled with longer hints; the group with a right answer was not.
  assert all(m["retried_groups"] > 0 for m in metrics)
  assert any(r.max() > 0 for _, ratios, _ in rollouts for r in [ratios])
  first_attempts = [g for ex, ratios, g in rollouts if len(ex) == P]
  assert all(g.accuracy[0, 0] == 1.0 for g in first_attempts)

  for examples, ratios, g in rollouts:
    # Hints end on a solution-step boundary (a whole number of steps, then the separator).
    for ex, ratio, hint in zip(examples, ratios, g.hint_text):
      if ratio > 0:
        n = hint.count(sep)
        assert n >= 1 and hint == sep.join(ex.steps[:n]) + sep, (ratio, hint)
      else:
        assert hint == ""
    # Rewards are math-verify's and the format reward's on the decoded completion.
    decoded = []
    for row, n in zip(g.tokens.reshape(-1, g.tokens.shape[-1]), g.lengths.reshape(-1)):
      ids = [int(t) for t in row[:n]]
      decoded.append(tok.decode(ids[:-1] if ids and ids[-1] == tok.eos_token_id else ids))
    assert decoded == [str(t) for t in g.completions.reshape(-1)]
    answers = [ex.answer for ex in examples for _ in range(G)]
    verified = rewards.math_reward(decoded, answers)
    fmt = rewards.format_reward(decoded, "boxed")
    np.testing.assert_array_equal(g.accuracy.reshape(-1), verified)
    np.testing.assert_allclose(g.rewards.reshape(-1), verified + 0.5 * np.asarray(fmt), rtol=1e-6)
  assert sum(solved) == len(correct_rows) > 0  # the injected answers, and nothing the random policy wrote

  # The HINT tokens of every trained prompt are exactly the hint; the assistant header follows them.
  assert len(batches) == 2
  for g, batch in batches:
    tokens, segments = np.asarray(batch.tokens), np.asarray(batch.segment_ids)
    for r in range(tokens.shape[0]):
      hint = g.hint_text[r // G]
      hint_cols = np.flatnonzero(segments[r] == rl.HINT)
      assert tok.decode(tokens[r, hint_cols].tolist()) == hint
      if hint:
        assert np.all(np.diff(hint_cols) == 1)
        after = tokens[r, hint_cols[-1] + 1:batch.prompt_len].tolist()
        assert tok.decode(after) == HEADER and np.all(segments[r, hint_cols[-1] + 1:batch.prompt_len] == rl.PROMPT)

  # Evaluation on the eval file: avg@k and pass@k of its 8 problems, and its rows written.
  out = trainer.evaluate(2)
  assert out["eval/eval/hint0/sampled/num_problems"] == 8.0
  assert 0.0 <= out["eval/eval/hint0/sampled/avg@2"] <= 1.0 and "eval/eval/hint0/greedy/pass@1" in out
  assert os.listdir(os.path.join(workdir, "eval"))
  trainer.writer.close()
  trainer.checkpointer.close()
