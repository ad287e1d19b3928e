"""Exact (teacher-forced) measures of a policy on problems whose valid trace is unique: no sampling noise.

For a task whose valid trace is unique (the trace IS the solution), exp(log p(trace + EOS | prompt)) at T = 1
is the exact probability that one sample is valid (true_trace_logprob). Per problem, with line 1 the
first trace line and its separator (the line that copies all but one operation, the hardest one):

  log p(trace)                = log p(line 1 | prompt) + log p(rest | prompt, line 1)   (one token sequence)
  first_line_logp             = log p(trace) - log p(rest | prompt, line 1)
  p_rest_given_line1          = exp(log p(rest | prompt, line 1)): the exact valid pass@1 with a one-step
                                hint placed as the start of the response

Metrics (means over the problems): p_valid (mean exact probability of the valid trace: the expected
unhinted valid pass@1), trace_logp (mean log-probability of the trace), first_line_logp,
p_rest_given_line1. The runner logs them as eval/exact/<name>/<metric> for each of the problems' exact sets
(experiment.Problems.exact_sets: "level_L" for each level the task names, e.g. the shipped task's exact_levels).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

METRICS = ("p_valid", "trace_logp", "first_line_logp", "p_rest_given_line1")


def true_trace_logprob(model, tokenizer, examples: Sequence, *, hints: Sequence[str] | None = None,
                       placement: str = "prompt", style: str = "plain", batch_size: int = 128) -> np.ndarray:
  """float64 [N]: log-probability that sampling at T = 1 writes each example's true trace + EOS.

  For a task whose valid trace is unique (a valid trace IS the solution), exp of this is the
  exact expected valid pass@1 of a problem at T = 1, with no sampling noise: the per-problem success
  probability that the competence histogram is made of. hints: per example a hint prefix of its
  solution ("" = none); the hint is context, only the rest of the trace is scored.
  """
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from jaxghpo import models
  from jaxghpo.data import templates

  @nnx.jit
  def logp_fn(m, toks, valid, mask):
    logits = models.logits_padded(m, toks, valid)[:, :-1].astype(jnp.float32)
    logp = jax.nn.log_softmax(logits, -1)
    tok_logp = jnp.take_along_axis(logp, toks[:, 1:, None], -1)[..., 0]
    return (tok_logp * mask[:, 1:]).sum(-1)

  examples = list(examples)
  hints = [""] * len(examples) if hints is None else list(hints)
  seqs = []
  for ex, hint in zip(examples, hints):
    r = templates.render(ex, hint, placement, tokenizer, style)
    tgt = tokenizer.encode(templates.target_text(ex, hint, placement, style, prompt_text=r.prompt_text),
                           add_special_tokens=False)
    context = list(r.prompt_ids) + list(r.hint_ids)
    seqs.append((context, tgt + [tokenizer.eos_token_id]))
  max_len = max((len(c) + len(t) for c, t in seqs), default=1)
  max_len = -(-max_len // 8) * 8  # one shape per 8 tokens of length: few compiles
  out = np.zeros(len(seqs), np.float64)
  for start in range(0, len(seqs), batch_size):
    chunk = seqs[start:start + batch_size]
    toks = np.full((batch_size, max_len), tokenizer.pad_token_id, np.int32)
    valid = np.zeros((batch_size, max_len), bool)
    mask = np.zeros((batch_size, max_len), np.float32)
    for i, (context, tgt) in enumerate(chunk):
      ids = context + tgt
      toks[i, :len(ids)] = ids
      valid[i, :len(ids)] = True
      mask[i, len(context):len(ids)] = 1.0
    out[start:start + len(chunk)] = np.asarray(logp_fn(model, toks, valid, mask))[:len(chunk)]
  return out


def first_step_hint(example) -> str:
  """The one-step hint of a trace: its first line and the separator after it."""
  if len(example.steps) < 2:
    raise ValueError(f"problem {example.problem_id} has {len(example.steps)} trace line(s); the one-step hint "
                     "needs at least 2 (exact sets of levels >= 2)")
  return example.steps[0] + example.step_sep


def trace_metrics(model, tokenizer, examples: Sequence, *, style: str = "plain") -> dict[str, float]:
  """{metric: mean over `examples`} of METRICS (module docstring) for `model` at T = 1; one-line traces
  (level 1) have no first-line split: only p_valid and trace_logp."""
  examples = list(examples)
  if not examples:
    raise ValueError("trace_metrics needs at least one problem")
  full = true_trace_logprob(model, tokenizer, examples, style=style)
  if any(len(ex.steps) < 2 for ex in examples):
    return {"p_valid": float(np.mean(np.exp(full))), "trace_logp": float(np.mean(full))}
  rest = true_trace_logprob(model, tokenizer, examples, hints=[first_step_hint(ex) for ex in examples],
                                       placement="response", style=style)
  return {"p_valid": float(np.mean(np.exp(full))), "trace_logp": float(np.mean(full)),
          "first_line_logp": float(np.mean(full - rest)), "p_rest_given_line1": float(np.mean(np.exp(rest)))}
