"""Diagnostics over evaluation rows: shortcuts, regression on easy levels, voting and DeepConf confidence.

The research question asks what learning from hard problems costs (GHPO.md, "other threads"):
  - shortcuts: a near-impossible problem solved by luck gets a huge advantage, which can reinforce
    answering early, skipping computation or repeating the answer. `check_trace` reads a letter-chains
    completion step by step (the checks of chains.verify_trace, applied to each written step);
    `shortcut_stats` aggregates it over rows.
  - regression: does training on hard problems hurt the easy ones it knew? `easy_regression` pairs
    the same problems before and after.
  - step-level confidence (DeepConf): `confidence_stats` summarises lowest-window / bottom-10% / tail
    confidences and compares plain majority voting with confidence-filtered voting and online early
    stopping (with the tokens it saves), when rows carry per-token confidences.

Rows are what the trainer writes to DIR/eval/*.jsonl: problem_id, level, problem, answer, hint,
completions (list of str), correct (list of bool); optionally token_confidences (per completion, a list
of per-token DeepConf confidences) or confidences (one trace confidence per completion). Every function
here is pure: rows in, plain dicts of floats out (None where a quantity is undefined).
"""
from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np

from jaxghpo import evaluation, paths
from jaxghpo.data.tasks import chains

# A written step: letter, one or more operations, "=", the new letter, the operations copied on.
# A correct step has exactly one operation on the left; more than one is a jump over steps.
_STEP_RE = re.compile(r"([a-z])((?:[+-][1-9])+)=([a-z])((?:[+-][1-9])*)")
_OP_RE = re.compile(r"[+-][1-9]")
_LETTER_RE = re.compile(r"[a-z]")
_EVAL_FILE_RE = re.compile(r"(?P<split>.+)_step(?P<step>\d+)_hint(?P<ratio>[0-9.]+)(?:_(?P<mode>[a-z]+))?\.jsonl$")


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


# ------------------------------------------------------------------------------ shortcut rates
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


# --------------------------------------------------------------------------- easy-level regression
def _per_problem_accuracy(rows: Iterable[Mapping]) -> dict[tuple[int, int], tuple[int, float]]:
  """(problem_id, occurrence) -> (level, fraction of its completions that are correct).

  Evaluation sets are drawn with replacement, so a problem may appear twice: its n-th appearance
  before training is paired with its n-th appearance after.
  """
  out, seen = {}, defaultdict(int)
  for row in rows:
    pid = int(row["problem_id"])
    correct = np.asarray(row["correct"], bool)
    out[(pid, seen[pid])] = (int(row.get("level", -1)), float(correct.mean()) if correct.size else 0.0)
    seen[pid] += 1
  return out


def easy_regression(before_rows: Iterable[Mapping], after_rows: Iterable[Mapping]) -> dict[str, float | None]:
  """pass@1 before and after on the same problems, overall and per level, and which problems flipped.

  A problem counts as solved when more than half of its completions are correct (greedy: its one
  completion). Only problems present in both sets of rows are compared (a problem drawn twice counts twice).
  Returns pass@1/before, pass@1/after, pass@1/delta (after - before), the same per level as
  ".../level_L", lost_frac (solved before, not after / solved before), gained_frac (solved after,
  not before / unsolved before) and problems.
  """
  before, after = _per_problem_accuracy(before_rows), _per_problem_accuracy(after_rows)
  ids = [i for i in before if i in after]
  out: dict[str, float | None] = {"problems": float(len(ids))}
  by_level: dict[str, list[int]] = defaultdict(list)
  for i in ids:
    by_level[""].append(i)
    if before[i][0] >= 0:
      by_level[f"/level_{before[i][0]}"].append(i)
  for suffix, members in sorted(by_level.items()):
    b = float(np.mean([before[i][1] for i in members]))
    a = float(np.mean([after[i][1] for i in members]))
    out[f"pass@1/before{suffix}"], out[f"pass@1/after{suffix}"], out[f"pass@1/delta{suffix}"] = b, a, a - b
  if not ids:
    out.update({"pass@1/before": None, "pass@1/after": None, "pass@1/delta": None})
  solved_before = [i for i in ids if before[i][1] > 0.5]
  unsolved_before = [i for i in ids if before[i][1] <= 0.5]
  out["lost_frac"] = _ratio(sum(after[i][1] <= 0.5 for i in solved_before), len(solved_before))
  out["gained_frac"] = _ratio(sum(after[i][1] > 0.5 for i in unsolved_before), len(unsolved_before))
  return out


