"""TIP from a run's config: switch phrases tokenised with the run's tokenizer, the penalty built per
sampling kind, and a sampled distribution that follows softmax(logits - alpha * switch) (chi-square)."""
import jax
import ml_collections
import numpy as np
import pytest
from jax.scipy.stats import chi2

from jaxghpo import models, rollout
from jaxghpo.data import tokenizer as task_tokenizer
from jaxghpo.rollout import penalties
from tests import hf_fixtures

V, DRAWS, PROMPT = 16, 4000, [3, 1, 4, 1, 5]


def tip_config(**kw):
  c = ml_collections.ConfigDict(dict(tip_penalty=3.0, tip_window=600, tip_phrases=("Alternatively", "Wait"),
                                     tip_apply="eval"))
  c.update(kw)
  return c


def test_switch_phrases_tokenised_with_the_run_tokenizer():
  bpe = hf_fixtures.make_math_tokenizer()
  ids = penalties.switch_token_ids(bpe, ("Alternatively", "Wait"))
  assert ids and len(ids) <= 4
  for i in ids:  # the first non-blank token of a phrase, as written or after a space
    piece = bpe.decode([i]).strip()
    assert "Alternatively".startswith(piece) or "Wait".startswith(piece), piece
  chains = task_tokenizer.load("chains")
  assert penalties.switch_token_ids(chains, ("k", "=", "k")) == tuple(sorted(chains.convert_tokens_to_ids(["k", "="])))
  assert penalties.switch_token_ids(chains, (" ", " ")) == ()


def test_penalty_from_config_per_sampling_kind():
  tok = task_tokenizer.load("chains")
  c = tip_config(tip_phrases=("a", "b"))
  pen = penalties.from_config(c, tok, "eval")
  assert pen == penalties.ThoughtSwitchPenalty(token_ids=tuple(tok.convert_tokens_to_ids(["a", "b"])), alpha=3.0,
                                               beta=600)
  assert penalties.from_config(c, tok, "train") is None
  assert penalties.from_config(tip_config(tip_phrases=("a",), tip_apply="both"), tok, "train") == pen.__class__(
      token_ids=(tok.convert_tokens_to_ids("a"),), alpha=3.0, beta=600)
  assert penalties.from_config(tip_config(tip_penalty=0.0, tip_phrases=("a",)), tok, "eval") is None
  with pytest.raises(ValueError, match="tip_apply='always'"):
    penalties.from_config(tip_config(tip_phrases=("a",), tip_apply="always"), tok, "eval")
  with pytest.raises(ValueError, match=r"tip_phrases=\(' ',\)"):
    penalties.from_config(tip_config(tip_phrases=(" ",)), tok, "eval")
  with pytest.raises(ValueError, match="give a tuple of phrases"):  # a plain dict config is not type-checked
    penalties.from_config(ml_collections.ConfigDict({**tip_config().to_dict(), "tip_phrases": "a,b"},
                                                    type_safe=False), tok, "eval")


def _p_value(counts, probs):
  expected = probs * counts.sum()
  keep = expected >= 5
  obs = np.append(counts[keep], counts[~keep].sum())
  exp = np.append(expected[keep], expected[~keep].sum())
  if exp[-1] == 0:
    obs, exp = obs[:-1], exp[:-1]
  return float(chi2.sf(float(np.sum((obs - exp) ** 2 / exp)), len(obs) - 1))


def test_penalty_changes_the_sampled_distribution_as_it_says():
  cfg = models.ModelConfig(model_type="qwen2", vocab_size=V, hidden_size=64, intermediate_size=128, num_layers=2,
                           num_heads=4, num_kv_heads=2, head_dim=16, tie_word_embeddings=True, attention_bias=True)
  model = models.init_model(cfg, seed=3)
  model.embed_tokens.set_value(model.embed_tokens.get_value() * 2.0)  # a peaked next-token distribution
  sampler = rollout.Sampler(model, batch_size=1, max_prompt_len=8, max_new_tokens=1, num_samples=DRAWS)
  logits = np.asarray(models.logits(model, np.asarray([PROMPT], np.int32))[0, -1], np.float64)
  switch = tuple(int(i) for i in np.argsort(-logits)[:2])  # the two likeliest tokens: the most to lose
  alpha = 1.5

  def draw(penalty):
    out = sampler(model, [PROMPT], rng=jax.random.key(1), temperature=1.0, penalty=penalty)
    return np.bincount(np.asarray(out.tokens)[:, 0], minlength=V)

  def softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()

  switch_V = np.zeros(V)
  switch_V[list(switch)] = 1.0
  plain, tipped = softmax(logits), softmax(logits - alpha * switch_V)
  base = draw(None)
  pen = draw(penalties.ThoughtSwitchPenalty(token_ids=switch, alpha=alpha, beta=600))
  assert _p_value(base, plain) > 1e-3 and _p_value(pen, tipped) > 1e-3  # each follows its own law
  assert _p_value(pen, plain) < 1e-6  # and the penalised draws do not follow the plain one
  # The switch tokens' share drops (here from about 50% to about 20%).
  assert pen[list(switch)].sum() < 0.6 * base[list(switch)].sum()
  # Outside the window (beta = 0) nothing changes: the same draws as without a penalty.
  np.testing.assert_array_equal(draw(penalties.ThoughtSwitchPenalty(token_ids=switch, alpha=alpha, beta=0)), base)
