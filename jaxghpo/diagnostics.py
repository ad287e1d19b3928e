"""Diagnostics over evaluation rows: regression on easy levels, voting and DeepConf confidence, and the task's own.

The research question asks what learning from hard problems costs (GHPO.md, "other threads"):
  - regression: does training on hard problems hurt the easy ones it knew? `easy_regression` pairs
    the same problems before and after.
  - step-level confidence (DeepConf): `confidence_stats` summarises lowest-window / bottom-10% / tail
    confidences and compares plain majority voting with confidence-filtered voting and online early
    stopping (with the tokens it saves), when rows carry per-token confidences.
  - the task's diagnostics (data.tasks.base.Task.row_diagnostics; the shipped task's shortcut rates).

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

_EVAL_FILE_RE = re.compile(r"(?P<split>.+)_step(?P<step>\d+)_hint(?P<ratio>[0-9.]+)(?:_(?P<mode>[a-z]+))?\.jsonl$")


def _ratio(num: float, den: float) -> float | None:
  return float(num) / float(den) if den else None


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
def _answers(row: Mapping, extract) -> list[str | None]:
  """Extracted answers of a row's completions (hint steps prepended); None where there is no answer."""
  hint = str(row.get("hint") or "")
  out = []
  for completion in row["completions"]:
    answer = extract(hint + str(completion))
    out.append(answer if answer else None)
  return out


def vote_stats(rows: Sequence[Mapping], extract) -> dict[str, float | None]:
  """Plain majority voting over each row's completions (answers by `extract`, the task's): maj_accuracy
  (voted answer == gold answer), and sample_accuracy (mean correctness of single completions) for
  comparison. Rows with one completion (nothing to vote on) are skipped."""
  voted, single = [], []
  for row in rows:
    if len(row["completions"]) < 2:
      continue
    voted.append(evaluation.majority_vote(_answers(row, extract)) == str(row["answer"]))
    single.append(float(np.mean(row["correct"])))
  return {"problems": float(len(voted)), "maj_accuracy": float(np.mean(voted)) if voted else None,
          "sample_accuracy": float(np.mean(single)) if single else None}


def confidence_stats(rows: Sequence[Mapping], extract, *, window: int = 8, tail_tokens: int = 8, keep_frac: float = 0.5,
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
  window / tail_tokens are in tokens (DeepConf used 2048 on long traces; the shipped task's traces are < 100
  tokens).
  """
  rows = [r for r in rows if len(r["completions"]) >= 2]
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
    answers, gold = _answers(row, extract), str(row["answer"])
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


def run_diagnostics(workdir: str, task=None) -> dict[str, float | None]:
  """Every diagnostic of a run from its first and last evaluation files (a flat dict).

  Keys (T = "before" for the first evaluation step, "after" for the last; S = split; R = hint ratio;
  M = greedy | sampled):
    NAME/S/hintR/M/T/...       the task's row_diagnostics of that file (task.row_diagnostics: {NAME: stats};
                               the shipped task's "shortcut")
    regression/S/M/...         easy_regression of S (every split is compared; "easy" is the one asked)
    vote/S/hintR/T/...         vote_stats of sampled files (a task with its own answer extraction)
    confidence/S/hintR/M/T/... confidence_stats, only when rows carry confidences
  {} when the run has no evaluation files. task: a data.tasks.base.Task (None: the generic ones only).
  """
  extract = getattr(task, "extract_answer", None)
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
    for name, stats in (task.row_diagnostics(rows) if task is not None else {}).items():
      out.update(_flat(f"{name}/{tag}", stats))
    if extract is None:
      continue
    if f.mode != "greedy":
      out.update(_flat(f"vote/{f.split}/hint{f.hint_ratio:g}/{when}", vote_stats(rows, extract)))
    conf = confidence_stats(rows, extract)
    if conf:
      out.update(_flat(f"confidence/{tag}", conf))
  if last != first:
    for (split, ratio, mode, when), rows in by_key.items():
      if when == "before" and ratio == 0.0 and (split, ratio, mode, "after") in by_key:
        out.update(_flat(f"regression/{split}/{mode or 'default'}",
                         easy_regression(rows, by_key[(split, ratio, mode, "after")])))
  return out
