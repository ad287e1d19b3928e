"""Reward kinds by name, and their weighted sum from a config.

    total_B, accuracy_B, parts = combine(config.rewards, completions, answers)

GHPO used 1.0 * accuracy + 0.5 * format. Difficulty detection (and the learning-signal statistics)
read the accuracy term alone, which is why it is returned separately from the total.

"valid_trace" scores a whole written trace (the task's checker, data.tasks.base.Task.check_completion); it reads
the keyword arguments problems= and contexts= (the prompt-side hint of each completion), which the
group sampler passes to every kind, and check_trace= from the experiment's problems.

A new kind is one decorated function (completions, answers, config, **kwargs) -> np.float32 [B]; its name
is then a valid key of rewards.weights and value of rewards.accuracy:

    @rewards.register("my_kind")          # = rewards.REGISTRY.register
    def _my_kind(completions, answers, config, **kwargs): ...
"""

from __future__ import annotations

from typing import Callable, Sequence

import ml_collections
import numpy as np

from jaxghpo.registry import Registry
from jaxghpo.rewards import math as math_rewards
from jaxghpo.rewards import simple

RewardFn = Callable[..., np.ndarray]
# The reward kinds by name: the keys of rewards.weights (and rewards.accuracy's value) are looked up here.
REGISTRY: Registry[RewardFn] = Registry("rewards.weights")
register = REGISTRY.register  # decorator: @register("name") adds a reward kind


def get(name: str) -> RewardFn:
  """The reward kind registered as `name` (a ValueError listing the registered kinds otherwise)."""
  if name not in REGISTRY:
    raise ValueError(f"{REGISTRY.key}: unknown reward kind {name!r}; registered kinds: {sorted(REGISTRY)}.")
  return REGISTRY.get(name)


def validate_config(config) -> None:
  """Checks the rewards section (or a config holding it): every weighted kind and the accuracy kind are
  registered, every weight is finite. Each error names the key and the registered kinds."""
  c = _section(config)
  for name, w in dict(c.weights).items():
    if name not in REGISTRY:
      raise ValueError(f"rewards.weights.{name}: unknown reward kind; registered kinds: {sorted(REGISTRY)}.")
    if not np.isfinite(float(w)):
      raise ValueError(f"rewards.weights.{name}={w} must be a finite number.")
  if c.accuracy not in REGISTRY:
    raise ValueError(f"rewards.accuracy={c.accuracy!r}: unknown reward kind; "
                     f"registered kinds: {sorted(REGISTRY)}.")


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
  validate_config(c)
  weights = dict(c.weights)
  accuracy_kind = c.accuracy
  n = len(completions)
  if len(answers) != n:
    raise ValueError(f"{n} completions but {len(answers)} answers; pass one gold answer per completion.")
  parts: dict[str, np.ndarray] = {}
  for name in list(weights) + ([accuracy_kind] if accuracy_kind not in weights else []):
    part_B = np.asarray(REGISTRY.get(name)(completions, answers, c, **kwargs), dtype=np.float32)
    if part_B.shape != (n,):
      raise ValueError(f"reward kind {name!r} returned shape {part_B.shape}, expected ({n},).")
    parts[name] = part_B
  total_B = np.zeros((n,), np.float32)
  for name, w in weights.items():
    total_B += np.float32(w) * parts[name]
  return total_B, parts[accuracy_kind], parts
