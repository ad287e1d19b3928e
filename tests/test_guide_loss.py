"""The Guide loss (rl.guide) against hand-worked numbers: which tokens count, the ratio against the hinted
sampling distribution, the clipping; its batch layout; its validation; and the budget counting rule."""
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxghpo import budget, derived, rl
from jaxghpo.data import templates
from jaxghpo.data import tokenizer as tok_lib
from jaxghpo.data.tasks import chains
from jaxghpo.rollout import groups as groups_lib

jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
P_, H_, R_ = rl.PROMPT, rl.HINT, rl.RESPONSE


def guide_example_batch():
  """One row: prompt [7, 8] then hint [5, 6] (prompt columns, response rendering), sampled response [9, 4]
  with sampler logprobs [-0.5, -1.0], advantage +1."""
  batch = rl.make_batch(np.array([[0, 7, 8, 5, 6]]), np.array([[0, 1, 1, 1, 1]], bool), np.array([[9, 4, 0]]),
                        np.array([[1, 1, 0]], bool), np.array([1.0]), np.array([[-0.5, -1.0, 0.0]]),
                        prompt_hint=np.array([[0, 0, 0, 1, 1]], bool))
  return batch, np.array([[0, 0, 0, 1, 1]], bool)


def test_guide_batch_trains_hint_and_response_tokens_after_the_unhinted_prompt():
  batch, hint = guide_example_batch()
  assert batch.segment_ids.tolist() == [[0, P_, P_, H_, H_, R_, R_, 0]]
  g = rl.guide_batch(batch, hint)
  # The hint tokens become policy-gradient tokens; the prompt before them is context; pads stay out.
  assert g.prompt_len == 1
  assert np.asarray(g.segment_ids).tolist() == [[0, P_, P_, R_, R_, R_, R_, 0]]
  assert np.asarray(g.loss_mask()).astype(int).tolist() == [[0, 0, 0, 1, 1, 1, 1, 0]]
  assert not np.asarray(g.response_hint_mask()).any()  # no hint-NLL tokens: the hint is trained as response
  # Old logprobs: 0 (probability 1: given, not drawn) on the hint; the sampler's on the sampled tokens.
  np.testing.assert_allclose(np.asarray(g.old_logp), [[0, 0, 0, 0, 0, -0.5, -1.0, 0]])
  with pytest.raises(ValueError, match="prompt_hint"):
    rl.guide_batch(batch, np.array([[1, 0, 0, 1, 1]], bool))  # on a pad / the first column


def test_guide_ratio_and_clipping_hand_worked():
  # Loss tokens: two hint tokens (old logp 0) and two sampled tokens (old -0.5, -1.0), token-mean, clip 0.2.
  batch, hint = guide_example_batch()
  g = rl.guide_batch(batch, hint)
  cfg = rl.resolve_config({"clip_low": 0.2, "clip_high": 0.2})
  mask = g.loss_mask()
  # Current policy: hint tokens at probability 0.5 and 0.9 under the UNHINTED prompt; sampled tokens at
  # their old logprob (ratio 1) and at old + log 1.5 (ratio 1.5).
  logp = jnp.array([[0, 0, 0, np.log(0.5), np.log(0.9), -0.5, -1.0 + np.log(1.5), 0]], jnp.float32)

  def loss_fn(lp, adv):
    return rl.policy_loss(lp, g.old_logp, adv, mask, cfg)

  for adv, expected_terms, grad_terms in (
      # A = +1: -min(r A, clip(r) A) per token: r = 0.5 -> -0.5 (gradient -r = -0.5 wrt logp),
      # r = 0.9 -> -0.9 (-0.9), r = 1 -> -1 (-1), r = 1.5 -> -1.2 (clipped above: no gradient).
      (1.0, [-0.5, -0.9, -1.0, -1.2], [-0.5, -0.9, -1.0, 0.0]),
      # A = -1: r = 0.5 -> clip at 0.8 (no gradient), 0.9 -> 0.9 (+0.9), 1 -> 1 (+1), 1.5 -> 1.5 (+1.5;
      # below the dual bound c = 3).
      (-1.0, [0.8, 0.9, 1.0, 1.5], [0.0, 0.9, 1.0, 1.5])):
    a = jnp.array([adv])
    loss, metrics = jit(loss_fn)(logp, a)
    np.testing.assert_allclose(float(loss), np.mean(expected_terms), rtol=1e-5)
    grad = jit(jax.grad(lambda lp: loss_fn(lp, a)[0]))(logp)
    np.testing.assert_allclose(np.asarray(grad)[0, 3:7], np.array(grad_terms) / 4, rtol=1e-5, atol=1e-7)
    assert float(metrics["num_tokens"]) == 4
  np.testing.assert_allclose(float(metrics["ratio_min"]), 0.5, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["ratio_max"]), 1.5, rtol=1e-5)


