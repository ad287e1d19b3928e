"""The policy loss: PPO clipped surrogate (clip-higher, dual clip), KL to a reference, entropy bonus.

Shapes: B sequences, T tokens. Every per-token input is aligned so that [:, t] belongs to token t
(its logprob given tokens[:, :t]). `mask` marks the tokens the policy gradient trains on (the model's
own response tokens); hint tokens are never in it. `hint_mask` marks hint tokens placed in the
response (LUFFY / QuestA placement) for the optional UFT-style likelihood term.

Exact aggregation. Every aggregation mode is a ratio numerator / denominator whose denominator
depends on the masks only:
  token-mean               sum_{b,t} l_bt m_bt                       / sum_{b,t} m_bt
  seq-mean-token-mean      sum_b (sum_t l_bt m_bt / sum_t m_bt)       / #sequences
  seq-mean-token-sum       sum_b sum_t l_bt m_bt                      / #sequences
  seq-mean-token-sum-norm  sum_b sum_t l_bt m_bt / norm_len           / #sequences   (Dr. GRPO)
where #sequences counts the sequences with at least one loss token: a padding row (no response, or a
group dropped to keep the batch shape) neither adds to nor dilutes the loss. `policy_loss_terms`
returns the numerators (`sums`) and denominators (`counts`) of one (micro-)batch; sums and counts
of several micro-batches or data shards add up (`merge_terms`), and `finalize` divides once, so a
split batch gives exactly the loss of the whole batch. The train step computes the denominators of
the whole batch first and differentiates `weighted_loss(micro_sums, batch_counts)` per micro-batch,
so the summed gradients are those of the whole batch too.

Metrics (token means over the loss tokens unless said otherwise):
  loss            the total loss that is minimised
  pg_loss         the clipped surrogate, in the configured aggregation mode
  kl              KL to the reference with cfg.kl_estimator (0 when no reference is given)
  entropy         mean per-token entropy (0 when none is given)
  approx_kl       KL to the old (sampling) policy, k3 estimator: exp(old - logp) - (old - logp) - 1
  clip_frac_high  A > 0 and ratio > 1 + clip_high (the upper clip is active)
  clip_frac_low   A < 0 and ratio < 1 - clip_low (the lower clip is active)
  clip_frac_dual  A < 0 and the dual clip bound -A * clip_c is active
  ratio_mean / ratio_max / ratio_min   importance ratio over the loss tokens (max/min 0 when none)
  hint_nll        mean negative log-likelihood of the hint tokens in the response (0 when none)
  num_tokens / num_seqs / num_hint_tokens   the denominators
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from jaxghpo.registry import Registry

LOG_RATIO_CLAMP = 20.0  # |logp - old_logp| clamp before exp (verl)
K3_CLAMP = 10.0  # k3 clamp (verl's low_var_kl)

_MAX, _MIN = "max/", "min/"  # sums keys combined by max / min instead of +


def token_entropy(logits_BxTxV, temperature: float = 1.0):
  """float32 [B, T]: entropy (nats) of softmax(logits / temperature) at every position."""
  z = logits_BxTxV.astype(jnp.float32) / temperature
  logp = jax.nn.log_softmax(z, axis=-1)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def _logprob_entropy(hidden_BxCxD, head_DxV, targets_BxC, temperature: float):
  """logp and entropy [B, C] of one block of positions; the [B, C, V] float32 logits live only here."""
  from jaxghpo.models.layers import matmul_2d  # the model's own head matmul: the same numbers as its logits
  z_BxCxV = matmul_2d(hidden_BxCxD, head_DxV).astype(jnp.float32) / temperature
  lse_BxC = jax.nn.logsumexp(z_BxCxV, axis=-1)
  target_BxC = jnp.take_along_axis(z_BxCxV, targets_BxC[..., None], axis=-1)[..., 0]
  entropy_BxC = lse_BxC - jnp.sum(jax.nn.softmax(z_BxCxV, axis=-1) * z_BxCxV, axis=-1)
  return target_BxC - lse_BxC, entropy_BxC


def chunk_columns(rows: int, length: int, chunk_tokens: int) -> int:
  """Positions per chunk of `token_logprobs`: chunk_tokens / rows (at least 1), all of them when 0."""
  if chunk_tokens <= 0:
    return length
  return max(1, min(length, chunk_tokens // max(rows, 1)))


def token_logprobs(hidden_BxNxD, head_DxV, targets_BxN, temperature: float = 1.0, chunk_tokens: int = 0):
  """(logp_BxN, entropy_BxN), float32: log_softmax(hidden @ head / temperature) at each target, and the
  entropy of that distribution, without a [B, N, V] float32 array when chunk_tokens > 0.

  hidden [B, N, D] (final-norm hidden states, compute dtype), head [D, V], targets int [B, N].
  With chunk_tokens > 0 the N positions are cut into blocks of C = chunk_tokens // B positions (of every
  row, so a batch-sharded hidden state stays sharded) and a lax.map computes each block's logits,
  logsumexp, target logit and entropy; the block is rematerialised (jax.checkpoint) in the backward
  pass, so at most one block's [B, C, V] logits and their gradient are live. Same numbers as the
  unchunked computation (each row's logits are the same dot products).
  """
  B, N, D = hidden_BxNxD.shape
  C = chunk_columns(B, N, chunk_tokens)
  if C >= N:
    return _logprob_entropy(hidden_BxNxD, head_DxV, targets_BxN, temperature)
  blocks = -(-N // C)
  extra = blocks * C - N
  h = jnp.pad(hidden_BxNxD, ((0, 0), (0, extra), (0, 0))) if extra else hidden_BxNxD
  t = jnp.pad(targets_BxN, ((0, 0), (0, extra))) if extra else targets_BxN
  h_KxBxCxD = h.reshape(B, blocks, C, D).swapaxes(0, 1)
  t_KxBxC = t.reshape(B, blocks, C).swapaxes(0, 1)
  block = jax.checkpoint(lambda ht: _logprob_entropy(ht[0], head_DxV, ht[1], temperature))
  logp_KxBxC, entropy_KxBxC = jax.lax.map(block, (h_KxBxCxD, t_KxBxC))
  unblock = lambda x: x.swapaxes(0, 1).reshape(B, blocks * C)[:, :N]
  return unblock(logp_KxBxC), unblock(entropy_KxBxC)


# KL estimators (config.rl.kl_estimator): fn(logp_BxT, ref_logp_BxT) -> per-token KL(policy || reference)
# estimates from the sampled tokens' logprobs. A new one is one decorated function.
KL_ESTIMATORS: Registry[Callable] = Registry("rl.kl_estimator")


@KL_ESTIMATORS.register("k1")
def kl_k1(logp_BxT, ref_logp_BxT):
  """k1 = logp - ref."""
  return logp_BxT - ref_logp_BxT


@KL_ESTIMATORS.register("k2")
def kl_k2(logp_BxT, ref_logp_BxT):
  """k2 = 0.5 (logp - ref)^2."""
  return 0.5 * jnp.square(logp_BxT - ref_logp_BxT)


@KL_ESTIMATORS.register("k3")
def kl_k3(logp_BxT, ref_logp_BxT):
  """k3 = exp(ref - logp) - (ref - logp) - 1, with ref - logp clamped to [-20, 20] and k3 to [-10, 10]
  (verl's low_var_kl)."""
  d = jnp.clip(ref_logp_BxT - logp_BxT, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  return jnp.clip(jnp.exp(d) - d - 1.0, -K3_CLAMP, K3_CLAMP)


def kl_penalty(logp_BxT, ref_logp_BxT, estimator: str = "k3"):
  """Per-token KL(policy || reference) estimate with the estimator registered as `estimator`."""
  if estimator not in KL_ESTIMATORS:
    raise ValueError(f"kl_estimator={estimator!r} is not one of {KL_ESTIMATORS.names()} ({KL_ESTIMATORS.key}; "
                     "add one with @rl.KL_ESTIMATORS.register(name))")
  return KL_ESTIMATORS.get(estimator)(logp_BxT, ref_logp_BxT)


def _cfg(cfg, key, default):
  return cfg[key] if key in cfg else default


@dataclasses.dataclass(frozen=True)
class LossAgg:
  """A loss aggregation: numerator(x_BxT, mask_BxT, norm_len) -> scalar over one (micro-)batch, with x already
  zero outside the mask; denominator: the loss_counts key ("tokens" or "seqs") it is divided by."""
  numerator: Callable
  denominator: str


# Loss aggregations (config.rl.loss_agg), see the module docstring. A new one is one decorated function.
LOSS_AGG_MODES: Registry[LossAgg] = Registry("rl.loss_agg")


def register_loss_agg(name: str, *, denominator: str = "seqs") -> Callable[[Callable], Callable]:
  """Decorator: registers numerator(x_BxT, mask_BxT, norm_len) as loss aggregation `name`, divided by the
  batch's count of `denominator` ("tokens": loss tokens, "seqs": sequences with >= 1 loss token)."""
  if denominator not in ("tokens", "seqs"):
    raise ValueError(f"{LOSS_AGG_MODES.key} {name!r}: denominator={denominator!r} is not 'tokens' or 'seqs'")

  def add(numerator: Callable) -> Callable:
    LOSS_AGG_MODES.register(name)(LossAgg(numerator, denominator))
    return numerator

  return add


@register_loss_agg("token-mean", denominator="tokens")
def _token_mean(x_BxT, mask_BxT, norm_len):
  return jnp.sum(x_BxT)


@register_loss_agg("seq-mean-token-mean")
def _seq_mean_token_mean(x_BxT, mask_BxT, norm_len):
  return jnp.sum(jnp.sum(x_BxT, axis=1) / jnp.maximum(jnp.sum(mask_BxT, axis=1), 1))


@register_loss_agg("seq-mean-token-sum")
def _seq_mean_token_sum(x_BxT, mask_BxT, norm_len):
  return jnp.sum(jnp.sum(x_BxT, axis=1))


@register_loss_agg("seq-mean-token-sum-norm")
def _seq_mean_token_sum_norm(x_BxT, mask_BxT, norm_len):
  return jnp.sum(jnp.sum(x_BxT, axis=1)) / norm_len


def loss_agg(mode: str) -> LossAgg:
  """The aggregation registered as `mode` (a ValueError naming rl.loss_agg and the known ones otherwise)."""
  if mode not in LOSS_AGG_MODES:
    raise ValueError(f"loss_agg={mode!r} is not one of {LOSS_AGG_MODES.names()} ({LOSS_AGG_MODES.key}; "
                     "add one with @rl.register_loss_agg(name))")
  return LOSS_AGG_MODES.get(mode)


def _agg_numerator(x_BxT, mask_BxT, mode: str, norm_len: float):
  """The numerator of `mode` for per-token values x (mask already applied by the caller)."""
  return loss_agg(mode).numerator(jnp.where(mask_BxT, x_BxT, 0.0), mask_BxT, norm_len)


def loss_counts(mask_BxT, hint_mask_BxT=None) -> dict:
  """Denominators (float32 scalars) of a batch: loss tokens, sequences with >= 1 loss token, hint tokens."""
  mask_BxT = jnp.asarray(mask_BxT).astype(bool)
  tokens_B = jnp.sum(mask_BxT, axis=1, dtype=jnp.float32)
  hint = 0.0 if hint_mask_BxT is None else jnp.sum(jnp.asarray(hint_mask_BxT).astype(bool), dtype=jnp.float32)
  return {"tokens": jnp.sum(tokens_B), "seqs": jnp.sum((tokens_B > 0).astype(jnp.float32)),
          "hint_tokens": jnp.asarray(hint, jnp.float32)}


def agg_denominator(counts: dict, mode: str):
  return counts[loss_agg(mode).denominator]


def policy_loss_terms(logp, old_logp, advantages, mask, cfg, ref_logp=None, *, entropy=None, hint_mask=None,
                      norm_len=None):
  """Numerators and denominators of the loss and metrics of one (micro-)batch.

  Args:
    logp: float32 [B, T], the current policy's logprob of each token (differentiable).
    old_logp: float32 [B, T], the sampling policy's logprobs (treated as constants).
    advantages: float32 [B] per sequence (or [B, T] per token).
    mask: bool/0-1 [B, T], the loss tokens (response tokens, never hint tokens).
    cfg: ConfigDict with clip_low, clip_high, clip_c, kl_coef, kl_estimator, entropy_coef, loss_agg
      (optional: loss_norm_len, hint_nll_coef); see rl.default_config().
    ref_logp: float32 [B, T] reference logprobs; required when cfg.kl_coef != 0.
    entropy: float32 [B, T] per-token entropies (rl.token_entropy); required when cfg.entropy_coef != 0.
    hint_mask: bool [B, T], hint tokens placed in the response (for hint_nll; never trained by the pg loss).
    norm_len: seq-mean-token-sum-norm's constant when cfg.loss_norm_len is 0 (default: T).

  Returns:
    (sums, counts): dicts of float32 scalars. Values at positions outside `mask` (and `hint_mask`)
    never reach the loss, the metrics or the gradients, even when they are NaN or inf.
  """
  mask = jnp.asarray(mask).astype(bool)
  B, T = mask.shape
  kl_coef, entropy_coef = cfg.kl_coef, cfg.entropy_coef
  mode = cfg.loss_agg
  norm_len = _cfg(cfg, "loss_norm_len", 0) or norm_len or T

  # Sanitise first: a NaN outside the mask would survive `0 * NaN` in the backward pass.
  raw_logp = logp
  logp = jnp.where(mask, logp, 0.0)
  old_logp = jnp.where(mask, jax.lax.stop_gradient(old_logp), 0.0)
  adv = jnp.asarray(advantages, jnp.float32)
  adv_BxT = jnp.broadcast_to(adv[:, None], (B, T)) if adv.ndim == 1 else adv
  adv_BxT = jnp.where(mask, adv_BxT, 0.0)

  log_ratio = jnp.clip(logp - old_logp, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
  ratio = jnp.exp(log_ratio)
  clipped_ratio = jnp.clip(ratio, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
  pg_unclipped = -adv_BxT * ratio
  pg_clipped = jnp.maximum(pg_unclipped, -adv_BxT * clipped_ratio)
  dual_bound = -adv_BxT * cfg.clip_c
  negative = adv_BxT < 0
  pg_BxT = jnp.where(negative, jnp.minimum(pg_clipped, dual_bound), pg_clipped)

  loss_BxT = pg_BxT
  kl_BxT = jnp.zeros_like(logp)
  if ref_logp is not None:
    kl_BxT = kl_penalty(logp, jnp.where(mask, jax.lax.stop_gradient(ref_logp), 0.0), cfg.kl_estimator)
  if kl_coef != 0:
    if ref_logp is None:
      raise ValueError(f"kl_coef={kl_coef} needs reference logprobs (ref_logp / batch.ref_logp from "
                       "rl.make_logprob_fn with the reference params); or set kl_coef=0")
    loss_BxT = loss_BxT + kl_coef * kl_BxT
  ent_BxT = jnp.zeros_like(logp) if entropy is None else jnp.where(mask, entropy, 0.0)
  if entropy_coef != 0:
    if entropy is None:
      raise ValueError(f"entropy_coef={entropy_coef} needs per-token entropies (entropy=rl.token_entropy(...))")
    loss_BxT = loss_BxT - entropy_coef * ent_BxT

  def tok_sum(x_BxT):
    return jnp.sum(jnp.where(mask, jax.lax.stop_gradient(x_BxT), 0.0))

  neg_log_ratio = -log_ratio
  approx_kl_BxT = jnp.exp(neg_log_ratio) - neg_log_ratio - 1.0
  sg_ratio = jax.lax.stop_gradient(ratio)
  sums = {
      "loss": _agg_numerator(loss_BxT, mask, mode, norm_len),
      "pg_loss": jax.lax.stop_gradient(_agg_numerator(pg_BxT, mask, mode, norm_len)),
      "kl": tok_sum(kl_BxT),
      "entropy": tok_sum(ent_BxT),
      "approx_kl": tok_sum(approx_kl_BxT),
      "clip_frac_high": tok_sum(((adv_BxT > 0) & (ratio > 1.0 + cfg.clip_high)).astype(jnp.float32)),
      "clip_frac_low": tok_sum((negative & (ratio < 1.0 - cfg.clip_low)).astype(jnp.float32)),
      "clip_frac_dual": tok_sum((negative & (pg_clipped > dual_bound)).astype(jnp.float32)),
      "ratio_mean": tok_sum(ratio),
      _MAX + "ratio": jnp.max(jnp.where(mask, sg_ratio, -jnp.inf)),
      _MIN + "ratio": jnp.min(jnp.where(mask, sg_ratio, jnp.inf)),
      "hint_nll": jnp.zeros((), jnp.float32),
  }
  if hint_mask is not None:
    hint_mask = jnp.asarray(hint_mask).astype(bool) & ~mask
    sums["hint_nll"] = -jnp.sum(jnp.where(hint_mask, raw_logp, 0.0))
  return sums, loss_counts(mask, hint_mask)


def merge_terms(a, b):
  """Adds the (sums, counts) of two disjoint parts of a batch (max/min for the extreme-value keys)."""
  (sums_a, counts_a), (sums_b, counts_b) = a, b
  sums = {}
  for key in sums_a:
    if key.startswith(_MAX):
      sums[key] = jnp.maximum(sums_a[key], sums_b[key])
    elif key.startswith(_MIN):
      sums[key] = jnp.minimum(sums_a[key], sums_b[key])
    else:
      sums[key] = sums_a[key] + sums_b[key]
  return sums, {k: counts_a[k] + counts_b[k] for k in counts_a}


def _safe_div(num, den):
  return num / jnp.maximum(den, 1.0)


def weighted_loss(sums: dict, counts: dict, cfg):
  """The scalar that is minimised: the aggregated loss plus hint_nll_coef x the mean hint NLL.

  `counts` may be those of a larger batch than `sums` (the train step passes the whole batch's
  denominators with one micro-batch's numerators, so micro-batch gradients add up exactly).
  """
  loss = _safe_div(sums["loss"], agg_denominator(counts, cfg.loss_agg))
  hint_nll_coef = _cfg(cfg, "hint_nll_coef", 0.0)
  if hint_nll_coef:
    loss = loss + hint_nll_coef * _safe_div(sums["hint_nll"], counts["hint_tokens"])
  return loss


def finalize(sums: dict, counts: dict, cfg):
  """(loss, metrics) from accumulated (sums, counts); see the module docstring for the metrics."""
  tokens = counts["tokens"]
  has_tokens = tokens > 0
  metrics = {
      "loss": weighted_loss(sums, counts, cfg),
      "pg_loss": _safe_div(sums["pg_loss"], agg_denominator(counts, cfg.loss_agg)),
      "hint_nll": _safe_div(sums["hint_nll"], counts["hint_tokens"]),
      "ratio_max": jnp.where(has_tokens, sums[_MAX + "ratio"], 0.0),
      "ratio_min": jnp.where(has_tokens, sums[_MIN + "ratio"], 0.0),
      "num_tokens": tokens,
      "num_seqs": counts["seqs"],
      "num_hint_tokens": counts["hint_tokens"],
  }
  for key in ("kl", "entropy", "approx_kl", "clip_frac_high", "clip_frac_low", "clip_frac_dual", "ratio_mean"):
    metrics[key] = _safe_div(sums[key], tokens)
  return metrics["loss"], metrics


def policy_loss(logp, old_logp, advantages, mask, cfg, ref_logp=None, *, entropy=None, hint_mask=None,
                norm_len=None):
  """(loss, metrics) of one batch (docs/DESIGN.md contract); arguments as in `policy_loss_terms`."""
  sums, counts = policy_loss_terms(logp, old_logp, advantages, mask, cfg, ref_logp, entropy=entropy,
                                   hint_mask=hint_mask, norm_len=norm_len)
  return finalize(sums, counts, cfg)
