"""policy_loss against hand-worked numbers: clip, dual clip, KL estimators, entropy, aggregation, masking."""
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxghpo import rl


# XLA's backend optimisation off for these tests' jits: half the CPU compile time, same program.
jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def make_cfg(**kw):
  return rl.resolve_config(kw)


def run_loss(cfg, logp, old, adv, mask, ref=None, **kw):
  """rl.policy_loss under jit (one compile per call instead of one per primitive: fast tests)."""
  return jit(lambda lp, o, a, m, r, k: rl.policy_loss(lp, o, a, m, cfg, r, **k))(logp, old, adv, mask, ref, kw)


def run_grad(cfg, logp, old, adv, mask, ref=None, **kw):
  """d loss / d logp, jitted."""
  fn = lambda lp, o, a, m, r, k: rl.policy_loss(lp, o, a, m, cfg, r, **k)[0]
  return jit(jax.grad(fn))(logp, old, adv, mask, ref, kw)


def test_clip_higher_and_dual_clip_hand_worked():
  # One token per sequence, old_logp = 0 so ratio = exp(logp). clip range [0.8, 1.28], dual bound c = 3.
  adv = jnp.array([1.0, 1.0, -1.0, -1.0, -1.0, 2.0])
  ratio = jnp.array([1.5, 0.5, 0.5, 5.0, 2.0, 1.1])
  # max(-A r, -A clip(r)), then for A < 0 min(., -A c):
  #   A=1  r=1.5  -> max(-1.5, -1.28) = -1.28            (upper clip active: no gradient)
  #   A=1  r=0.5  -> max(-0.5, -0.8)  = -0.5             (gradient -A r = -0.5)
  #   A=-1 r=0.5  -> max(0.5, 0.8) = 0.8, min(0.8, 3)    (lower clip active: no gradient)
  #   A=-1 r=5    -> max(5, 1.28) = 5, min(5, 3) = 3     (dual clip active: no gradient)
  #   A=-1 r=2    -> max(2, 1.28) = 2, min(2, 3) = 2     (gradient -A r = 2)
  #   A=2  r=1.1  -> max(-2.2, -2.2) = -2.2              (gradient -2.2)
  per_token = np.array([-1.28, -0.5, 0.8, 3.0, 2.0, -2.2])
  cfg = make_cfg(clip_low=0.2, clip_high=0.28, clip_c=3.0)
  logp = jnp.log(ratio)[:, None]
  old = jnp.zeros_like(logp)
  mask = jnp.ones_like(logp, bool)
  loss, m = run_loss(cfg, logp, old, adv, mask)
  np.testing.assert_allclose(loss, per_token.mean(), rtol=1e-6)
  np.testing.assert_allclose(m["pg_loss"], per_token.mean(), rtol=1e-6)
  grad = run_grad(cfg, logp, old, adv, mask)
  np.testing.assert_allclose(grad[:, 0], np.array([0.0, -0.5, 0.0, 0.0, 2.0, -2.2]) / 6, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(m["clip_frac_high"], 1 / 6, rtol=1e-6)
  np.testing.assert_allclose(m["clip_frac_low"], 1 / 6, rtol=1e-6)
  np.testing.assert_allclose(m["clip_frac_dual"], 1 / 6, rtol=1e-6)
  np.testing.assert_allclose(m["ratio_max"], 5.0, rtol=1e-6)
  np.testing.assert_allclose(m["ratio_min"], 0.5, rtol=1e-6)
  np.testing.assert_allclose(m["ratio_mean"], float(ratio.mean()), rtol=1e-6)
  # approx_kl (to the old policy) is k3 of old - logp: mean of r - log r - 1... with d = -log r: e^d - d - 1.
  d = -np.log(np.asarray(ratio))
  np.testing.assert_allclose(m["approx_kl"], np.mean(np.exp(d) - d - 1), rtol=1e-5)


def test_log_ratio_is_clamped_to_20():
  cfg = make_cfg(clip_high=1e9, clip_c=1e12)  # no clipping: the clamp alone bounds the ratio
  logp, old = jnp.array([[30.0]]), jnp.array([[0.0]])
  _, m = run_loss(cfg, logp, old, jnp.array([1.0]), jnp.ones((1, 1), bool))
  np.testing.assert_allclose(m["ratio_max"], math.exp(20.0), rtol=1e-5)


# Aggregation: ratio 1 (logp = old) and no clipping, so each loss token's value is -A of its sequence.
# seq 0: A = 1, tokens 2 (values -1, -1); seq 1: A = -2, tokens 3 (values 2, 2, 2); seq 2: no loss tokens.
AGG_MASK = jnp.array([[1, 1, 0], [1, 1, 1], [0, 0, 0]], bool)
AGG_ADV = jnp.array([1.0, -2.0, 5.0])


AGG_CASES = [
    ("token-mean", 0, (-2 + 6) / 5),                    # all tokens / 5 tokens
    ("seq-mean-token-mean", 0, (-1 + 2) / 2),           # per-seq means, / 2 sequences with tokens
    ("seq-mean-token-sum", 0, (-2 + 6) / 2),            # per-seq sums / 2
    ("seq-mean-token-sum-norm", 4, (-2 / 4 + 6 / 4) / 2),  # per-seq sums / 4 (constant), / 2
    ("seq-mean-token-sum-norm", 0, (-2 / 3 + 6 / 3) / 2),  # loss_norm_len 0: T = 3
]


def test_aggregation_modes_hand_worked():
  cfgs = [make_cfg(loss_agg=mode, loss_norm_len=norm_len) for mode, norm_len, _ in AGG_CASES]

  @jit
  def losses(logp, adv, mask):
    return [rl.policy_loss(logp, logp, adv, mask, cfg) for cfg in cfgs]

  out = losses(jnp.full((3, 3), -1.0), AGG_ADV, AGG_MASK)
  # Appending all-padding rows (a dropped group kept for shape) changes no mode: seq-mean modes count
  # only the sequences with at least one loss token.
  padded = losses(jnp.full((5, 3), -1.0), jnp.concatenate([AGG_ADV, jnp.ones(2)]),
                  jnp.concatenate([AGG_MASK, jnp.zeros((2, 3), bool)]))
  for (mode, norm_len, expected), (loss, m), (loss_padded, _) in zip(AGG_CASES, out, padded):
    np.testing.assert_allclose(loss, expected, rtol=1e-6, err_msg=f"{mode} norm_len={norm_len}")
    np.testing.assert_allclose(loss_padded, expected, rtol=1e-6, err_msg=f"{mode} padded")
    assert float(m["num_tokens"]) == 5 and float(m["num_seqs"]) == 2


def test_kl_estimators_hand_worked():
  logp, ref = jnp.log(jnp.array([[0.5]])), jnp.log(jnp.array([[0.25]]))
  np.testing.assert_allclose(rl.kl_penalty(logp, ref, "k1"), [[math.log(2)]], rtol=1e-6)
  np.testing.assert_allclose(rl.kl_penalty(logp, ref, "k2"), [[0.5 * math.log(2) ** 2]], rtol=1e-6)
  # k3 with d = ref - logp = -log 2: e^d - d - 1 = 0.5 + log 2 - 1.
  np.testing.assert_allclose(rl.kl_penalty(logp, ref, "k3"), [[0.5 + math.log(2) - 1]], rtol=1e-5)
  # k3 is clamped to 10 (d = 15 would give e^15 - 16).
  np.testing.assert_allclose(rl.kl_penalty(jnp.array([[-15.0]]), jnp.array([[0.0]]), "k3"), [[10.0]])
  with pytest.raises(ValueError, match="kl_estimator"):
    rl.kl_penalty(logp, ref, "k4")


@pytest.mark.parametrize("est,value", [("k1", math.log(2)), ("k2", 0.5 * math.log(2) ** 2),
                                       ("k3", 0.5 + math.log(2) - 1)])
def test_kl_term_enters_the_loss(est, value):
  cfg = make_cfg(kl_coef=0.1, kl_estimator=est)
  logp = jnp.log(jnp.array([[0.5, 0.5]]))
  ref = jnp.log(jnp.array([[0.25, 0.25]]))
  mask = jnp.ones((1, 2), bool)
  loss, m = run_loss(cfg, logp, logp, jnp.array([1.0]), mask, ref)
  np.testing.assert_allclose(m["kl"], value, rtol=1e-5)
  np.testing.assert_allclose(loss, -1.0 + 0.1 * value, rtol=1e-5)  # pg = -A * 1
  with pytest.raises(ValueError, match="kl_coef=0.1 needs reference logprobs"):
    run_loss(cfg, logp, logp, jnp.array([1.0]), mask)


def test_token_entropy_and_entropy_bonus():
  logits = jnp.array([[[0.0, 0.0, 0.0, 0.0], [0.0, -1e9, -1e9, -1e9]]])
  np.testing.assert_allclose(rl.token_entropy(logits), [[math.log(4), 0.0]], atol=1e-6)
  # Temperature: logits [log 3, 0] at T = 1 give p = (0.75, 0.25); at T = inf-like it flattens toward log 2.
  two = jnp.array([[[math.log(3.0), 0.0]]])
  h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
  np.testing.assert_allclose(rl.token_entropy(two), [[h]], rtol=1e-5)
  np.testing.assert_allclose(rl.token_entropy(two, temperature=1e6), [[math.log(2)]], rtol=1e-5)
  cfg = make_cfg(entropy_coef=0.01)
  ent = rl.token_entropy(logits)
  zeros = jnp.zeros((1, 2))
  loss, m = run_loss(cfg, zeros, zeros, jnp.array([1.0]), jnp.array([[True, False]]), entropy=ent)
  np.testing.assert_allclose(m["entropy"], math.log(4), rtol=1e-6)  # the masked token's 0 is not averaged in
  np.testing.assert_allclose(loss, -1.0 - 0.01 * math.log(4), rtol=1e-6)
  with pytest.raises(ValueError, match="entropy_coef"):
    run_loss(cfg, zeros, zeros, jnp.array([1.0]), jnp.ones((1, 2), bool))


def _random_inputs(seed, B=6, T=5):
  rng = np.random.default_rng(seed)
  logp = jnp.asarray(rng.normal(-2.0, 0.5, (B, T)), jnp.float32)
  old = logp + jnp.asarray(rng.normal(0, 0.3, (B, T)), jnp.float32)
  ref = logp + jnp.asarray(rng.normal(0, 0.3, (B, T)), jnp.float32)
  adv = jnp.asarray(rng.normal(size=B), jnp.float32)
  mask = jnp.asarray(rng.random((B, T)) < 0.7)
  mask = mask.at[B - 1].set(False)  # one sequence without loss tokens
  ent = jnp.asarray(rng.random((B, T)), jnp.float32)
  return logp, old, ref, adv, mask, ent


def test_split_batch_equals_whole_batch():
  """Sums/counts of two halves merge into the whole batch's; half gradients against whole-batch
  denominators add up to the whole batch's gradient (gradient accumulation and data shards)."""
  cfgs = {mode: make_cfg(loss_agg=mode, kl_coef=0.05, entropy_coef=0.01, clip_high=0.28)
          for mode in rl.LOSS_AGG_MODES}
  logp, old, ref, adv, mask, ent = _random_inputs(0)
  whole, a, b = slice(0, 6), slice(0, 2), slice(2, 6)
  counts = rl.loss_counts(mask)

  @jit
  def everything(logp):
    results = {}
    for mode, cfg in cfgs.items():
      terms = lambda lp, sl: rl.policy_loss_terms(lp, old[sl], adv[sl], mask[sl], cfg, ref[sl], entropy=ent[sl])
      grad = lambda sl: jax.grad(lambda lp: rl.weighted_loss(terms(lp, sl)[0], counts, cfg))(logp[sl])
      results[mode] = {
          "whole": rl.finalize(*terms(logp, whole), cfg),
          "merged": rl.finalize(*rl.merge_terms(terms(logp[a], a), terms(logp[b], b)), cfg),
          "own_a": rl.finalize(*terms(logp[a], a), cfg)[0], "own_b": rl.finalize(*terms(logp[b], b), cfg)[0],
          "grad_whole": grad(whole), "grad_split": jnp.concatenate([grad(a), grad(b)])}
    return results

  for mode, out in everything(logp).items():
    (loss, metrics), (merged_loss, merged_metrics) = out["whole"], out["merged"]
    np.testing.assert_allclose(merged_loss, loss, rtol=1e-6, atol=1e-6, err_msg=mode)
    for k in metrics:
      np.testing.assert_allclose(merged_metrics[k], metrics[k], rtol=1e-6, atol=1e-6, err_msg=f"{mode} {k}")
    np.testing.assert_allclose(out["grad_split"], out["grad_whole"], atol=1e-6, err_msg=mode)
    assert np.any(np.asarray(out["grad_whole"]) != 0.0)
    # Averaging the halves' own losses would not give the whole batch's loss (the test can tell).
    assert abs(float((out["own_a"] + out["own_b"]) / 2 - loss)) > 1e-4, mode


def test_values_outside_the_mask_never_matter():
  cfg = make_cfg(kl_coef=0.1, entropy_coef=0.01)
  logp, old, ref, adv, mask, ent = _random_inputs(1)

  @jit
  def run(lp, o, r, e, a):
    fn = lambda x: rl.policy_loss(x, o, a, mask, cfg, r, entropy=e)[0]
    return jax.value_and_grad(fn)(lp)

  loss, grad = run(logp, old, ref, ent, adv)
  poison = lambda x, v: jnp.where(mask, x, v)
  per_token_adv = jnp.broadcast_to(adv[:, None], mask.shape)
  loss2, grad2 = run(poison(logp, 50.0), poison(old, jnp.nan), poison(ref, -jnp.inf), poison(ent, jnp.nan),
                     poison(per_token_adv, 1e6))  # per-token advantages: changed only outside the mask
  assert np.isfinite(loss2) and np.all(np.isfinite(grad2))
  np.testing.assert_allclose(loss2, loss, rtol=1e-6)
  np.testing.assert_allclose(grad2, grad, atol=1e-7)
  assert np.all(grad2[~mask] == 0.0)


def test_moving_a_token_into_the_mask_changes_the_loss():
  cfg = make_cfg()
  logp, old, _, adv, mask, _ = _random_inputs(2)
  loss = run_loss(cfg, logp, old, adv, mask)[0]
  b, t = map(int, np.argwhere(~np.asarray(mask[:-1]))[0])
  loss2 = run_loss(cfg, logp, old, adv, mask.at[b, t].set(True))[0]
  assert abs(float(loss2 - loss)) > 1e-4


def test_hint_nll_term_on_response_hint_tokens():
  cfg = make_cfg(hint_nll_coef=0.5)
  # Row: [hint, hint, response, response]; the hint tokens have p = 0.5 and 0.25.
  logp = jnp.log(jnp.array([[0.5, 0.25, 0.8, 0.9]]))
  mask = jnp.array([[False, False, True, True]])
  hint = jnp.array([[True, True, False, False]])
  loss, m = run_loss(cfg, logp, logp, jnp.array([1.0]), mask, hint_mask=hint)
  nll = (math.log(2) + math.log(4)) / 2
  np.testing.assert_allclose(m["hint_nll"], nll, rtol=1e-6)
  np.testing.assert_allclose(m["pg_loss"], -1.0, rtol=1e-6)  # hint tokens are not in the pg loss
  np.testing.assert_allclose(loss, -1.0 + 0.5 * nll, rtol=1e-6)
  grad = run_grad(cfg, logp, logp, jnp.array([1.0]), mask, hint_mask=hint)
  np.testing.assert_allclose(grad[0, :2], [-0.5 / 2, -0.5 / 2], rtol=1e-6)  # -coef / #hint tokens each
  # Off by default: the metric is reported, the loss does not change.
  loss0, m0 = run_loss(make_cfg(), logp, logp, jnp.array([1.0]), mask, hint_mask=hint)
  np.testing.assert_allclose(loss0, -1.0, rtol=1e-6)
  np.testing.assert_allclose(m0["hint_nll"], nll, rtol=1e-6)


def test_all_equal_group_gives_zero_policy_gradient():
  rewards = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]], np.float32)
  adv = rl.group_advantages(rewards, "grpo").reshape(-1)
  logp, old, _, _, mask, _ = _random_inputs(3, B=6, T=4)
  for mode in rl.LOSS_AGG_MODES:
    cfg = make_cfg(loss_agg=mode)
    grad = run_grad(cfg, logp, old, adv, mask)
    assert np.all(np.asarray(grad) == 0.0)


def test_no_loss_tokens_gives_zero_loss_not_nan():
  cfg = make_cfg()
  loss, m = run_loss(cfg, jnp.zeros((2, 3)), jnp.zeros((2, 3)), jnp.ones(2), jnp.zeros((2, 3), bool))
  assert float(loss) == 0.0 and float(m["ratio_max"]) == 0.0 and float(m["num_tokens"]) == 0.0


def test_config_validation_names_the_keys():
  with pytest.raises(KeyError, match="clip_hgih"):
    rl.resolve_config({"clip_hgih": 0.3})
  with pytest.raises(KeyError, match="hint_placement"):  # where hints go is config.hints.placement only
    rl.resolve_config({"hint_placement": "response"})
  with pytest.raises(ValueError, match="loss_agg='mean'"):
    rl.resolve_config({"loss_agg": "mean"})
  with pytest.raises(ValueError, match="clip_c=0.5"):
    rl.resolve_config({"clip_c": 0.5})
  assert rl.default_config().loss_agg == "token-mean"