def test_guide_layout_is_the_unhinted_prompt_then_the_hint_as_response():
  tok = tok_lib.load(tok_lib.task_tokenizer_path())
  ex = chains.make_example("k+3-5+2-1=")
  hint = ex.steps[0] + ex.step_sep
  out = groups_lib.guide_layout([ex, ex], [hint, ""], style="plain", tokenizer=tok, max_prompt_len=32, Lp=32,
                                pad_id=tok.pad_token_id)
  r = templates.render(ex, "", "prompt", tok, "plain")
  row = out["guide_prompt_ids"][0][out["guide_prompt_valid"][0]].tolist()
  assert row == list(r.prompt_ids) + tok.encode(hint, add_special_tokens=False)
  assert tok.decode(out["guide_prompt_ids"][0][out["guide_hint_mask"][0]].tolist()) == hint
  # Without a hint: the plain unhinted prompt, no hint columns.
  assert out["guide_prompt_ids"][1][out["guide_prompt_valid"][1]].tolist() == list(r.prompt_ids)
  assert not out["guide_hint_mask"][1].any()


def test_to_batch_guide_uses_the_guide_layout_and_plain_rows_for_unhinted_groups():
  B, G, Lp, N = 2, 2, 5, 3
  groups = groups_lib.Groups(
      prompt_ids=np.array([[1, 7, 8, 5, 6], [0, 0, 0, 7, 9]], np.int32),  # as sampled (hint in the prompt)
      prompt_valid=np.array([[1, 1, 1, 1, 1], [0, 0, 0, 1, 1]], bool),
      hint_mask=np.array([[0, 0, 0, 1, 1], [0] * 5], bool),
      tokens=np.array([[[9, 4, 0], [3, 0, 0]], [[2, 2, 2], [4, 0, 0]]], np.int32),
      logprobs=np.where(np.arange(N) < np.array([[2, 1], [3, 1]])[..., None], -0.25, 0.0).astype(np.float32),
      lengths=np.array([[2, 1], [3, 1]], np.int32),
      rewards=np.array([[1, 0], [0, 1]], np.float32), accuracy=np.array([[1, 0], [0, 1]], np.float32),
      completions=np.array([["a", "b"], ["c", "d"]], object), hint_text=np.array(["56", ""], object),
      guide_prompt_ids=np.array([[0, 7, 8, 5, 6], [0, 0, 0, 7, 9]], np.int32),
      guide_prompt_valid=np.array([[0, 1, 1, 1, 1], [0, 0, 0, 1, 1]], bool),
      guide_hint_mask=np.array([[0, 0, 0, 1, 1], [0] * 5], bool))
  adv = np.array([[1.0, -1.0], [-1.0, 1.0]], np.float32)
  batch = groups_lib.to_batch(groups, adv, np.ones(B, bool), train_hint=False, guide=True)
  seg = np.asarray(batch.segment_ids)
  assert batch.prompt_len == 1
  assert seg[0].tolist() == [0, P_, P_, R_, R_, R_, R_, 0]  # guided: the hint is trained, in the unhinted context
  assert seg[2].tolist() == [0, 0, 0, P_, P_, R_, R_, R_]    # unhinted group: the plain layout
  assert np.asarray(batch.tokens)[0].tolist() == [0, 7, 8, 5, 6, 9, 4, 0]
  np.testing.assert_allclose(np.asarray(batch.old_logp)[0], [0, 0, 0, 0, 0, -0.25, -0.25, 0])
  with pytest.raises(ValueError, match="guide"):
    groups_lib.to_batch(groups_lib.Groups(**{**groups.__dict__, "guide_prompt_ids": None}), adv, np.ones(B, bool),
                        train_hint=False, guide=True)


def test_guide_is_validated_against_hint_nll_and_hintless_modes():
  with pytest.raises(ValueError, match="hint_nll_coef"):
    rl.resolve_config({"guide": True, "hint_nll_coef": 1.0})
  import configs.frontier as frontier
  c = frontier.get_config()
  c.rl.guide = True
  c.curriculum.mode = "none"
  with pytest.raises(ValueError, match="never hints"):
    derived.rl_config(c)
  c.curriculum.mode = "ghpo"
  assert derived.rl_config(c).guide is True


def test_budget_rules_count_generated_or_every_conditioned_token():
  # Two calls: 2 groups of G = 2 with prompts of 3 and 5 tokens (hint included), then a retry of 1 group of 6.
  first = ml_collections.ConfigDict({"lengths": np.array([[4, 2], [3, 1]]),
                                     "prompt_valid": np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], bool)})
  retry = ml_collections.ConfigDict({"lengths": np.array([[5, 5]]), "prompt_valid": np.ones((1, 6), bool)})
  assert budget.step_tokens([first, retry], "generated") == 10 + 10
  assert budget.step_tokens([first, retry], "context_and_generated") == 20 + (3 + 5) * 2 + 6 * 2
  with pytest.raises(ValueError, match="budget_rule"):
    budget.step_tokens([first], "sampled")
