"""Token length of every row's rendered prompt with a given hint ratio, measured in batches.

The trainer pads prompts to `max_prompt_len`; a row whose prompt plus its longest hint does not fit
would stop the run at sampling (and again at every resume, since the pipeline replays that batch).
So every row is measured at start, the same way `groups.render_prompts` counts it
(len(prompt_ids) + len(hint_ids) from `templates.render`), with the texts encoded in batched
tokenizer calls (a fast tokenizer encodes a batch in parallel in Rust).

    lengths_N = prompt_lengths(examples, ratio, unit="steps", placement="prompt", style="plain",
                               tokenizer=tok)          # int64 [N], bool [N]

With `limit`, a text longer than limit x (the longest token's characters) cannot fit and is not
encoded (BPE on a 10 MB row takes minutes): its length is the lower bound ceil(chars / longest token),
which is above the limit.
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


def max_token_chars(tokenizer) -> int:
  """Characters of the longest token string in the vocabulary: no token covers more text than that."""
  return max(1, max((len(t) for t in tokenizer.get_vocab()), default=1))


def prompt_lengths(examples: Sequence[Example], ratio: float, *, unit: str, placement: str, style: str,
                   tokenizer, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """(int64 [N]: tokens the sampler is given for each example with its hint cut at `ratio`,
      bool [N]: the count is exact).

  Exact counts equal len(prompt_ids) + len(hint_ids) of templates.render(example, cut(ratio), ...),
  which is what groups.render_prompts compares with max_prompt_len; for a row that surely exceeds
  `limit` (given) the count is a lower bound above the limit, found without encoding the row.
  """
  n = len(examples)
  texts, specials, prefixes = [], [], []
  per_token = max_token_chars(tokenizer)
  for ex in examples:
    if limit is not None and len(ex.problem) > limit * per_token:  # too long before any hint: skip the cut
      texts.append(ex.problem)
      specials.append(False)
      prefixes.append("")
      continue
    hint = hints_lib.cut(ex.steps, ratio, unit, tokenizer=tokenizer, step_sep=ex.step_sep) if ratio > 0 else ""
    text, add_special, prefix = templates.render_text(ex, hint, placement, tokenizer, style)
    texts.append(text)
    specials.append(add_special)
    prefixes.append(prefix)
  lengths = np.zeros(n, np.int64)
  bound_N = np.asarray([-(-len(t) // per_token) - (-len(p) // per_token) for t, p in zip(texts, prefixes)], np.int64)
  surely_long_N = bound_N > limit if limit is not None else np.zeros(n, bool)
  lengths[surely_long_N] = bound_N[surely_long_N]
  prefixes = [p if not long else "" for p, long in zip(prefixes, surely_long_N)]
  specials_N = np.asarray(specials, bool)
  for flag in (False, True):
    idx = np.flatnonzero((specials_N == flag) & ~surely_long_N)
    if idx.size:
      lengths[idx] += _encoded_lengths([texts[i] for i in idx], flag, tokenizer)
  with_prefix = [i for i in range(n) if prefixes[i]]
  if with_prefix:
    lengths[with_prefix] += _encoded_lengths([prefixes[i] for i in with_prefix], False, tokenizer)
  return lengths, ~surely_long_N
