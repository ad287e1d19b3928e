"""Sampled tokens follow softmax(logits / T) (chi-square, fixed seed); top-k and top-p exclude what they must."""
import jax
import numpy as np
import pytest
from jax.scipy.stats import chi2

from jaxghpo import models, rollout

V = 16
DRAWS = 4000
PROMPT = [3, 1, 4, 1, 5]


@pytest.fixture(scope="module")
def tiny():
  """A 16-token model whose embeddings are scaled up so that its next-token distribution is far from
  uniform (at T = 1, probabilities from about 2% to 40%), which gives the chi-square test power."""
  cfg = models.ModelConfig(model_type="qwen2", vocab_size=V, hidden_size=64, intermediate_size=128, num_layers=2,
                           num_heads=4, num_kv_heads=2, head_dim=16, tie_word_embeddings=True, attention_bias=True)
  model = models.init_model(cfg, seed=3)
  model.embed_tokens.set_value(model.embed_tokens.get_value() * 2.0)
  sampler = rollout.Sampler(model, batch_size=1, max_prompt_len=8, max_new_tokens=2, num_samples=DRAWS)
  return model, sampler


def _next_logits(model, prefix):
  return np.asarray(models.logits(model, np.asarray([prefix], np.int32))[0, -1], np.float64)


def _p_value(counts, probs):
  """Pearson chi-square p-value of counts against probs (cells with expectation < 5 are pooled)."""
  expected = probs * counts.sum()
  small = expected < 5
  obs = np.append(counts[~small], counts[small].sum())
  exp = np.append(expected[~small], expected[small].sum())
  if exp[-1] == 0:
    obs, exp = obs[:-1], exp[:-1]
  stat = float(np.sum((obs - exp) ** 2 / exp))
  return float(chi2.sf(stat, len(obs) - 1))


def _softmax(x):
  e = np.exp(x - x.max())
  return e / e.sum()


def _first_tokens(sampler, model, seed, **controls):
  out = sampler(model, [PROMPT], rng=jax.random.key(seed), **controls)
  return np.asarray(out.tokens)


def test_first_token_frequencies_follow_softmax_over_temperature(tiny):
  model, sampler = tiny
  logits = _next_logits(model, PROMPT)
  for temperature in (0.7, 1.5):
    tokens = _first_tokens(sampler, model, 0, temperature=temperature)
    counts = np.bincount(tokens[:, 0], minlength=V)
    probs = _softmax(logits / temperature)
    assert probs.max() > 0.2 and probs.max() > 5 * probs.min(), "the model must have a spread distribution"
    assert _p_value(counts, probs) > 1e-3, (temperature, counts, probs * DRAWS)
    # Power check: the same draws are rejected against the distribution at another temperature.
    assert _p_value(counts, _softmax(logits / (temperature * 1.4))) < 1e-6


def test_second_token_follows_the_cached_context(tiny):
  """The second token, drawn after one decode step through the KV cache, follows the distribution of a
  full forward pass over prompt + first token."""
  model, sampler = tiny
  tokens = _first_tokens(sampler, model, 1, temperature=1.0)
  first = np.bincount(tokens[:, 0], minlength=V).argmax()
  second = tokens[tokens[:, 0] == first, 1]
  probs = _softmax(_next_logits(model, PROMPT + [int(first)]))
  assert len(second) > 500
  assert _p_value(np.bincount(second, minlength=V), probs) > 1e-3


def test_top_k_and_top_p_exclude_and_renormalise(tiny):
  model, sampler = tiny
  logits = _next_logits(model, PROMPT)
  probs = _softmax(logits)
  order = np.argsort(-probs)
  # top-k 3: only the three best tokens, in proportion to their probabilities.
  counts = np.bincount(_first_tokens(sampler, model, 2, temperature=1.0, top_k=3)[:, 0], minlength=V)
  allowed = np.zeros(V, bool)
  allowed[order[:3]] = True
  assert counts[~allowed].sum() == 0
  assert _p_value(counts[allowed], probs[allowed] / probs[allowed].sum()) > 1e-3
  # top-p 0.6: the smallest prefix of best tokens whose mass reaches 0.6.
  mass_above = np.cumsum(probs[order]) - probs[order]
  nucleus = order[mass_above < 0.6]
  assert 1 < len(nucleus) < V - 2, "pick a top_p that cuts inside the distribution"
  counts = np.bincount(_first_tokens(sampler, model, 3, temperature=1.0, top_p=0.6)[:, 0], minlength=V)
  allowed = np.zeros(V, bool)
  allowed[nucleus] = True
  assert counts[~allowed].sum() == 0
  assert _p_value(counts[allowed], probs[allowed] / probs[allowed].sum()) > 1e-3


def test_seed_decides_the_draws(tiny):
  model, sampler = tiny
  a = _first_tokens(sampler, model, 5, temperature=1.0)
  b = _first_tokens(sampler, model, 5, temperature=1.0)
  c = _first_tokens(sampler, model, 6, temperature=1.0)
  np.testing.assert_array_equal(a, b)
  assert (a != c).any()