# ------------------------------------------------------------------------------ voting / DeepConf
def _answers(row: Mapping) -> list[str | None]:
  """Extracted answers of a row's completions (hint steps prepended); None where there is no answer."""
  hint = str(row.get("hint") or "")
  out = []
  for completion in row["completions"]:
    answer = chains.extract_answer(hint + str(completion))
    out.append(answer if answer else None)
  return out


def vote_stats(rows: Sequence[Mapping]) -> dict[str, float | None]:
  """Plain majority voting over each row's completions: maj_accuracy (voted answer == gold answer),
  and sample_accuracy (mean correctness of single completions) for comparison. Rows with one
  completion (nothing to vote on) and rows that are not letter chains are skipped."""
  voted, single = [], []
  for row in rows:
    if len(row["completions"]) < 2 or not is_chain(row):
      continue
    voted.append(evaluation.majority_vote(_answers(row)) == str(row["answer"]))
    single.append(float(np.mean(row["correct"])))
  return {"problems": float(len(voted)), "maj_accuracy": float(np.mean(voted)) if voted else None,
          "sample_accuracy": float(np.mean(single)) if single else None}


def confidence_stats(rows: Sequence[Mapping], *, window: int = 8, tail_tokens: int = 8, keep_frac: float = 0.5,
                     warmup: int = 2) -> dict[str, float | None]:
  """DeepConf step-level confidence of each response, and voting with it; {} when rows carry none.

  With per-token confidences (row["token_confidences"]: per completion, a list of floats):
    conf_lowest/correct, conf_lowest/wrong   mean lowest-window confidence of correct / wrong completions
    conf_bottom10/..., conf_tail/...         the same for bottom-10% windows and the last tail_tokens
    maj_accuracy                             plain majority vote over all completions
    conf_vote_accuracy                       confidence_filtered_vote keeping the keep_frac most confident
                                             (lowest-window confidence; DeepConf's offline filter)
    online_vote_accuracy, tokens_saved_frac, traces_stopped_frac
                                             DeepConf online: the first `warmup` completions of a problem
                                             set a threshold (stop_threshold at keep_frac); each later
                                             completion stops at its first window below it (stopped ones
                                             do not vote); tokens saved relative to all tokens generated
  With only trace-level confidences (row["confidences"]), the voting keys without the online ones.
  window / tail_tokens are in tokens (DeepConf used 2048 on long traces; chains traces are < 100 tokens).
  """
  rows = [r for r in rows if len(r["completions"]) >= 2 and is_chain(r)]
  if rows and all("token_confidences" in r for r in rows):
    token_level = True
  elif rows and all("confidences" in r for r in rows):
    token_level = False
  else:
    return {}
  conf_sums: dict[str, list[float]] = defaultdict(list)
  maj, filtered, online = [], [], []
  total = kept = stopped = traces = 0
  for row in rows:
    answers, gold = _answers(row), str(row["answer"])
    maj.append(evaluation.majority_vote(answers) == gold)
    if token_level:
      token_conf = [np.asarray(c, np.float64) for c in row["token_confidences"]]
      lowest = np.array([evaluation.lowest_group_confidence(c, window) for c in token_conf])
      for name, values in (
          ("lowest", lowest),
          ("bottom10", np.array([evaluation.bottom_percent_confidence(c, window, percent=0.1) for c in token_conf])),
          ("tail", np.array([evaluation.tail_confidence(c, tail_tokens) for c in token_conf]))):
        for value, ok in zip(values, row["correct"]):
          if math.isfinite(value):
            conf_sums[f"conf_{name}/{'correct' if ok else 'wrong'}"].append(float(value))
      trace_conf = lowest
      # Online: warm-up traces set the bar; later traces stop at their first window below it.
      w = min(int(warmup), len(token_conf))
      threshold = (evaluation.stop_threshold(lowest[:w], keep_frac) if np.isfinite(lowest[:w]).any() else -np.inf)
      later = token_conf[w:]
      savings = evaluation.early_stop_savings([evaluation.group_confidence(c, window) for c in later],
                                              [c.size for c in later], threshold, window=window)
      warm_tokens = sum(c.size for c in token_conf[:w])
      total += savings["tokens_total"] + warm_tokens
      kept += savings["tokens_kept"] + warm_tokens
      stopped += savings["traces_stopped"]
      traces += len(later)
      finished = [i for i in range(w, len(token_conf))
                  if not (evaluation.group_confidence(token_conf[i], window) < threshold).any()]
      online.append(evaluation.majority_vote([answers[i] for i in list(range(w)) + finished]) == gold)
    else:
      trace_conf = np.asarray(row["confidences"], np.float64)
    filtered.append(evaluation.confidence_filtered_vote(answers, trace_conf, keep_frac) == gold)
  out: dict[str, float | None] = {"problems": float(len(rows)), "maj_accuracy": float(np.mean(maj)),
                                  "conf_vote_accuracy": float(np.mean(filtered))}
  if token_level:
    for name in ("lowest", "bottom10", "tail"):
      for outcome in ("correct", "wrong"):
        values = conf_sums.get(f"conf_{name}/{outcome}", [])
        out[f"conf_{name}/{outcome}"] = float(np.mean(values)) if values else None
    out["online_vote_accuracy"] = float(np.mean(online))
    out["tokens_saved_frac"] = _ratio(total - kept, total)
    out["traces_stopped_frac"] = _ratio(stopped, traces)
  return out


