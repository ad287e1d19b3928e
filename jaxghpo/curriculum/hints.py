"""Hint cutting: a prefix of a solution trace, by ratio, in units of steps, tokens or characters.

Pure functions of (steps, ratio). The hint text is always a prefix of the solution
`step_sep.join(steps)`. Below ratio 1 it never reaches into the last step (the final answer line):
the longest hint is everything before the last step, including the separator that precedes it, so
the model's continuation starts at a step boundary. At ratio 1 the hint is the whole solution.

Units:
  "steps"   floor(ratio * n_steps) whole steps, each followed by step_sep (GHPO's ratio applied to
            steps); backs off to an earlier step boundary if a LaTeX group spans steps.
  "tokens"  floor(ratio * n_tokens) tokens of the tokenized solution, cut on a token boundary (the
            text up to the end of the last kept token), then backed off to the last token boundary
            outside any LaTeX group: braces {} balanced (\\{ \\} are literal braces), no open $..$,
            $$..$$, \\(..\\) or \\[..\\].
  "chars"   GHPO's original cut, solution[:floor(ratio * n_chars)], with no repair (for comparison).

Corrupted hints for the scaffolding ablation: `corrupt_other` (another problem's trace prefix of a
similar length, the other problem picked with `pick_other`), `corrupt_shuffle` (the true prefix
with its steps in a shuffled order) and `corrupt_garble` (the true prefix with every step but its
last garbled: the last hint line, the state the model continues from, stays true).
"""
from __future__ import annotations

from collections.abc import Sequence
import math

import numpy as np

UNITS = ("steps", "tokens", "chars")
_EPS = 1e-9  # floor(0.7 * 10) must be 7, not 6 (0.7 * 10 = 7.000000000000001 or 6.999...)


def _count(ratio: float, total: int) -> int:
  return min(total, int(math.floor(ratio * total + _EPS)))


def _check_ratio(ratio: float) -> None:
  if not 0.0 <= ratio <= 1.0 or math.isnan(ratio):
    raise ValueError(f"hint ratio {ratio!r} must lie in [0, 1].")


def balanced_prefixes(text: str) -> np.ndarray:
  """bool [len(text) + 1]: entry i is True iff text[:i] closes every LaTeX group it opens.

  A group is a brace group {..} or a math span $..$, $$..$$, \\(..\\), \\[..\\]. Escaped \\{ \\} \\$
  are literal characters, \\\\ is a line break. An unmatched closing brace is ignored (depth stays
  at 0) so that one stray brace does not forbid every later cut.
  """
  ok = np.zeros(len(text) + 1, dtype=bool)
  ok[0] = True
  depth = 0
  math_mode = ""  # "", "$", "$$", "\\(" or "\\["
  i = 0
  while i < len(text):
    c = text[i]
    width = 1
    if c == "\\" and i + 1 < len(text):
      following = text[i + 1]
      width = 2
      if following == "(" and not math_mode:
        math_mode = "\\("
      elif following == "[" and not math_mode:
        math_mode = "\\["
      elif (following == ")" and math_mode == "\\(") or (following == "]" and math_mode == "\\["):
        math_mode = ""
      # other escapes (\{ \} \$ \\ and command names' first letter) are literal here
    elif c == "$":
      if text.startswith("$$", i) and math_mode in ("", "$$"):
        width = 2
        math_mode = "" if math_mode == "$$" else "$$"
      elif math_mode in ("", "$"):
        math_mode = "" if math_mode == "$" else "$"
    elif c == "{":
      depth += 1
    elif c == "}":
      depth = max(0, depth - 1)
    i += width
    ok[i] = depth == 0 and not math_mode
    # positions inside a two-character token (\( or $$) are never cut points
  return ok


def _answer_start(steps: Sequence[str], step_sep: str) -> int:
  """Character offset where the last step begins (the cap on hints below ratio 1)."""
  return len(step_sep.join(steps[:-1]) + step_sep) if len(steps) > 1 else 0


def _token_ends(solution: str, tokenizer) -> list[int]:
  """Character offset where each token of the tokenized solution ends (non-decreasing)."""
  enc = tokenizer(solution, add_special_tokens=False, return_offsets_mapping=True)
  ends, last = [], 0
  for _, end in enc["offset_mapping"]:
    last = max(last, int(end))
    ends.append(last)
  return ends


def cut(steps: Sequence[str], ratio: float, unit: str, *, tokenizer=None,
        step_sep: str = "\n") -> str:
  """The hint text for a solution given as steps: a prefix of step_sep.join(steps).

  ratio: fraction in [0, 1] of the solution's steps / tokens / characters (by `unit`).
  tokenizer: an HF fast tokenizer; needed for unit "tokens" (its offsets give token boundaries).
  Monotone in ratio; below ratio 1 it ends before the last step.
  """
  _check_ratio(ratio)
  if unit not in UNITS:
    raise ValueError(f"hint unit {unit!r} is unknown; use one of {UNITS}.")
  steps = list(steps)
  solution = step_sep.join(steps)
  if ratio >= 1.0:
    return solution
  if not steps:
    return ""
  cap = _answer_start(steps, step_sep)
  if unit == "chars":
    return solution[:min(cap, _count(ratio, len(solution)))]
  ok = balanced_prefixes(solution)
  if unit == "steps":
    for k in range(min(len(steps) - 1, _count(ratio, len(steps))), 0, -1):
      end = len(step_sep.join(steps[:k]) + step_sep)
      if ok[end]:
        return solution[:end]
    return ""
  if tokenizer is None:
    raise ValueError("hint unit 'tokens' needs a tokenizer; pass tokenizer=... (an HF tokenizer).")
  ends = _token_ends(solution, tokenizer)
  for k in range(_count(ratio, len(ends)), 0, -1):
    end = ends[k - 1]
    if end <= cap and ok[end]:
      return solution[:end]
  return ""


