"""Tasks: procedural generators by name (`get_task`), and the task interface the library asks (`task_for`).

A procedural task is a module with NAME, STEP_SEP, SPLITS, DEFAULT_LEVELS and the functions
`generate(split, num_examples, seed, levels=None) -> list[Example]`, `verify_trace(example) -> bool`,
`extract_answer(completion) -> str` and `count_steps(completion) -> int` (see tasks/chains.py); its tokenizer
is `jaxghpo.data.tokenizer.load(NAME)`.

The trainer, the evaluator and the report know a task only through base.Task (its problems, checker,
exact sets, hard levels, diagnostics), registered in TASKS by name; `task_for(config)` builds the run's:
config.data.task when config.data.source == "task", the "files" task (JSONL / Parquet) otherwise.
"""
from __future__ import annotations

import types

from jaxghpo.data.tasks import chains
from jaxghpo.data.tasks.base import Problems, Task, task_report  # noqa: F401
from jaxghpo.registry import Registry

GENERATORS: dict[str, types.ModuleType] = {"chains": chains}
TASKS: Registry[type[Task]] = Registry("data.task")


def get_task(name: str) -> types.ModuleType:
  """The procedural task module registered under `name` (e.g. "chains")."""
  if name not in GENERATORS:
    raise KeyError(f"unknown task {name!r}; registered tasks: {sorted(GENERATORS)}.")
  return GENERATORS[name]


def task_name(config) -> str:
  """The registered name of the run's task (config.data.task, or "files" for data.source="files")."""
  source = config.data.source
  if source == "files":
    return "files"
  if source != "task":
    raise ValueError(f"config.data.source={source!r} is not one of 'task', 'files'")
  return str(config.data.task)


def task_for(config) -> Task:
  """The run's task (base.Task), its config.data.task_configs.NAME checked against the task's keys."""
  return TASKS.get(task_name(config))(config)


from jaxghpo.data.tasks import chains_task, files_task  # noqa: E402  (they register themselves)

TASKS.register("chains")(chains_task.ChainsTask)
TASKS.register("files")(files_task.FilesTask)
