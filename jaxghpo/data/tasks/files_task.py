"""Problems from files (JSONL / Parquet; MATH-style rows) behind the task interface (base.Task).

Training rows come from config.data.files, evaluation sets from config.eval.files (one set per file, named by
the file, its first config.eval.num_problems rows). The reward parses answers itself (math-verify), and
there is no trace check: evaluation reports answer pass@k. config.data.task_configs.chains.hard_levels names the
levels (the rows' "level" field) whose training groups make the */hard metrics (MATH: level 5).
"""
from __future__ import annotations

import os

import ml_collections

from jaxghpo.data import files as files_lib
from jaxghpo.data.tasks import base


def _paths(paths, key: str) -> list[str]:
  """The paths of a tuple-valued config key (a comma-separated string is refused: a path may hold a comma)."""
  if isinstance(paths, str):
    raise ValueError(f"config.{key}={paths!r}: give a tuple of paths, e.g. ('a.jsonl', 'b.jsonl') (on the "
                     f"command line one path reads as is: --config.{key}=a.jsonl)")
  return [str(p).strip() for p in paths if str(p).strip()]


def drop_duplicates_across_files(train: list, reports: list) -> list:
  """The same problem text in a later file is dropped and counted there (with a conflict if its answer differs)."""
  first: dict[str, tuple] = {}  # problem text -> (report, line, answer)
  out = []
  start = 0
  for report in reports:
    exs = train[start:start + report.loaded]
    start += report.loaded
    keep = []
    for ex, line in zip(exs, report.example_lines):
      seen = first.get(ex.problem)
      keep.append(seen is None)
      if seen is None:
        first[ex.problem] = (report, line, ex.answer)
        out.append(ex)
      elif seen[2] != ex.answer:
        report.count_conflict(line, f"{seen[0].path}:{seen[1]}", ex.answer, seen[2])
    if not all(keep):
      report.drop_loaded(keep, "duplicate")
  return out


class FilesTask(base.Task):
  """Rows from files; answers checked by the reward (math-verify or exact match)."""

  name = "files"

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.hard_levels = ()  # levels of the rows' "level" field counted as hard in the training metrics
    return c

  def load(self, train_seed: int = 0) -> base.Problems:
    d, e = self.config.data, self.config.eval
    paths = _paths(d.files, "data.files")
    if not paths:
      raise ValueError("config.data.source='files' needs config.data.files (a tuple of JSONL/Parquet paths)")
    train, reports = [], []
    for p in paths:
      exs, report = files_lib.load_file(p, fields=dict(d.fields), on_bad_row=d.on_bad_row)
      if not exs:
        raise ValueError(f"{report}: no row of this file was kept; fix the rows (see the skip reasons and "
                         "their lines) or remove the file from config.data.files")
      train.extend(exs)
      reports.append(report)
    train = drop_duplicates_across_files(train, reports)
    eval_sets, eval_reports = {}, {}
    for p in _paths(e.get("files", ()), "eval.files"):
      exs, report = files_lib.load_file(p, fields=dict(d.fields), on_bad_row=d.on_bad_row)
      if not exs:
        raise ValueError(f"{report}: no row of this evaluation file was kept; fix it or remove it from "
                         "config.eval.files")
      name = os.path.splitext(os.path.basename(p))[0]
      n = int(e.num_problems)
      if len(exs) > n:
        report.drop_loaded([i < n for i in range(len(exs))], "beyond_eval_num_problems")
      eval_sets[name], eval_reports[name] = exs[:n], report
    return base.Problems(train, eval_sets, None, reports, eval_reports)

  def hard_levels(self) -> tuple[int, ...]:
    return tuple(int(x) for x in self.task_config.hard_levels)