def build(example, ratio: float, unit: str, *, tokenizer=None) -> str:
  """`cut` applied to an Example (its steps and step_sep)."""
  return cut(example.steps, ratio, unit, tokenizer=tokenizer, step_sep=example.step_sep)


def num_hint_steps(steps: Sequence[str], ratio: float) -> int:
  """Whole steps a "steps" cut at `ratio` keeps before any LaTeX back-off (below 1: at most n-1)."""
  _check_ratio(ratio)
  return len(steps) if ratio >= 1.0 else min(max(len(steps) - 1, 0), _count(ratio, len(steps)))


def corrupt_other(steps_of_other_problem: Sequence[str], target_len_steps: int, *,
                  step_sep: str = "\n") -> str:
  """A wrong hint: the first `target_len_steps` steps of ANOTHER problem's trace (each followed by
  step_sep, as a "steps" cut writes them), never its last step (its answer line)."""
  k = min(int(target_len_steps), len(steps_of_other_problem) - 1)
  if k <= 0:
    return ""
  return step_sep.join(steps_of_other_problem[:k]) + step_sep


def corrupt_shuffle(steps: Sequence[str], n_hint_steps: int, rng: np.random.Generator, *,
                    step_sep: str = "\n") -> str:
  """A wrong hint: the true first `n_hint_steps` steps (at most n-1) in a shuffled order.

  The order differs from the true one whenever the prefix holds two different steps.
  """
  k = min(int(n_hint_steps), len(steps) - 1)
  if k <= 0:
    return ""
  prefix = list(steps[:k])
  shuffled = prefix
  if len(set(prefix)) > 1:
    for _ in range(64):
      shuffled = [prefix[i] for i in rng.permutation(k)]
      if shuffled != prefix:
        break
    else:  # vanishingly unlikely; a rotation moves some step since not all steps are equal
      shuffled = prefix[1:] + prefix[:1]
  return step_sep.join(shuffled) + step_sep


def garble_line(line: str, rng: np.random.Generator) -> str:
  """The characters of `line` in a random order that differs from it (unless all are equal)."""
  chars = list(line)
  if len(set(chars)) < 2:
    return line
  for _ in range(64):
    out = "".join(chars[i] for i in rng.permutation(len(chars)))
    if out != line:
      return out
  return line[1:] + line[:1]  # a rotation differs, since not all characters are equal


def corrupt_garble(steps: Sequence[str], n_hint_steps: int, rng: np.random.Generator, *,
                   step_sep: str = "\n") -> str:
  """A half-wrong hint: the true first `n_hint_steps` steps (at most n-1), every one but the last
  with its characters permuted (garble_line). The last hint line is the true state to continue from,
  so the ablation asks whether a hint helps through that line alone or through the steps before it."""
  k = min(int(n_hint_steps), len(steps) - 1)
  if k <= 0:
    return ""
  prefix = [garble_line(step, rng) for step in steps[:k - 1]] + [steps[k - 1]]
  return step_sep.join(prefix) + step_sep


def pick_other(problem_ids: Sequence[int], levels: Sequence[int],
               rng: np.random.Generator) -> np.ndarray:
  """int64 [N]: for each problem i, the index of a different problem to borrow a hint from.

  Prefers a problem of the same level with a different id; else any problem with a different id;
  raises if the pool has a single distinct id. Deterministic given the rng's state.
  """
  ids = np.asarray(problem_ids, np.int64)
  lv = np.asarray(levels, np.int64)
  if ids.shape != lv.shape or ids.ndim != 1:
    raise ValueError(f"problem_ids {ids.shape} and levels {lv.shape} must be 1-D of one length.")
  if len(np.unique(ids)) < 2:
    raise ValueError("pick_other needs at least two different problem ids in the pool.")
  out = np.full(len(ids), -1, np.int64)
  groups = [np.flatnonzero(lv == level) for level in np.unique(lv)] + [np.arange(len(ids))]
  for group in groups:  # same level first; the last "group" is the whole pool (fallback)
    for _ in range(8):
      todo = group[out[group] < 0]
      if len(todo) == 0 or len(group) < 2:
        break
      # an offset in 1..m-1 from the problem's own slot never picks the slot itself
      slot = np.searchsorted(group, todo)
      pick = group[(slot + rng.integers(1, len(group), size=len(todo))) % len(group)]
      good = ids[pick] != ids[todo]
      out[todo[good]] = pick[good]
  for i in np.flatnonzero(out < 0):  # many copies of one id in the pool: search exhaustively
    others = np.flatnonzero(ids != ids[i])
    out[i] = others[rng.integers(len(others))]
  return out
