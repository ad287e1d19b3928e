"""Per-step token choice: temperature, top-k, top-p, the logprob of the chosen token, DeepConf confidence.

All functions are pure and work on one decode step: logits float32 [B, V]. The sampling controls are
traced arrays (not Python constants) so that changing them never compiles the sampler again.

Conventions (the trainer relies on them):
  * ``temperature == 0`` is greedy: the first index of the largest logit (as ``torch.argmax`` /
    transformers' greedy search pick it).
  * The logprob reported for a token is ``log_softmax(logits / T)`` of the *unfiltered* logits: top-k and
    top-p decide what may be drawn, not the probability the policy assigns (that is what the trainer
    recomputes for the policy-gradient ratio). At ``T == 0`` the logprob uses ``T = 1``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def effective_temperature(temperature):
  """T where T > 0, else 1 (greedy decoding reports logprobs at T = 1)."""
  return jnp.where(temperature > 0, temperature, 1.0).astype(jnp.float32)


def log_probs(logits_BxV, temperature):
  """float32 [B, V]: log_softmax(logits / T), T from :func:`effective_temperature`."""
  return jax.nn.log_softmax(logits_BxV.astype(jnp.float32) / effective_temperature(temperature), axis=-1)


def first_argmax(x_BxV):
  """int32 [B]: the first index of the row maximum (as torch.argmax); cheaper on CPU than jnp.argmax's
  variadic reduction. A row without a maximum (all NaN) gives index 0."""
  V = x_BxV.shape[-1]
  iota = jax.lax.broadcasted_iota(jnp.int32, x_BxV.shape, x_BxV.ndim - 1)
  hits = jnp.where(x_BxV == jnp.max(x_BxV, axis=-1, keepdims=True), iota, V)
  index = jnp.min(hits, axis=-1)
  return jnp.where(index < V, index, 0)


# top-k/top-p look at the TOP_CANDIDATES best tokens (lax.top_k, cheap) and fall back to a full sort only
# when the cut may lie beyond them (top_k larger than this, or top-p mass not reached within them).
TOP_CANDIDATES = 64


def _threshold_from_sorted(sorted_BxK, kth_Bx1, log_norm_Bx1, top_p):
  """Smallest kept logit given the best logits in descending order, the k-th best logit (top-k cut) and
  the log normaliser of the distribution that top-p measures mass in; also whether the top-p cut was
  reached within these candidates."""
  in_top_k = sorted_BxK >= kth_Bx1
  probs = jnp.where(in_top_k, jnp.exp(sorted_BxK - log_norm_Bx1), 0.0)
  mass_above = jnp.cumsum(probs, axis=-1) - probs
  keep = in_top_k & ((mass_above < top_p) | (top_p >= 1.0))
  threshold_Bx1 = jnp.min(jnp.where(keep, sorted_BxK, jnp.inf), axis=-1, keepdims=True)
  reached_B = (mass_above[:, -1] + probs[:, -1] >= top_p) | ~in_top_k[:, -1]
  return threshold_Bx1, reached_B


def filter_top_k_top_p(scaled_BxV, top_k, top_p):
  """Sets to -inf the logits that top-k and then top-p exclude (transformers' order: k first).

  scaled_BxV: float32 [B, V], logits already divided by the temperature.
  top_k: int32 scalar; 0 (or >= V) keeps every token. Ties with the k-th largest logit are kept.
  top_p: float32 scalar in (0, 1]; keeps the smallest set of most probable tokens whose mass (after the
    top-k cut, renormalised) reaches top_p: a token stays when the mass of the tokens ranked above it is
    below top_p, so the most probable token always stays.
  """
  V = scaled_BxV.shape[-1]
  k = jnp.where((top_k > 0) & (top_k < V), top_k, V)
  C = min(TOP_CANDIDATES, V)

  def cut(sorted_BxK, log_norm_Bx1):
    kth_Bx1 = jax.lax.dynamic_slice_in_dim(sorted_BxK, jnp.minimum(k, sorted_BxK.shape[-1]) - 1, 1, axis=1)
    kth_Bx1 = jnp.where(k <= sorted_BxK.shape[-1], kth_Bx1, -jnp.inf)
    return _threshold_from_sorted(sorted_BxK, kth_Bx1, log_norm_Bx1, top_p)

  top_BxC, _ = jax.lax.top_k(scaled_BxV, C)
  # Mass is measured within the top-k set: its log normaliser needs the top-k logits (known when k <= C)
  # or all logits (no top-k cut).
  kth_Bx1 = jax.lax.dynamic_slice_in_dim(top_BxC, jnp.minimum(k, C) - 1, 1, axis=1)
  in_k = jnp.where(scaled_BxV >= jnp.where(k <= C, kth_Bx1, -jnp.inf), scaled_BxV, -jnp.inf)
  log_norm_Bx1 = jax.nn.logsumexp(in_k, axis=-1, keepdims=True)
  threshold_Bx1, reached_B = cut(top_BxC, log_norm_Bx1)
  exact = (k <= C) | ((k == V) & jnp.all(reached_B))

  def full_sort(_):
    sorted_BxV = -jnp.sort(-scaled_BxV, axis=-1)
    kth = jax.lax.dynamic_slice_in_dim(sorted_BxV, k - 1, 1, axis=1)
    norm = jax.nn.logsumexp(jnp.where(sorted_BxV >= kth, sorted_BxV, -jnp.inf), axis=-1, keepdims=True)
    return cut(sorted_BxV, norm)[0]

  threshold_Bx1 = jax.lax.cond(exact, lambda _: threshold_Bx1, full_sort, None)
  return jnp.where(scaled_BxV >= threshold_Bx1, scaled_BxV, -jnp.inf)


def sample_categorical(key, logits_BxV, u_B=None):
  """int32 [B]: one draw per row from softmax(logits) by inverting the cumulative distribution.

  u_B: float32 [B] uniforms in [0, 1), one per row (the sampler's per-row keys draw them); None: drawn
  from `key`.

  Needs one uniform number per row (not one per vocabulary entry, as the Gumbel trick does), which makes
  the draw cheap on CPU. Tokens with zero probability (logit -inf) are never drawn: the chosen index is
  the first whose cumulative mass exceeds u * total, and it is capped at the last token with mass.
  """
  B, V = logits_BxV.shape
  probs_BxV = jax.nn.softmax(logits_BxV, axis=-1)
  cdf_BxV = jnp.cumsum(probs_BxV, axis=-1)
  if u_B is None:
    u_B = jax.random.uniform(key, (B,), jnp.float32)
  u_Bx1 = u_B[:, None] * cdf_BxV[:, -1:]
  index_B = jnp.sum(cdf_BxV <= u_Bx1, axis=-1, dtype=jnp.int32)
  iota = jax.lax.broadcasted_iota(jnp.int32, probs_BxV.shape, 1)
  last_B = jnp.max(jnp.where(probs_BxV > 0, iota, 0), axis=-1)
  return jnp.minimum(index_B, last_B)


def choose_tokens(key, logits_BxV, temperature, top_k, top_p, u_B=None):
  """int32 [B]: greedy argmax when temperature == 0, else a draw from the filtered softmax(logits / T).

  u_B: float32 [B], each row's uniform for the draw (per-row keys); None: from `key`.

  Both choices are ``lax.cond`` branches on the traced controls: greedy decoding pays for no random
  numbers, and the top-k/top-p cut runs only when a filter is on.
  """
  def greedy(logits):
    return first_argmax(logits)

  def sample(logits):
    scaled = logits / effective_temperature(temperature)
    filtering = ((top_k > 0) & (top_k < logits.shape[-1])) | (top_p < 1.0)
    scaled = jax.lax.cond(filtering, lambda x: filter_top_k_top_p(x, top_k, top_p), lambda x: x, scaled)
    return sample_categorical(key, scaled, u_B)

  return jax.lax.cond(temperature > 0, sample, greedy, logits_BxV)


def deepconf_confidence(logp_BxV, k: int):
  """float32 [B]: DeepConf token confidence ``-mean(top-k logprobs)`` (k static, at most V).

  High when the distribution is peaked (the few best tokens hold the mass and the rest are far below).
  """
  k = min(int(k), logp_BxV.shape[-1])
  top_BxK, _ = jax.lax.top_k(logp_BxV, k)
  return -jnp.mean(top_BxK, axis=-1)
