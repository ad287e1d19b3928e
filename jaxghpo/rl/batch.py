"""RLBatch: the one batch type of the train step (ids, segments, advantages, old and reference logprobs).

Layout, per row: [left pad | prompt | response | right pad] over T = prompt_len + response_len tokens;
the prompt occupies columns [0, prompt_len) (left-padded), the response columns [prompt_len, T)
(right-padded). `segment_ids` says what each token is:

  PAD = 0       not a token (never attended to, never trained)
  PROMPT = 1    context
  HINT = 2      a trace-prefix token: inside the prompt (GHPO placement) or the first tokens of the
                response, which the model then continues (LUFFY / QuestA placement); never in the
                policy-gradient loss, the KL or the entropy
  RESPONSE = 3  the model's own sampled tokens: the policy-gradient loss tokens

Logprob alignment: `old_logp[:, t]` (and `ref_logp[:, t]`) is the logprob of `tokens[:, t]` given
`tokens[:, :t]`, i.e. it comes from the logits at position t - 1. The sampler's per-token logprobs of
the response therefore go straight into columns [prompt_len, T). Entries outside the loss tokens are
ignored (0 by convention).
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from flax import struct

PAD, PROMPT, HINT, RESPONSE = 0, 1, 2, 3


@struct.dataclass
class RLBatch:
  """Arrays of a batch of B sequences of T tokens; `prompt_len` is static (the step compiles once per shape).

  tokens: int32 [B, T]; segment_ids: int32 [B, T] (PAD/PROMPT/HINT/RESPONSE); advantages: float32 [B];
  old_logp: float32 [B, T]; ref_logp: float32 [B, T] or None (needed when kl_coef != 0).
  """
  tokens: jnp.ndarray
  segment_ids: jnp.ndarray
  advantages: jnp.ndarray
  old_logp: jnp.ndarray
  ref_logp: jnp.ndarray | None = None
  prompt_len: int = struct.field(pytree_node=False, default=0)

  @property
  def batch_size(self) -> int:
    return self.tokens.shape[0]

  @property
  def response_len(self) -> int:
    return self.tokens.shape[1] - self.prompt_len

  def to_global(self, sharding) -> "RLBatch":
    """The batch placed once: every array field (whatever fields the class has) as a global array from
    this process's rows (parallel.hosts.global_from_local); None stays None, static fields are kept."""
    from jaxghpo.parallel import hosts  # here: the batch type itself needs no devices
    placed = {f.name: hosts.global_from_local(getattr(self, f.name), sharding)
              for f in dataclasses.fields(self)
              if f.metadata.get("pytree_node", True) and getattr(self, f.name) is not None}
    return self.replace(**placed)

  def valid_mask(self):
    """bool [B, T]: real tokens (attended to by the model)."""
    return self.segment_ids != PAD

  def loss_mask(self):
    """bool [B, T]: the policy-gradient loss tokens (the model's own response tokens)."""
    cols = jnp.arange(self.tokens.shape[1]) >= self.prompt_len
    return (self.segment_ids == RESPONSE) & cols[None, :]

  def response_hint_mask(self):
    """bool [B, T]: hint tokens placed in the response (the only hint tokens hint_nll may train on)."""
    cols = jnp.arange(self.tokens.shape[1]) >= self.prompt_len
    return (self.segment_ids == HINT) & cols[None, :]


