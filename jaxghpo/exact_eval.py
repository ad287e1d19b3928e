"""Exact (teacher-forced) measures of a policy on problems whose valid trace is unique: no sampling noise.

For the letter chains a valid trace IS the solution, so exp(log p(trace + EOS | prompt)) at T = 1 is the
exact probability that one sample is valid (evaluation.true_trace_logprob). Per problem, with line 1 the
first trace line and its separator (the line that copies all but one operation, the hardest one):

  log p(trace)                = log p(line 1 | prompt) + log p(rest | prompt, line 1)   (one token sequence)
  first_line_logp             = log p(trace) - log p(rest | prompt, line 1)
  p_rest_given_line1          = exp(log p(rest | prompt, line 1)): the exact valid pass@1 with a one-step
                                hint placed as the start of the response

Metrics (means over the problems): p_valid (mean exact probability of the valid trace: the expected
unhinted valid pass@1), trace_logp (mean log-probability of the trace), first_line_logp,
p_rest_given_line1. The trainer logs them as eval/exact/level_L/<metric> for config.eval.exact_levels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxghpo import evaluation

METRICS = ("p_valid", "trace_logp", "first_line_logp", "p_rest_given_line1")


def first_step_hint(example) -> str:
  """The one-step hint of a trace: its first line and the separator after it."""
  if len(example.steps) < 2:
    raise ValueError(f"problem {example.problem_id} has {len(example.steps)} trace line(s); the one-step hint "
                     "needs at least 2 (use levels >= 2 in config.eval.exact_levels)")
  return example.steps[0] + example.step_sep


def trace_metrics(model, tokenizer, examples: Sequence, *, style: str = "plain") -> dict[str, float]:
  """{metric: mean over `examples`} of METRICS (module docstring) for `model` at T = 1; one-line traces
  (level 1) have no first-line split: only p_valid and trace_logp."""
  examples = list(examples)
  if not examples:
    raise ValueError("trace_metrics needs at least one problem")
  full = evaluation.true_trace_logprob(model, tokenizer, examples, style=style)
  if any(len(ex.steps) < 2 for ex in examples):
    return {"p_valid": float(np.mean(np.exp(full))), "trace_logp": float(np.mean(full))}
  rest = evaluation.true_trace_logprob(model, tokenizer, examples, hints=[first_step_hint(ex) for ex in examples],
                                       placement="response", style=style)
  return {"p_valid": float(np.mean(np.exp(full))), "trace_logp": float(np.mean(full)),
          "first_line_logp": float(np.mean(full - rest)), "p_rest_given_line1": float(np.mean(np.exp(rest)))}
