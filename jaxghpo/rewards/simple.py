"""Cheap rewards that run in the calling process: exact match (the procedural task) and format.

Everything here is linear in the completion length (no backtracking regexes on model output), so a
megabyte of hostile text costs milliseconds and needs no worker process.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from jaxghpo.rewards.math import answer_tag_content

Extract = Callable[[str], "str | None"]


def _check_texts(values: Sequence, what: str) -> list:
  if isinstance(values, (str, bytes)):
    raise TypeError(f"{what} must be a list of strings, got a single {type(values).__name__}.")
  return list(values)


# ----------------------------------------------------------------------------------------------
# Answer extractors (completion -> answer string, or None when there is none).

def strip(completion: str) -> str:
  """The whole completion without surrounding whitespace (the default of exact_match)."""
  return completion.strip()


def last_boxed(completion: str) -> str | None:
  """Content of the last complete \\boxed{...} (nested braces allowed), or None. Linear time."""
  opener = "\\boxed{"
  limit = len(completion)
  start = completion.rfind(opener)
  while start >= 0:
    depth = 0
    for i in range(start + len(opener) - 1, limit):
      ch = completion[i]
      if ch == "{":
        depth += 1
      elif ch == "}":
        depth -= 1
        if depth == 0:
          return completion[start + len(opener):i]
    # Not closed before the next (unclosed) box began: then it encloses that box and cannot close
    # later either. So each character is scanned once over all tries.
    limit = start
    start = completion.rfind(opener, 0, start)
  return None


def answer_tag(completion: str) -> str | None:
  """Content of the last complete <answer>...</answer> pair, stripped, or None."""
  content = answer_tag_content(completion)
  return None if content is None else content.strip()


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def last_number(completion: str) -> str | None:
  """The last integer or decimal in the completion (e.g. "-12", "3.5"), or None."""
  tail = completion[-4096:]   # findall is linear, but there is no need to scan a megabyte
  found = _NUMBER.findall(tail)
  return found[-1] if found else None


EXTRACTORS: dict[str, Extract] = {
    "strip": strip,
    "boxed": last_boxed,
    "answer_tag": answer_tag,
    "last_number": last_number,
}


def get_extractor(extract: "str | Extract | None") -> Extract:
  """An extractor by name (see EXTRACTORS), a callable as it is, None -> strip."""
  if extract is None:
    return strip
  if callable(extract):
    return extract
  if extract not in EXTRACTORS:
    raise ValueError(f"unknown answer extractor {extract!r}; use one of {sorted(EXTRACTORS)} "
                     "or pass a function str -> str | None.")
  return EXTRACTORS[extract]


def exact_match(completions: Sequence[str], answers: Sequence, extract: "str | Extract | None" = None
                ) -> np.ndarray:
  """1.0 where extract(completion), stripped, equals str(answer), stripped; else 0.0.

  completions, answers: B items -> np.float32 [B]. `extract` is supplied by the task (a function
  completion -> answer string or None for "no answer"), or a name from EXTRACTORS; default: the whole
  completion stripped of whitespace. An extractor that raises is a bug in the task, so the error is
  re-raised naming the item.
  """
  completions = _check_texts(completions, "completions")
  answers = _check_texts(answers, "answers")
  if len(completions) != len(answers):
    raise ValueError(f"{len(completions)} completions but {len(answers)} answers; pass one each.")
  fn = get_extractor(extract)
  scores_B = np.zeros((len(completions),), np.float32)
  for i, (completion, answer) in enumerate(zip(completions, answers)):
    try:
      got = fn(completion)
    except Exception as e:
      message = f"answer extractor {getattr(fn, '__name__', fn)!r} failed on completions[{i}]: {e!r}"
      try:
        error = type(e)(message)   # keep the type, so callers can still catch it
      except Exception:  # noqa: BLE001 - a type whose constructor wants other arguments
        error = RuntimeError(message)
      raise error from e
    if got is not None and str(got).strip() == str(answer).strip():
      scores_B[i] = 1.0
  return scores_B


# ----------------------------------------------------------------------------------------------
# Format.

def has_boxed(completion: str) -> bool:
  """A complete \\boxed{...} is present."""
  return last_boxed(completion) is not None


def think_answer(completion: str) -> bool:
  """The R1 format: "<think>...</think> <answer>...</answer>" and nothing else (whitespace aside),
  each tag exactly once."""
  s = completion.strip()
  tags = ("<think>", "</think>", "<answer>", "</answer>")
  if any(s.count(t) != 1 for t in tags):
    return False
  if not (s.startswith("<think>") and s.endswith("</answer>")):
    return False
  close_think, open_answer = s.index("</think>"), s.index("<answer>")
  return close_think < open_answer and not s[close_think + len("</think>"):open_answer].strip()


FORMATS: dict[str, Callable[[str], bool]] = {
    "boxed": has_boxed,
    "think_answer": think_answer,
}


def format_reward(completions: Sequence[str], pattern: "str | re.Pattern | Callable[[str], bool]" = "boxed"
                  ) -> np.ndarray:
  """1.0 where a completion has the required format, else 0.0: np.float32 [B].

  pattern: a name from FORMATS ("boxed": a complete \\boxed{}; "think_answer":
  <think>..</think><answer>..</answer>), a predicate str -> bool, or a regular expression (string or
  compiled) searched with re.search; a custom regex runs on model output in this process, so keep it
  free of nested quantifiers that backtrack.
  """
  completions = _check_texts(completions, "completions")
  if callable(pattern) and not isinstance(pattern, re.Pattern):
    check = pattern
  elif isinstance(pattern, str) and pattern in FORMATS:
    check = FORMATS[pattern]
  else:
    try:
      regex = re.compile(pattern, re.DOTALL) if isinstance(pattern, str) else pattern
    except re.error as e:
      raise ValueError(f"format pattern {pattern!r} is neither one of {sorted(FORMATS)} nor a valid "
                       f"regular expression: {e}") from e
    check = lambda s: regex.search(s) is not None  # noqa: E731
  return np.array([1.0 if check(c) else 0.0 for c in completions], dtype=np.float32)