def make_batch(prompt_tokens, prompt_valid, response_tokens, response_valid, advantages, old_logp=None,
               ref_logp=None, *, prompt_hint=None, response_hint_len=None) -> RLBatch:
  """Builds and checks an RLBatch on the host from the sampler's layout (numpy in, numpy arrays out).

  Args:
    prompt_tokens: int [B, Lp] left-padded prompts; prompt_valid: bool [B, Lp] (True on real tokens).
    response_tokens: int [B, N] right-padded responses; response_valid: bool [B, N].
    advantages: float [B] per sequence.
    old_logp: float [B, N] the sampler's logprob of each response token (or None: zeros, for
      cfg.recompute_old_logp); ref_logp: float [B, N] or None.
    prompt_hint: bool [B, Lp], hint tokens inside the prompt (GHPO placement), or None.
    response_hint_len: int [B], the number of leading response tokens that are hint (LUFFY / QuestA
      placement: forced, not sampled), or None.

  Raises:
    ValueError naming the argument whose shape or padding layout is wrong.
  """
  prompt_tokens = np.asarray(prompt_tokens, np.int32)
  response_tokens = np.asarray(response_tokens, np.int32)
  prompt_valid = np.asarray(prompt_valid, bool)
  response_valid = np.asarray(response_valid, bool)
  B, Lp = prompt_tokens.shape
  N = response_tokens.shape[1]
  for name, arr, shape in (("prompt_valid", prompt_valid, (B, Lp)), ("response_tokens", response_tokens, (B, N)),
                           ("response_valid", response_valid, (B, N))):
    if arr.shape != shape:
      raise ValueError(f"{name} has shape {arr.shape}; expected {shape}")
  # Left padding: once a prompt starts, it continues to column Lp - 1; right padding: the reverse.
  if np.any(prompt_valid[:, :-1] & ~prompt_valid[:, 1:]):
    row = int(np.argmax(np.any(prompt_valid[:, :-1] & ~prompt_valid[:, 1:], axis=1)))
    raise ValueError(f"prompt_valid row {row} is not left-padded (a pad follows a real token)")
  if np.any(~response_valid[:, :-1] & response_valid[:, 1:]):
    row = int(np.argmax(np.any(~response_valid[:, :-1] & response_valid[:, 1:], axis=1)))
    raise ValueError(f"response_valid row {row} is not right-padded (a real token follows a pad)")
  if np.any(~prompt_valid[:, -1] & response_valid[:, 0]):
    raise ValueError("a row has a response but an empty prompt; every response needs at least one prompt token")

  prompt_seg = np.where(prompt_valid, PROMPT, PAD).astype(np.int32)
  if prompt_hint is not None:
    prompt_hint = np.asarray(prompt_hint, bool)
    if prompt_hint.shape != (B, Lp) or np.any(prompt_hint & ~prompt_valid):
      raise ValueError(f"prompt_hint must be bool [B, Lp] = {(B, Lp)} and lie on real prompt tokens")
    prompt_seg = np.where(prompt_hint, HINT, prompt_seg)
  response_seg = np.where(response_valid, RESPONSE, PAD).astype(np.int32)
  if response_hint_len is not None:
    hint_len = np.asarray(response_hint_len, np.int64)
    if hint_len.shape != (B,) or np.any(hint_len < 0) or np.any(hint_len > response_valid.sum(1)):
      raise ValueError("response_hint_len must be int [B] with 0 <= hint length <= the response length")
    response_seg = np.where(np.arange(N)[None, :] < hint_len[:, None], HINT, response_seg)

  def response_cols(x, name):
    if x is None:
      return None
    x = np.asarray(x, np.float32)
    if x.shape != (B, N):
      raise ValueError(f"{name} has shape {x.shape}; expected [B, N] = {(B, N)} (one logprob per response token)")
    return np.concatenate([np.zeros((B, Lp), np.float32), x], axis=1)

  advantages = np.asarray(advantages, np.float32)
  if advantages.shape != (B,):
    raise ValueError(f"advantages has shape {advantages.shape}; expected [B] = {(B,)} (one per sequence)")
  old = response_cols(old_logp, "old_logp")
  return RLBatch(
      tokens=np.concatenate([prompt_tokens, response_tokens], axis=1),
      segment_ids=np.concatenate([prompt_seg, response_seg], axis=1),
      advantages=advantages,
      old_logp=np.zeros((B, Lp + N), np.float32) if old is None else old,
      ref_logp=response_cols(ref_logp, "ref_logp"),
      prompt_len=Lp,
  )


def guide_batch(batch: RLBatch, prompt_hint) -> RLBatch:
  """The Guide loss's batch (rl.guide; docs/DESIGN.md, "The Guide loss") from a host batch whose prompt
  columns end with a trace-prefix hint laid out as the response would start (templates' "response"
  rendering): the hint tokens become policy-gradient tokens (segment RESPONSE) with old logprob 0, and
  prompt_len becomes 1, so the step computes logprobs over them.

  Why old logprob 0: the importance ratio is pi_theta(token | unhinted prompt, tokens before) over the
  probability the hinted sampling distribution gave the token; the hint's tokens were given, not drawn
  (probability 1), and the sampled tokens keep the sampler's logprobs (drawn with the hint in context).
  prompt_hint: bool [B, prompt_len], the hint columns (on real prompt tokens, never column 0).
  """
  prompt_hint = np.asarray(prompt_hint, bool)
  B, Lp = prompt_hint.shape
  if batch.prompt_len != Lp or B != batch.batch_size:
    raise ValueError(f"prompt_hint has shape {prompt_hint.shape}; expected [B, prompt_len] = "
                     f"{(batch.batch_size, batch.prompt_len)}")
  seg = np.asarray(batch.segment_ids).copy()
  if np.any(prompt_hint & (seg[:, :Lp] == PAD)) or np.any(prompt_hint[:, 0]):
    raise ValueError("prompt_hint must lie on real prompt tokens after the first column (the prompt before "
                     "the hint is the context every hint token is scored in)")
  seg[:, :Lp] = np.where(prompt_hint, RESPONSE, seg[:, :Lp])
  old = np.asarray(batch.old_logp).copy()
  old[:, :Lp] = np.where(prompt_hint, 0.0, old[:, :Lp])
  return batch.replace(segment_ids=seg, old_logp=old, prompt_len=1)
