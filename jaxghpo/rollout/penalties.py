"""Decode-time thought-switch penalty (TIP, "Thoughts Are All Over the Place", see shared/GHPO.md).

Reasoning models abandon promising lines of thought too early ("underthinking"). TIP subtracts ``alpha``
from the logits of thought-switch tokens (the first tokens of "Alternatively", "Wait", ...) while the
current thought is younger than ``beta`` tokens. The paper uses alpha = 3, beta = 600.

Counting: each row keeps ``tokens_since_switch``, the number of tokens generated since the last switch
token (the switch token itself not counted) or since the start of the response. It is 0 when the first
response token is chosen and resets to 0 after a switch token. The penalty applies while
``tokens_since_switch < beta``. Example with beta = 2 and switch token S: the response ``a b c S d e f``
is generated with counters 0 1 2 3 0 1 2, so ``a``, ``b``, ``d``, ``e`` are chosen under the penalty.

The penalty only changes which token is chosen; the reported logprobs are those of the unpenalised
policy (like top-k/top-p filtering), which is what the trainer recomputes.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class ThoughtSwitchPenalty:
  """TIP settings. Off by default (alpha 0, no tokens); every field is a traced input of the sampler.

  token_ids: the thought-switch token ids to penalise.
  alpha: subtracted from those tokens' logits (logit units, before the temperature).
  beta: the penalty holds while fewer than beta tokens have passed since the last switch (or the start).
  """
  token_ids: tuple[int, ...] = ()
  alpha: float = 0.0
  beta: int = 0

  def arrays(self, vocab_size: int) -> dict[str, np.ndarray]:
    """Fixed-shape inputs for the jitted sampler: switch mask float32 [V], alpha, beta."""
    ids = np.asarray(self.token_ids, np.int64).reshape(-1)
    bad = ids[(ids < 0) | (ids >= vocab_size)]
    if bad.size:
      raise ValueError(f"ThoughtSwitchPenalty.token_ids {bad.tolist()} are outside the vocabulary "
                       f"[0, {vocab_size}); use the model tokenizer's ids")
    if self.alpha < 0 or self.beta < 0:
      raise ValueError(f"ThoughtSwitchPenalty alpha={self.alpha} and beta={self.beta} must be >= 0")
    switch_V = np.zeros((vocab_size,), np.float32)
    switch_V[ids] = 1.0
    return {"switch_V": switch_V, "alpha": np.float32(self.alpha), "beta": np.int32(self.beta)}


def apply_thought_switch_penalty(logits_BxV, tokens_since_switch_B, switch_V, alpha, beta):
  """logits - alpha on switch tokens for rows whose current thought is younger than beta tokens."""
  young_Bx1 = (tokens_since_switch_B < beta)[:, None]
  return logits_BxV - jnp.where(young_Bx1, alpha * switch_V[None, :], 0.0)


def update_tokens_since_switch(tokens_since_switch_B, token_B, switch_V):
  """Counter after choosing ``token_B``: 0 after a switch token, else one more."""
  return jnp.where(switch_V[token_B] > 0, 0, tokens_since_switch_B + 1).astype(jnp.int32)


# ----------------------------------------------------------------------------- from a run's config
TIP_APPLY = ("eval", "train", "both")


def switch_token_ids(tokenizer, phrases) -> tuple[int, ...]:
  """The thought-switch token ids of `phrases` (a tuple of strings) in `tokenizer`.

  Each phrase is encoded as written and after a space (how it appears mid-text for byte-level BPE
  tokenizers); the first token of each encoding that is neither whitespace alone nor a special token
  (such as <unk>) is a switch token (a phrase that is one token in the model's vocabulary, as
  "Alternatively" is in Qwen's, gives exactly that token). Sorted, without repeats.
  """
  if isinstance(phrases, str):
    raise ValueError(f"config.rollout.tip_phrases={phrases!r}: give a tuple of phrases, e.g. "
                     "('Alternatively', 'Wait')")
  ids = set()
  special = set(getattr(tokenizer, "all_special_ids", ()) or ())  # <unk> for a space a vocabulary lacks, ...
  for phrase in (p.strip() for p in phrases):
    if not phrase:
      continue
    for text in (phrase, " " + phrase):
      for token in tokenizer.encode(text, add_special_tokens=False):
        if token not in special and tokenizer.decode([token]).strip():
          ids.add(int(token))
          break
  return tuple(sorted(ids))


def from_config(rollout_cfg, tokenizer, where: str) -> ThoughtSwitchPenalty | None:
  """The TIP penalty of a run's config.rollout for sampling `where` ("eval" or "train"); None when off.

  Keys: tip_penalty (alpha, logit units; 0 = off), tip_window (beta, tokens), tip_phrases (a tuple of
  switch phrases, tokenised with the run's tokenizer by switch_token_ids) and tip_apply ("eval" | "train"
  | "both": which sampling uses it).
  """
  if where not in ("eval", "train"):
    raise ValueError(f"where={where!r} is not 'eval' or 'train'")
  alpha, beta = float(rollout_cfg.tip_penalty), int(rollout_cfg.tip_window)
  apply, phrases = str(rollout_cfg.tip_apply), rollout_cfg.tip_phrases
  if apply not in TIP_APPLY:
    raise ValueError(f"config.rollout.tip_apply={apply!r} is not one of {TIP_APPLY}")
  if alpha < 0 or beta < 0:
    raise ValueError(f"config.rollout.tip_penalty={alpha} and config.rollout.tip_window={beta} must be >= 0")
  ids = switch_token_ids(tokenizer, phrases)
  if alpha > 0 and not ids:
    raise ValueError(f"config.rollout.tip_penalty={alpha} but config.rollout.tip_phrases={phrases!r} gives no "
                     "token; name the switch phrases, e.g. ('Alternatively', 'Wait')")
  if alpha == 0 or beta == 0 or apply not in (where, "both"):
    return None
  return ThoughtSwitchPenalty(token_ids=ids, alpha=alpha, beta=beta)
