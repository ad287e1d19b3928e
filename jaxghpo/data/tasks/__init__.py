"""Procedural reasoning tasks with step-by-step traces, by name.

A task is a module with NAME, STEP_SEP, SPLITS, DEFAULT_LEVELS and the functions
`generate(split, num_examples, seed, levels=None) -> list[Example]`,
`verify_trace(example) -> bool`, `extract_answer(completion) -> str` and
`count_steps(completion) -> int` (see tasks/chains.py).
Its tokenizer is `jaxghpo.data.tokenizer.load(NAME)`.
"""
from __future__ import annotations

import types

from jaxghpo.data.tasks import chains

TASKS: dict[str, types.ModuleType] = {"chains": chains}


def get_task(name: str) -> types.ModuleType:
  """The task module registered under `name` (e.g. "chains")."""
  if name not in TASKS:
    raise KeyError(f"unknown task {name!r}; registered tasks: {sorted(TASKS)}.")
  return TASKS[name]
