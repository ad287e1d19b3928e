"""The letter-chains task (chains.py) behind the task interface (base.Task): problems, checker, diagnostics.

config.data.task_configs.chains keys (default_config): the training pool (train_levels: level -> weight, num_train),
the named evaluation sets of the fixed evaluation set (fixed_set.py; the same problems for every arm and
seed): easy (harm), mid, hard (the primary comparison), ood (length: longer than any trained), ood_ops
(operator: offsets trained only in 1-2 step chains), each a tuple of levels (() = not evaluated); and
exact_levels, the levels whose exact teacher-forced measures are logged (the valid trace is unique).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import ml_collections

from jaxghpo.data.tasks import base, chains, chains_diagnostics
from jaxghpo.data.tasks.fixed_set import fixed_level_set

# Evaluation set name -> the task split it is drawn from; evaluated in this order.
EVAL_SETS = (("easy", "test"), ("mid", "test"), ("hard", "test"), ("ood", "ood"), ("ood_ops", "ood_ops"))


def _levels(value) -> tuple[int, ...]:
  return tuple(int(x) for x in value)


class ChainsTask(base.Task):
  """Letter chains: a unique valid trace per problem, checked line by line."""

  name = chains.NAME
  checks_traces = True
  extract_answer = staticmethod(chains.extract_answer)

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.train_levels = ml_collections.ConfigDict({str(level): 1.0 for level in range(1, 7)})  # level -> weight
    c.num_train = 20000
    c.easy_levels = (1, 2, 3)  # the harm measure: valid pass@1 here must not fall
    c.mid_levels = ()          # e.g. (4,) (configs/default.py)
    c.hard_levels = (5, 6)     # the primary comparison: unhinted valid pass@1 on these; training's */hard metrics
    c.ood_levels = (7, 8)      # length OOD: chains longer than any trained
    c.ood_ops_levels = ()      # operator OOD, e.g. (3, 4)
    # Levels whose exact teacher-forced measures are logged at every evaluation (the probability of the
    # unique valid trace, the log-probability of its first line, the exact pass@1 with a one-step hint).
    c.exact_levels = ()
    return c

  def load(self, train_seed: int = 0) -> base.Problems:
    t, e = self.task_config, self.config.eval
    weights = {int(k): float(v) for k, v in t.train_levels.items()}
    train = chains.generate("train", int(t.num_train), int(train_seed), levels=weights)
    n = int(e.num_problems)
    eval_sets, eval_reports = {}, {}
    for name, split in EVAL_SETS:
      levels = _levels(t[f"{name}_levels"])
      if levels:
        eval_sets[name] = [ex for level in levels for ex in fixed_level_set(chains, split, level, n)]
        eval_reports[name] = base.task_report(f"task:{self.name}/{name}", eval_sets[name])
    exact_sets = {f"level_{level}": fixed_level_set(chains, "test", level, n) for level in _levels(t.exact_levels)}
    return base.Problems(train, eval_sets, chains.extract_answer, [base.task_report(f"task:{self.name}/train", train)],
                         eval_reports, check_completion=self.check_completion, exact_sets=exact_sets)

  def check_completion(self, problem: str, text: str) -> tuple[bool, bool]:
    valid, right, _ = chains.check_completion(problem, text)
    return valid, right

  def hard_levels(self) -> tuple[int, ...]:
    return _levels(self.task_config.hard_levels)

  def row_diagnostics(self, rows: Sequence[Mapping]) -> dict:
    return {"shortcut": chains_diagnostics.shortcut_stats(rows)}

  def diagnostics_markdown(self, s: Mapping, fmt, fmt_count) -> list[str]:
    return chains_diagnostics.shortcut_markdown(s, fmt, fmt_count)
