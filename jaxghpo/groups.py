"""One group rollout: problems + hint ratios -> prompts with hints -> G samples each -> scored completions.

Host side of the RL step between the scheduler and the train step. Everything here is per problem
(a "group" is the G responses to one prompt); the trainer decides which problems and which ratios.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jaxghpo.curriculum import hints as hints_lib
from jaxghpo.data import templates
from jaxghpo.data.example import Example


@dataclasses.dataclass
class Prompts:
  """Rendered prompts of B problems: what the sampler is given, and where the hint tokens are."""
  sampler_ids: list[list[int]]  # prompt (+ forced hint prefix for the "response" placement)
  prompt_len: np.ndarray        # int [B]: tokens of the prompt proper
  hint_in_prompt: np.ndarray    # int [B]: prompt tokens that are hint ("prompt" placement)
  hint_start: np.ndarray        # int [B]: index in sampler_ids of the first of them (templates.Rendered.hint_span)
  hint_in_response: np.ndarray  # int [B]: forced response-prefix tokens ("response" placement)
  hint_text: list[str]          # the hint as cut (for both placements)
  hint_steps: np.ndarray        # int [B]: whole trace steps in the hint (diagnostics)


def hint_texts(examples: Sequence[Example], ratios: np.ndarray, *, unit: str, corruption: str, tokenizer,
               rng: np.random.Generator) -> list[str]:
  """The hint of each problem at its ratio: a true trace prefix, or a corrupted one for the ablations."""
  out = []
  others = None
  if corruption == "other" and len({ex.problem_id for ex in examples}) > 1:
    others = hints_lib.pick_other([ex.problem_id for ex in examples], [ex.level for ex in examples], rng)
  for i, (ex, ratio) in enumerate(zip(examples, ratios)):
    ratio = float(ratio)
    if not ratio > 0:
      out.append("")
      continue
    if corruption == "none":
      out.append(hints_lib.cut(ex.steps, ratio, unit, tokenizer=tokenizer, step_sep=ex.step_sep))
      continue
    n_steps = hints_lib.num_hint_steps(ex.steps, ratio)
    if corruption == "shuffle":
      out.append(hints_lib.corrupt_shuffle(ex.steps, n_steps, rng, step_sep=ex.step_sep))
    elif corruption == "other":
      other = examples[int(others[i])] if others is not None else ex
      out.append(hints_lib.corrupt_other(other.steps, n_steps, step_sep=ex.step_sep))
    else:
      raise ValueError(f"config.hints.corruption={corruption!r} is not one of none, other, shuffle")
  return out


def render_prompts(examples: Sequence[Example], hint_text: Sequence[str], *, placement: str, style: str,
                   tokenizer, max_prompt_len: int) -> Prompts:
  sampler_ids, prompt_len, in_prompt, hint_start, in_response, steps = [], [], [], [], [], []
  for ex, hint in zip(examples, hint_text):
    r = templates.render(ex, hint, placement, tokenizer, style)
    ids = list(r.prompt_ids) + list(r.hint_ids)
    if len(ids) > max_prompt_len:
      raise ValueError(f"problem {ex.problem_id} with a hint of {len(hint)} characters needs {len(ids)} prompt "
                       f"tokens > config.rollout.max_prompt_len={max_prompt_len}; raise max_prompt_len "
                       "(it must hold the longest prompt plus the longest hint)")
    sampler_ids.append(ids)
    prompt_len.append(len(r.prompt_ids))
    start, end = r.hint_span  # exact, from the renderer: never the marker or the assistant header after it
    hint_start.append(start)
    in_prompt.append(end - start)
    in_response.append(len(r.hint_ids))
    steps.append(hint.count(ex.step_sep) if hint else 0)
  return Prompts(sampler_ids, np.asarray(prompt_len), np.asarray(in_prompt), np.asarray(hint_start),
                 np.asarray(in_response), list(hint_text), np.asarray(steps))


def hint_token_mask(prompts: Prompts, rows: np.ndarray, prompt_width: int) -> np.ndarray:
  """bool [R, prompt_width]: hint tokens inside the prompts left-padded to prompt_width ("prompt" placement).

  rows: int [R], the problem of each sampled row. The span is the renderer's (templates.Rendered.hint_span),
  so it covers exactly the hint's tokens whatever the template writes around them.
  """
  mask = np.zeros((len(rows), prompt_width), bool)
  for r, b in enumerate(rows):
    n = int(prompts.hint_in_prompt[b])
    if n:
      start = prompt_width - len(prompts.sampler_ids[b]) + int(prompts.hint_start[b])
      mask[r, start:start + n] = True
  return mask


def decode(tokenizer, tokens_RxN: np.ndarray, lengths_R: np.ndarray, eos_id: int | None) -> list[str]:
  """Completion texts: tokens up to the length, without the EOS token."""
  out = []
  for row, n in zip(tokens_RxN, lengths_R):
    ids = [int(t) for t in row[: int(n)]]
    if ids and eos_id is not None and ids[-1] == eos_id:
      ids = ids[:-1]
    out.append(tokenizer.decode(ids, skip_special_tokens=False))
  return out

