"""Supervised fine-tuning on full solution traces (teacher forcing): the warm start of an RL run.

The embedded experiment's base policy is made this way (tools/make_base_policy.py), and a real user
warm-starts a model on traces before RL with ``config.mode = "sft"``. Sequences are
``prompt + target + EOS``, right-padded to a fixed length; only target and EOS tokens are in the loss.
With ``hint_prob > 0`` some prompts carry a random prefix of the trace as an in-prompt hint, so the
model knows the hinted format before GHPO ever shows it one.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxghpo import models
from jaxghpo.curriculum import hints as hints_lib
from jaxghpo.data import templates
from jaxghpo.data.example import Example


@dataclasses.dataclass
class SFTBatch:
  tokens_BxT: np.ndarray     # int32, right-padded with pad_id
  loss_mask_BxT: np.ndarray  # float32, 1 where tokens[:, t] is a target token (predicted from t-1)
  valid_BxT: np.ndarray      # bool, 1 on real tokens


def encode_examples(examples: Sequence[Example], tokenizer, *, max_len: int, rng: np.random.Generator,
                    hint_prob: float = 0.0, placement: str = "prompt", style: str = "plain",
                    hint_unit: str = "steps") -> SFTBatch:
  """Teacher-forcing rows: prompt (optionally with a random hint of whole steps) + target + EOS."""
  pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
  B = len(examples)
  tokens = np.full((B, max_len), pad_id, np.int32)
  loss = np.zeros((B, max_len), np.float32)
  valid = np.zeros((B, max_len), bool)
  for i, ex in enumerate(examples):
    hint = ""
    if hint_prob > 0 and len(ex.steps) > 1 and rng.random() < hint_prob:
      n = int(rng.integers(1, len(ex.steps)))  # 1..n_steps-1 whole steps: never the answer
      hint = hints_lib.cut(ex.steps, n / len(ex.steps) + 1e-9, hint_unit, tokenizer=tokenizer,
                           step_sep=ex.step_sep)
    rendered = templates.render(ex, hint, placement, tokenizer, style)
    target = templates.target_text(ex, hint, placement, style, prompt_text=rendered.prompt_text)
    target_ids = list(rendered.hint_ids) + tokenizer.encode(target, add_special_tokens=False) + [eos_id]
    prompt_ids = list(rendered.prompt_ids)
    n = len(prompt_ids) + len(target_ids)
    if n > max_len:
      raise ValueError(f"problem {ex.problem_id} needs {n} tokens (prompt {len(prompt_ids)} + target "
                       f"{len(target_ids)}) but max_len={max_len}; raise config.sft.max_len")
    tokens[i, :n] = prompt_ids + target_ids
    valid[i, :n] = True
    # Hint tokens of the response placement are forced context, not targets.
    loss[i, len(prompt_ids) + len(rendered.hint_ids):n] = 1.0
  return SFTBatch(tokens, loss, valid)


def sft_loss(model: models.Transformer, tokens_BxT, loss_mask_BxT, valid_BxT):
  """(mean cross-entropy over target tokens, number of target tokens)."""
  logits = models.logits_padded(model, tokens_BxT, valid_BxT)[:, :-1]
  logp = jax.nn.log_softmax(logits, axis=-1)
  nll = -jnp.take_along_axis(logp, tokens_BxT[:, 1:, None], axis=-1)[..., 0]
  mask = loss_mask_BxT[:, 1:]
  count = jnp.maximum(mask.sum(), 1.0)
  return (nll * mask).sum() / count, count


def make_sft_step(graphdef, optimizer: optax.GradientTransformation):
  """A jitted (params, opt_state, tokens, loss_mask, valid) -> (params, opt_state, loss)."""

  def step(params, opt_state, tokens, loss_mask, valid):
    def loss_fn(p):
      return sft_loss(nnx.merge(graphdef, p), tokens, loss_mask, valid)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))
