"""Token length of every row's rendered prompt with a given hint ratio, measured in batches.

The trainer pads prompts to `max_prompt_len`; a row whose prompt plus its longest hint does not fit
would stop the run at sampling (and again at every resume, since the pipeline replays that batch).
So every row is measured at start, the same way `groups.render_prompts` counts it
(len(prompt_ids) + len(hint_ids) from `templates.render`), with the texts encoded in batched
tokenizer calls (a fast tokenizer encodes a batch in parallel in Rust).

    lengths_N = prompt_lengths(examples, ratio, unit="steps", placement="prompt", style="plain",
                               tokenizer=tok)          # int64 [N]
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxghpo.curriculum import hints as hints_lib
from jaxghpo.data import templates
from jaxghpo.data.example import Example

BATCH_ROWS = 2048  # texts per tokenizer call


def _encoded_lengths(texts: Sequence[str], add_special: bool, tokenizer) -> np.ndarray:
  """int64 [len(texts)]: token count of each text, encoded BATCH_ROWS at a time."""
  out = np.zeros(len(texts), np.int64)
  for start in range(0, len(texts), BATCH_ROWS):
    chunk = list(texts[start:start + BATCH_ROWS])
    ids = tokenizer(chunk, add_special_tokens=add_special, return_attention_mask=False,
                    return_token_type_ids=False, verbose=False)["input_ids"]
    out[start:start + len(chunk)] = [len(x) for x in ids]
  return out


def prompt_lengths(examples: Sequence[Example], ratio: float, *, unit: str, placement: str, style: str,
                   tokenizer) -> np.ndarray:
  """int64 [N]: tokens the sampler is given for each example with its hint cut at `ratio`.

  Equal to len(prompt_ids) + len(hint_ids) of templates.render(example, cut(ratio), ...), which is
  what groups.render_prompts compares with max_prompt_len.
  """
  n = len(examples)
  texts, specials, prefixes = [], [], []
  for ex in examples:
    hint = hints_lib.cut(ex.steps, ratio, unit, tokenizer=tokenizer, step_sep=ex.step_sep) if ratio > 0 else ""
    text, add_special, prefix = templates.render_text(ex, hint, placement, tokenizer, style)
    texts.append(text)
    specials.append(add_special)
    prefixes.append(prefix)
  lengths = np.zeros(n, np.int64)
  specials_N = np.asarray(specials, bool)
  for flag in (False, True):
    idx = np.flatnonzero(specials_N == flag)
    if idx.size:
      lengths[idx] += _encoded_lengths([texts[i] for i in idx], flag, tokenizer)
  with_prefix = [i for i in range(n) if prefixes[i]]
  if with_prefix:
    lengths[with_prefix] += _encoded_lengths([prefixes[i] for i in with_prefix], False, tokenizer)
  return lengths
