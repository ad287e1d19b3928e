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


def filter_top_k_top_p(scaled_BxV, top_k, top_p):
  """Sets to -inf the logits that top-k and then top-p exclude (transformers' order: k first).

  scaled_BxV: float32 [B, V], logits already divided by the temperature.
  top_k: int32 scalar; 0 (or >= V) keeps every token. Ties with the k-th largest logit are kept.
  top_p: float32 scalar in (0, 1]; keeps the smallest set of most probable tokens whose mass (after the
    top-k cut, renormalised) reaches top_p: a token stays when the mass of the tokens ranked above it is
    below top_p, so the most probable token always stays.
  """
  V = scaled_BxV.shape[-1]
  sorted_BxV = -jnp.sort(-scaled_BxV, axis=-1)  # descending
  k = jnp.where((top_k > 0) & (top_k < V), top_k, V)
  kth_Bx1 = jax.lax.dynamic_slice_in_dim(sorted_BxV, k - 1, 1, axis=1)
  in_top_k = sorted_BxV >= kth_Bx1
  probs = jax.nn.softmax(jnp.where(in_top_k, sorted_BxV, -jnp.inf), axis=-1)
  mass_above = jnp.cumsum(probs, axis=-1) - probs
  keep = in_top_k & (mass_above < top_p)
  threshold_Bx1 = jnp.min(jnp.where(keep, sorted_BxV, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(scaled_BxV >= threshold_Bx1, scaled_BxV, -jnp.inf)


def sample_categorical(key, logits_BxV):
  """int32 [B]: one draw per row from softmax(logits) by inverting the cumulative distribution.

  Needs one uniform number per row (not one per vocabulary entry, as the Gumbel trick does), which makes
  the draw cheap on CPU. Tokens with zero probability (logit -inf) are never drawn: the chosen index is
  the first whose cumulative mass exceeds u * total, and it is capped at the last token with mass.
  """
  B, V = logits_BxV.shape
  probs_BxV = jax.nn.softmax(logits_BxV, axis=-1)
  cdf_BxV = jnp.cumsum(probs_BxV, axis=-1)
  u_Bx1 = jax.random.uniform(key, (B, 1), jnp.float32) * cdf_BxV[:, -1:]
  index_B = jnp.sum(cdf_BxV <= u_Bx1, axis=-1, dtype=jnp.int32)
  last_B = (V - 1 - jnp.argmax(probs_BxV[:, ::-1] > 0, axis=-1)).astype(jnp.int32)
  return jnp.minimum(index_B, last_B)


def choose_tokens(key, logits_BxV, temperature, top_k, top_p):
  """int32 [B]: greedy argmax when temperature == 0, else a draw from the filtered softmax(logits / T).

  Both choices are ``lax.cond`` branches on the traced controls: greedy decoding pays for no random
  numbers, and the sort behind top-k/top-p runs only when a filter is on.
  """
  def greedy(logits):
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def sample(logits):
    scaled = logits / effective_temperature(temperature)
    filtering = ((top_k > 0) & (top_k < logits.shape[-1])) | (top_p < 1.0)
    scaled = jax.lax.cond(filtering, lambda x: filter_top_k_top_p(x, top_k, top_p), lambda x: x, scaled)
    return sample_categorical(key, scaled)

  return jax.lax.cond(temperature > 0, sample, greedy, logits_BxV)


def deepconf_confidence(logp_BxV, k: int):
  """float32 [B]: DeepConf token confidence ``-mean(top-k logprobs)`` (k static, at most V).

  High when the distribution is peaked (the few best tokens hold the mass and the rest are far below).
  """
  k = min(int(k), logp_BxV.shape[-1])
  top_BxK, _ = jax.lax.top_k(logp_BxV, k)
  return -jnp.mean(top_BxK, axis=-1)
