"""Diagnostics of letter-chains completions: what a written trace did, step by step, and shortcut rates.

The research question asks what learning from hard problems costs (GHPO.md, "other threads"): a
near-impossible problem solved by luck gets a huge advantage, which can reinforce answering early, skipping
computation or repeating the answer. `check_trace` reads a completion step by step (the checks of
chains.verify_trace, applied to each written step); `shortcut_stats` aggregates it over evaluation rows.
The chains task (chains_task.ChainsTask.row_diagnostics) hands these to the report.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Mapping

from jaxghpo.data.tasks import chains

# A written step: letter, one or more operations, "=", the new letter, the operations copied on.
# A correct step has exactly one operation on the left; more than one is a jump over steps.
_STEP_RE = re.compile(r"([a-z])((?:[+-][1-9])+)=([a-z])((?:[+-][1-9])*)")
_OP_RE = re.compile(r"[+-][1-9]")
_LETTER_RE = re.compile(r"[a-z]")


# ------------------------------------------------------------------------------ one completion
@dataclasses.dataclass(frozen=True)
class TraceCheck:
  """What one letter-chains completion did, step by step (hint steps included)."""
  level: int          # steps the problem needs (= its number of operations)
  steps_written: int  # chains.count_steps: ";"-separated segments, a bare answer letter included
  work_steps: int     # segments that write a step "x+d=y..." (a bare answer letter does no work)
  valid_steps: int    # work steps that apply the first remaining operation right and copy the rest
  skipped_ops: int    # operations consumed without a step of their own (multi-operation jumps, early answer)
  repeated: bool      # a segment written twice, or the answer restated after the chain had ended
  answered: bool      # the completion ends with a single letter as its answer
  answer: str         # chains.extract_answer of the text

  @property
  def early(self) -> bool:
    """Answered after fewer steps of work than the problem needs: the shortcut the seed asks about."""
    return self.answered and self.work_steps < self.level


def _apply(letter: str, op: str) -> str:
  """The letter after one operation, by the task's own arithmetic (chains.solve of a one-step problem)."""
  return chains.solve(f"{letter}{op}=")[0].split("=", 1)[1]


def problem_ops(problem: str) -> tuple[str, list[str]]:
  """("k", ["+3", "-5", "+2"]) for "k+3-5+2="; ValueError (from chains.solve) when malformed."""
  first = chains.solve(problem)[0]  # validates the text
  return first[0], _OP_RE.findall(problem)


def is_chain(row: Mapping) -> bool:
  """Whether a row's problem is a letter chain (the diagnostics here read chains traces only)."""
  try:
    problem_ops(str(row["problem"]))
  except ValueError:
    return False
  return True


def check_trace(problem: str, completion: str, hint: str = "") -> TraceCheck:
  """Reads `hint + completion` (the hint's steps are part of the written trace) step by step.

  Each segment is checked against the state the previous segment left (letter, operations left):
  a valid step restates that letter and the first operation left, writes the right new letter and
  copies the rest. A step whose copied operations are a shorter suffix of those left jumped over
  `consumed - 1` operations; a bare letter while operations are left skipped all of them, and a bare
  letter after the chain ended restates the answer (repeated). Text after "<eos>" is ignored.
  Raises ValueError (naming the problem) when the problem is not a letter chain.
  """
  letter, remaining = problem_ops(problem)
  level = len(remaining)
  text = (hint + completion).split("<eos>", 1)[0]
  segments = [s.strip() for s in text.split(chains.STEP_SEP) if s.strip()]
  work = valid = skipped = 0
  repeated = False
  seen: set[str] = set()
  for seg in segments:
    if seg in seen:
      repeated = True
    seen.add(seg)
    step = _STEP_RE.fullmatch(seg)
    if step is not None:
      work += 1
      old, left_ops, new, tail = step.group(1), _OP_RE.findall(step.group(2)), step.group(3), step.group(4)
      tail_ops = _OP_RE.findall(tail)
      consumed = len(remaining) - len(tail_ops)
      if old == letter and left_ops == remaining[:1] and tail_ops == remaining[1:] and new == _apply(old, left_ops[0]):
        valid += 1
      elif consumed >= 2 and tail_ops == remaining[consumed:]:
        skipped += consumed - 1
      letter, remaining = new, tail_ops  # the next step is read against what this one wrote
    elif _LETTER_RE.fullmatch(seg):
      if remaining:
        skipped += len(remaining)  # the answer given with operations still to do
      else:
        repeated = True  # the chain had ended: the answer written again
      letter, remaining = seg, []
  answer = chains.extract_answer(text)
  return TraceCheck(level=level, steps_written=chains.count_steps(text), work_steps=work, valid_steps=valid,
                    skipped_ops=skipped, repeated=repeated, answered=bool(_LETTER_RE.fullmatch(answer)),
                    answer=answer)


