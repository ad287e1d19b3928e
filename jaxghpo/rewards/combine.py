"""Reward kinds by name, and their weighted sum from a config.

    total_B, accuracy_B, parts = combine(config.rewards, completions, answers)

GHPO used 1.0 * accuracy + 0.5 * format. Difficulty detection (and the learning-signal statistics)
read the accuracy term alone, which is why it is returned separately from the total.

"valid_trace" scores a whole written trace (the task's checker, data.tasks.base.Task.check_completion); it reads
the keyword arguments problems= and contexts= (the prompt-side hint of each completion), which the
group sampler passes to every kind, and check_trace= from the experiment's problems.

A new kind is a function (completions, answers, config, **kwargs) -> np.float32 [B] plus a name:

    @register("my_kind")
    def _my_kind(completions, answers, config, **kwargs): ...
"""

from __future__ import annotations

from typing import Callable, Sequence

import ml_collections
import numpy as np

from jaxghpo.rewards import math as math_rewards
from jaxghpo.rewards import simple

RewardFn = Callable[..., np.ndarray]
REGISTRY: dict[str, RewardFn] = {}


def register(name: str) -> Callable[[RewardFn], RewardFn]:
  """Decorator: adds a reward kind to REGISTRY under `name`."""
  def add(fn: RewardFn) -> RewardFn:
    if name in REGISTRY:
      raise ValueError(f"reward kind {name!r} is already registered ({REGISTRY[name]!r}).")
    REGISTRY[name] = fn
    return fn
  return add


def get(name: str) -> RewardFn:
  if name not in REGISTRY:
    raise ValueError(f"unknown reward kind {name!r}; registered kinds: {sorted(REGISTRY)}.")
  return REGISTRY[name]


def default_config() -> ml_collections.ConfigDict:
  """The `config.rewards` section with every key and its default (GHPO's weights)."""
  c = ml_collections.ConfigDict()
  c.weights = ml_collections.ConfigDict({"math": 1.0, "format": 0.5})   # kind -> weight in the total
  c.accuracy = "math"            # the kind that is the accuracy term (need not have a weight)
  c.format_pattern = "boxed"     # simple.FORMATS name or a regex: "boxed" | "think_answer" | ...
  c.exact_extract = "strip"      # simple.EXTRACTORS name for the "exact" kind (or pass extract=)
  c.num_workers = 0              # math-verify worker processes; 0: pool.default_num_workers()
  c.deadline_s = math_rewards.DEFAULT_DEADLINE_S   # hard per-item deadline of the "math" kind
  return c


@register("math")
def _math(completions, answers, config, **kwargs) -> np.ndarray:
  num_workers = int(config.get("num_workers", 0) or 0) or None
  deadline_s = float(config.get("deadline_s", math_rewards.DEFAULT_DEADLINE_S))
  math_rewards.configure(num_workers=num_workers, deadline_s=deadline_s)  # no-op unless changed
  return math_rewards.math_reward(completions, answers)


@register("exact")
def _exact(completions, answers, config, extract=None, **kwargs) -> np.ndarray:
  return simple.exact_match(completions, answers, extract=extract or config.get("exact_extract", "strip"))


@register("format")
def _format(completions, answers, config, **kwargs) -> np.ndarray:
  return simple.format_reward(completions, config.get("format_pattern", "boxed"))


@register("valid_trace")
def _valid_trace(completions, answers, config, check_trace=None, problems=None, contexts=None, **kwargs) -> np.ndarray:
  """1 when the written trace is valid (every step right, and so the answer): check_trace(problem,
  context + completion) -> bool, with context the prompt-side hint the completion continues."""
  if check_trace is None or problems is None:
    raise ValueError("rewards.weights.valid_trace needs problems with a trace checker (a task whose checks_traces "
                     "is true); use the 'exact' or 'math' kind for other data.")
  contexts = [""] * len(completions) if contexts is None else contexts
  return np.asarray([float(bool(check_trace(p, str(c) + str(t))))
                     for p, c, t in zip(problems, contexts, completions)], np.float32)


def _section(config) -> ml_collections.ConfigDict:
  # Accept the whole experiment config as well as its `rewards` section.
  if "weights" not in config and "rewards" in config:
    return config.rewards
  return config


def combine(config, completions: Sequence[str], answers: Sequence, **kwargs
            ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
  """Weighted sum of reward kinds.

  config: the rewards section (see default_config) or a config holding it as `.rewards`.
  completions, answers: B items. kwargs go to every kind (e.g. extract=fn for "exact").
  Returns (total float32 [B] = sum_k weights[k] * parts[k], accuracy float32 [B] = parts[config.accuracy],
  parts: kind -> float32 [B], every weighted kind and the accuracy kind). Each kind is computed once.
  """
  c = _section(config)
  weights = dict(c.weights)
  accuracy_kind = c.accuracy
  for name, w in weights.items():
    if name not in REGISTRY:
      raise ValueError(f"rewards.weights.{name}: unknown reward kind; registered kinds: {sorted(REGISTRY)}.")
    if not np.isfinite(float(w)):
      raise ValueError(f"rewards.weights.{name}={w} must be a finite number.")
  if accuracy_kind not in REGISTRY:
    raise ValueError(f"rewards.accuracy={accuracy_kind!r}: unknown reward kind; "
                     f"registered kinds: {sorted(REGISTRY)}.")
  n = len(completions)
  if len(answers) != n:
    raise ValueError(f"{n} completions but {len(answers)} answers; pass one gold answer per completion.")
  parts: dict[str, np.ndarray] = {}
  for name in list(weights) + ([accuracy_kind] if accuracy_kind not in weights else []):
    part_B = np.asarray(REGISTRY[name](completions, answers, c, **kwargs), dtype=np.float32)
    if part_B.shape != (n,):
      raise ValueError(f"reward kind {name!r} returned shape {part_B.shape}, expected ({n},).")
    parts[name] = part_B
  total_B = np.zeros((n,), np.float32)
  for name, w in weights.items():
    total_B += np.float32(w) * parts[name]
  return total_B, parts[accuracy_kind], parts
