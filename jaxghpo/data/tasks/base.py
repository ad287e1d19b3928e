"""The task interface: what the trainer, the evaluator and the report know of a task, and nothing more.

A task (the letter chains, MATH-style files, a TFDS dataset of either) supplies
  - its problems: `load(config) -> Problems` (training problems, named evaluation sets, load reports);
  - its reward hooks: `extract_answer` (None: math-verify) and `check_completion` (problem, written text)
    -> (valid trace, right answer), or None for a task without a trace check;
  - its exact sets (`Problems.exact_sets`, for a task whose valid trace is unique: teacher-forced measures);
  - the levels its training metrics call hard (`hard_levels`);
  - its diagnostics of evaluation rows (`row_diagnostics`) and their report section (`diagnostics_markdown`).
Tasks register by name (jaxghpo.data.tasks.TASKS); `config.data.task_configs.NAME` holds task NAME's own keys,
checked against its `default_config()` (an unknown key is named); a run reads its own task's section only.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import ml_collections

from jaxghpo import sections
from jaxghpo.data import files as files_lib
from jaxghpo.data.example import Example


@dataclasses.dataclass
class Problems:
  train: list[Example]
  eval_sets: dict[str, list[Example]]  # name -> problems (e.g. "easy", "hard", "ood")
  extract_answer: object  # completion -> answer string, for the exact-match reward (None: math-verify)
  load_report: object = None  # list[files.LoadReport] of `train`, one per source (file or task), in order
  eval_reports: dict = dataclasses.field(default_factory=dict)  # eval set name -> files.LoadReport
  # (problem text, written text: hint + completion) -> (valid trace, right answer): the task's checker, or None
  # (a task without a trace check: evaluation reports answer pass@k only).
  check_completion: object = None
  # {name: problems} scored by exact teacher-forced measures (a task whose valid trace is unique), e.g.
  # {"level_7": [...]}: evaluation logs eval/exact/<name>/<metric>. Empty for other tasks.
  exact_sets: dict = dataclasses.field(default_factory=dict)


def task_report(name: str, examples) -> files_lib.LoadReport:
  """A LoadReport for generated problems: every row kept, rows numbered from 1."""
  n = len(examples)
  return files_lib.LoadReport(path=name, rows_read=n, loaded=n, example_lines=list(range(1, n + 1)), unit="row")


class Task:
  """The interface (module docstring). Subclasses set `name` and override what they supply."""

  name = ""
  extract_answer: Callable[[str], str] | None = None  # None: the math reward's own parser (math-verify)

  def __init__(self, config):
    self.config = config
    sections_ = config.data.get("task_configs", None) or {}
    self.task_config = self.resolve(sections_.get(self.name, None) or {})

  @classmethod
  def default_config(cls) -> ml_collections.ConfigDict:
    """Every key of config.data.task_configs.NAME this task reads, with its default."""
    return ml_collections.ConfigDict()

  @classmethod
  def resolve(cls, task_config) -> ml_collections.ConfigDict:
    return sections.override(cls.default_config(), task_config, f"config.data.task_configs.{cls.name}")

  def load(self, train_seed: int = 0) -> Problems:
    """The run's problems; train_seed seeds a generated training pool (derived.seed(config, "train_problems"))."""
    raise NotImplementedError

  def check_completion(self, problem: str, text: str) -> tuple[bool, bool]:
    """(valid trace, right answer) of a written text (hint + completion). Only for tasks with `checks_traces`."""
    raise NotImplementedError(f"task {self.name!r} has no trace check")

  checks_traces = False  # True: check_completion is defined (valid pass@1, the valid_trace reward)

  def hard_levels(self) -> tuple[int, ...]:
    """Levels whose training groups make the */hard metrics (signal yield, pass rate, hint ratio)."""
    return ()

  def row_diagnostics(self, rows: Sequence[Mapping]) -> dict[str, float | None]:
    """Task-specific diagnostics of one evaluation file's rows (flat; the report prefixes them)."""
    return {}

  def diagnostics_markdown(self, summary: Mapping, fmt, fmt_count) -> list[str]:
    """The report's section for row_diagnostics (lines of markdown; [] for none); fmt / fmt_count: the
    report's number formats (report.fmt, report.fmt_count)."""
    return []

  def valid_success_groups(self, problems: Sequence[str], hints: Sequence[str], completions: Sequence[str],
                           group_size: int):
    """bool [P]: groups holding at least one valid success (check_completion of hint + completion), so that
    the signal yield counted from them leaves out lucky answers (right answer, invalid trace). None for a
    task without a trace check."""
    import numpy as np  # noqa: PLC0415
    if not self.checks_traces:
      return None
    out = np.zeros(len(problems), bool)
    for p, (problem, hint) in enumerate(zip(problems, hints)):
      texts = completions[p * group_size:(p + 1) * group_size]
      out[p] = any(self.check_completion(problem, str(hint) + text)[0] for text in texts)
    return out