def _ratio(num: float, den: float) -> float | None:
  return float(num) / float(den) if den else None


def shortcut_stats(rows: Iterable[Mapping]) -> dict[str, float | None]:
  """Shortcut behaviour over every completion of `rows` (letter chains; other rows are skipped).

  Returns:
    completions        completions checked (rows whose problem is not a chain are skipped)
    shortcut_rate      completions answered with fewer work steps than the level needs / completions
    correct_shortcut_rate  correct completions with fewer work steps than needed / correct completions
                       (the lucky or skipped-work successes that group normalisation rewards most)
    skip_rate          completions that consumed operations without a step of their own / completions
    skipped_ops_mean   operations skipped per completion
    repeat_rate        completions that write a segment twice or restate the answer / completions
    valid_step_frac    work steps that are valid / work steps
    answered_rate, correct_rate, work_steps_mean, level_mean (steps needed, for comparison)
  None where the denominator is 0.
  """
  n = answered = correct = early = correct_early = skip = skipped_ops = repeat = work = valid = needed = 0
  for row in rows:
    if not is_chain(row):
      continue
    hint = str(row.get("hint") or "")
    for completion, ok in zip(row["completions"], row["correct"]):
      t = check_trace(str(row["problem"]), str(completion), hint)
      n += 1
      answered += t.answered
      correct += bool(ok)
      early += t.early
      correct_early += bool(ok) and t.work_steps < t.level
      skip += t.skipped_ops > 0
      skipped_ops += t.skipped_ops
      repeat += t.repeated
      work += t.work_steps
      valid += t.valid_steps
      needed += t.level
  return {
      "completions": float(n),
      "shortcut_rate": _ratio(early, n),
      "correct_shortcut_rate": _ratio(correct_early, correct),
      "skip_rate": _ratio(skip, n),
      "skipped_ops_mean": _ratio(skipped_ops, n),
      "repeat_rate": _ratio(repeat, n),
      "valid_step_frac": _ratio(valid, work),
      "answered_rate": _ratio(answered, n),
      "correct_rate": _ratio(correct, n),
      "work_steps_mean": _ratio(work, n),
      "level_mean": _ratio(needed, n),
  }


SHORTCUT_ROWS = (("shortcut_rate", "answered with fewer steps than the level needs (of all completions)"),
                 ("correct_shortcut_rate", "correct with fewer steps than needed (of correct completions)"),
                 ("skip_rate", "skipped at least one operation"),
                 ("repeat_rate", "repeated a step or restated the answer"),
                 ("valid_step_frac", "written steps that are valid"),
                 ("answered_rate", "ended with an answer letter"))


def shortcut_markdown(s: Mapping, fmt, fmt_count) -> list[str]:
  """The report's "Shortcuts on hard problems" section from a run summary's diag/shortcut/* keys."""
  lines: list[str] = []
  for mode in ("sampled", "greedy"):
    prefix = f"diag/shortcut/hard/hint0/{mode}"
    if f"{prefix}/before/completions" not in s and f"{prefix}/after/completions" not in s:
      continue
    n0, n1 = s.get(f"{prefix}/before/completions"), s.get(f"{prefix}/after/completions")
    lines += ["", f"## Shortcuts on hard problems (no hint, {mode}; {fmt_count(n0)} -> {fmt_count(n1)} completions)",
              "",
              "| fraction of completions that ... | before | after |", "| --- | ---: | ---: |"]
    for key, label in SHORTCUT_ROWS:
      lines.append(f"| {label} | {fmt(s.get(f'{prefix}/before/{key}'))} | {fmt(s.get(f'{prefix}/after/{key}'))} |")
    lines += ["", f"Steps of work written per completion: {fmt(s.get(f'{prefix}/before/work_steps_mean'), 2)} before, "
              f"{fmt(s.get(f'{prefix}/after/work_steps_mean'), 2)} after; the problems need "
              f"{fmt(s.get(f'{prefix}/after/level_mean', s.get(f'{prefix}/before/level_mean')), 2)} on average. "
              "A shortcut here is any answer given after fewer steps than needed (a model that cannot yet write "
              "long chains counts too); shortcuts among correct answers are the lucky or skipped-work successes "
              "that group normalisation rewards most."]
    break
  return lines
