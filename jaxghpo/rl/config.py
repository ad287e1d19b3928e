"""Every key of the RL loss, train step and optimizer, with its default (`config.rl` in experiment configs).

One place for each default: `default_config()` lists them all; `resolve_config()` fills a partial
config from it and rejects unknown keys, so a typo on the command line fails at start.
"""
from __future__ import annotations

import ml_collections

from jaxghpo import sections, validation
from jaxghpo.rl.advantages import ESTIMATORS
from jaxghpo.rl.losses import KL_ESTIMATORS, LOSS_AGG_MODES

LR_SCHEDULES = ("warmup_cosine", "warmup_constant", "constant")


def default_config() -> ml_collections.ConfigDict:
  """The RL configuration with every key at its default."""
  c = ml_collections.ConfigDict()
  # Advantages (rl.group_advantages): "grpo" | "drgrpo" | "rloo" (or any registered name).
  c.advantage_estimator = "grpo"
  c.adv_eps = 1e-6  # grpo: (r - mean) / (std + adv_eps); verl 1e-6, TRL 1e-4

  # PPO clipped surrogate. Clip range [1 - clip_low, 1 + clip_high]; DAPO's clip-higher uses
  # clip_high = 0.28 > clip_low = 0.2. clip_c > 1 bounds the loss of negative-advantage tokens
  # (dual clip, verl's clip_ratio_c).
  c.clip_low = 0.2
  c.clip_high = 0.2
  c.clip_c = 3.0

  # KL to a frozen reference (computed only when kl_coef != 0) and entropy bonus.
  c.kl_coef = 0.0
  c.kl_estimator = "k3"  # "k1" | "k2" | "k3" (k3 clamped to [-10, 10] as verl does), or any registered name
  c.entropy_coef = 0.0

  # "token-mean" | "seq-mean-token-mean" | "seq-mean-token-sum" | "seq-mean-token-sum-norm" (or any registered
  # name: rl.register_loss_agg).
  c.loss_agg = "token-mean"
  # seq-mean-token-sum-norm (Dr. GRPO) divides each sequence's token sum by this constant;
  # 0 = the batch's response length (max_new_tokens).
  c.loss_norm_len = 0

  # Hint tokens (where they sit is config.hints.placement; the trainer lays batches out accordingly:
  # rl.make_batch prompt_hint= or response_hint_len=, and the segment ids carry it into the step) never
  # enter the policy-gradient loss, the KL or the entropy. With response-placed hints, hint_nll_coef > 0
  # adds a separate negative log-likelihood term on them (UFT), reported as metric hint_nll either way
  # (jaxghpo/derived.py checks that hint_nll_coef > 0 comes with hints.placement="response").
  c.hint_nll_coef = 0.0
  # The Guide loss (Guide-GRPO, arXiv 2506.13923, adapted to trace-prefix hints; docs/DESIGN.md): every
  # hinted sample is trained in the context WITHOUT the hint. Its row is [unhinted prompt | hint + sampled
  # response]; every token of hint + response is a policy-gradient token whose importance ratio is
  # pi_theta(token | unhinted prompt, tokens before) / pi_old(token | hinted context), with old = the
  # sampler's logprob for sampled tokens and 1 (log 0) for the given hint tokens, clipped as PPO
  # ([1 - clip_low, 1 + clip_high] per token, dual clip clip_c). Needs a curriculum that hints and
  # hint_nll_coef = 0 (checked by jaxghpo/derived.py).
  c.guide = False

  # Logprobs are log_softmax(logits / temperature): the sampler's temperature. In a run it is derived
  # from config.rollout.temperature (jaxghpo/derived.py) and is not a key of the experiment config.
  c.temperature = 1.0

  # Train step: gradient accumulation over micro_batches (the batch size must divide), ppo_epochs
  # optimizer updates on each batch; recompute_old_logp recomputes the old logprobs with the
  # current params before the first update instead of using the sampler's.
  c.micro_batches = 1
  c.ppo_epochs = 1
  c.recompute_old_logp = False
  # Logprobs and entropies are computed from the LM head in blocks of about this many tokens of a
  # micro-batch (rl.token_logprobs; positions per block = logprob_chunk_tokens // rows), so that the
  # [tokens, vocabulary] float32 logits of a whole micro-batch never exist: one block's logits
  # (x 4 bytes x vocabulary, divided over the batch shards) are live at a time. 0 = one block.
  c.logprob_chunk_tokens = 4096

  # Optimizer (rl.make_optimizer): AdamW, linear warm-up then cosine decay to
  # learning_rate * end_lr_ratio, gradients clipped by global norm (0 = no clipping).
  c.learning_rate = 1e-6
  c.lr_schedule = "warmup_cosine"  # "warmup_cosine" | "warmup_constant" | "constant"
  c.warmup_steps = 0
  c.end_lr_ratio = 0.0
  c.weight_decay = 0.01  # applied to matrices only (ndim >= 2), not to norms or biases
  c.b1 = 0.9
  c.b2 = 0.999
  c.adam_eps = 1e-8
  c.max_grad_norm = 1.0
  return c


def resolve_config(cfg=None) -> ml_collections.ConfigDict:
  """Returns default_config() overridden by `cfg` (a ConfigDict, dict or None), validated.

  Raises:
    KeyError: `cfg` has a key the RL config does not know (named, with the known keys).
    ValueError: a value is out of range or keys conflict (the keys are named).
  """
  out = sections.override(default_config(), cfg, "rl config")
  validate_config(out)
  return out


def validate_config(c: ml_collections.ConfigDict) -> None:
  """Checks ranges and conflicts; each error names the key(s) at fault and how to mend them."""

  def fail(msg):
    raise ValueError(f"rl config: {msg}")

  # Ranges of single keys: the one table (jaxghpo/validation.py); choices and key relations below.
  validation.check_ranges(c, prefix="rl.")
  # Choices are the registries' names (rl/advantages.py, rl/losses.py): a registered entry is valid here.
  if c.advantage_estimator not in ESTIMATORS:
    fail(f"advantage_estimator={c.advantage_estimator!r} is not one of {sorted(ESTIMATORS)} "
         "(register a new one with @rl.ESTIMATORS.register(name))")
  if c.kl_estimator not in KL_ESTIMATORS:
    fail(f"kl_estimator={c.kl_estimator!r} is not one of {KL_ESTIMATORS.names()} "
         "(register a new one with @rl.KL_ESTIMATORS.register(name))")
  if c.loss_agg not in LOSS_AGG_MODES:
    fail(f"loss_agg={c.loss_agg!r} is not one of {LOSS_AGG_MODES.names()} "
         "(register a new one with @rl.register_loss_agg(name))")
  if c.guide and c.hint_nll_coef > 0:
    fail(f"guide=True trains the hint tokens by the policy gradient; hint_nll_coef={c.hint_nll_coef} would "
         "train them a second time by likelihood: set one of them (hint_nll_coef=0 or guide=False)")
  if c.lr_schedule not in LR_SCHEDULES:
    fail(f"lr_schedule={c.lr_schedule!r} is not one of {LR_SCHEDULES}")