# ------------------------------------------------------------------------------ eval files
@dataclasses.dataclass(frozen=True)
class EvalFile:
  path: str
  split: str
  step: int
  hint_ratio: float
  mode: str  # "greedy" | "sampled" | "" (files written without a tag)


def list_eval_files(workdir: str) -> list[EvalFile]:
  """The evaluation files of a run (DIR/eval/{split}_step{step}_hint{ratio}[_{mode}].jsonl), sorted."""
  eval_dir = paths.join(workdir, "eval")
  if not paths.isdir(eval_dir):
    return []
  out = []
  for name in paths.listdir(eval_dir):
    m = _EVAL_FILE_RE.fullmatch(name)
    if m:
      out.append(EvalFile(paths.join(eval_dir, name), m["split"], int(m["step"]), float(m["ratio"]),
                          m["mode"] or ""))
  return sorted(out, key=lambda f: (f.step, f.split, f.hint_ratio, f.mode))


def read_rows(path: str) -> list[dict]:
  import json
  return [json.loads(line) for line in paths.read_text(path).splitlines() if line.strip()]


def _flat(prefix: str, stats: Mapping[str, float | None]) -> dict[str, float | None]:
  return {f"{prefix}/{k}": v for k, v in stats.items()}


def run_diagnostics(workdir: str) -> dict[str, float | None]:
  """Every diagnostic of a run from its first and last evaluation files (a flat dict).

  Keys (T = "before" for the first evaluation step, "after" for the last; S = split; R = hint ratio;
  M = greedy | sampled):
    shortcut/S/hintR/M/T/...   shortcut_stats of that file
    regression/S/M/...         easy_regression of S (every split is compared; "easy" is the one asked)
    vote/S/hintR/T/...         vote_stats of sampled files
    confidence/S/hintR/M/T/... confidence_stats, only when rows carry confidences
  {} when the run has no evaluation files.
  """
  files = list_eval_files(workdir)
  if not files:
    return {}
  first, last = min(f.step for f in files), max(f.step for f in files)
  out: dict[str, float | None] = {}
  by_key = {}
  for f in files:
    if f.step not in (first, last):
      continue
    when = "before" if f.step == first else "after"
    rows = read_rows(f.path)
    by_key[(f.split, f.hint_ratio, f.mode, when)] = rows
    tag = f"{f.split}/hint{f.hint_ratio:g}/{f.mode or 'default'}/{when}"
    out.update(_flat(f"shortcut/{tag}", shortcut_stats(rows)))
    if f.mode != "greedy":
      out.update(_flat(f"vote/{f.split}/hint{f.hint_ratio:g}/{when}", vote_stats(rows)))
    conf = confidence_stats(rows)
    if conf:
      out.update(_flat(f"confidence/{tag}", conf))
  if last != first:
    for (split, ratio, mode, when), rows in by_key.items():
      if when == "before" and ratio == 0.0 and (split, ratio, mode, "after") in by_key:
        out.update(_flat(f"regression/{split}/{mode or 'default'}",
                         easy_regression(rows, by_key[(split, ratio, mode, "after")])))
  return out


# ------------------------------------------------------------------------------ training groups
def valid_success_groups(problems: Sequence[str], hints: Sequence[str], completions: Sequence[str],
                         group_size: int) -> np.ndarray:
  """bool [P]: groups holding at least one valid success (chains.check_completion of hint + completion).

  problems, hints: per group; completions: P * group_size strings, group-major. The signal yield
  counted from these groups only leaves out lucky answers (right letter, invalid trace), whose
  advantage teaches the shortcut rather than the chain.
  """
  out = np.zeros(len(problems), bool)
  for p, (problem, hint) in enumerate(zip(problems, hints)):
    texts = completions[p * group_size:(p + 1) * group_size]
    out[p] = any(chains.check_completion(problem, str(hint) + text)[0] for text in texts)
  return out
