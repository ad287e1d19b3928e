"""The named evaluators of `config.evals`, configured as big_vision configures its evaluators.

Each evaluator is a small ConfigDict under its own name; the runner runs each one over its splits:

    c.evals = ml_collections.ConfigDict({"sampled": evaluator_config()})       # configs/base.py
    c.evals.greedy = evaluator_config(temperature=0.0, samples=1)               # greedy pass@1, every split
    c.evals.hinted = evaluator_config(splits=("hard",), hint_ratio=0.5)         # hinted, hard split only

Fields:
  splits       tuple of evaluation set names (experiment.Problems.eval_sets: "easy", "hard", ... or an eval
               file's name); () = every evaluation set. A tuple, never a comma string.
  hint_ratio   the hint given with every problem, a fraction of its solution in [0, 1]
  temperature  > 0: sampled ("sampled" in the metric names); 0: greedy ("greedy", needs samples = 1)
  samples      samples per problem, the k of pass@k (0: config.eval.num_samples); <= rollout.group_size
  every        evaluate every this many steps (0: config.eval_every_steps); every evaluator also runs
               before and after training

Metrics: eval/{split}/hint{hint_ratio:g}/{mode}/{metric}; rows: rows.eval_rows_path(workdir, split, step,
hint_ratio, tag=mode). The evaluator's name is not in them: two evaluators may not measure the same
(split, hint_ratio, mode).
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import ml_collections

from jaxghpo import validation

FIELDS = ("splits", "hint_ratio", "temperature", "samples", "every")
# Keys config.evals replaced: a config that still sets one is told where its setting went.
REPLACED = {"hint_ratios": "hint_ratio of an evaluator", "hint_splits": "splits of a hinted evaluator",
            "greedy": "an evaluator with temperature=0.0, samples=1", "temperature": "temperature of an evaluator"}


def evaluator_config(*, splits: Sequence[str] = (), hint_ratio: float = 0.0, temperature: float = 1.0,
                     samples: int = 0, every: int = 0) -> ml_collections.ConfigDict:
  """One evaluator's ConfigDict (the fields above; the defaults: sampled at T = 1, no hint, every split)."""
  return ml_collections.ConfigDict({"splits": tuple(str(s) for s in splits), "hint_ratio": float(hint_ratio),
                                    "temperature": float(temperature), "samples": int(samples),
                                    "every": int(every)})


@dataclasses.dataclass(frozen=True)
class Spec:
  """One evaluator of config.evals with its defaults resolved."""
  name: str
  splits: tuple[str, ...]  # () = every evaluation set
  hint_ratio: float
  temperature: float
  samples: int  # samples per problem (k of pass@k)
  every: int  # steps between evaluations; 0 = only before and after training

  @property
  def mode(self) -> str:
    """"sampled" (temperature > 0) or "greedy": the mode part of the metric names and row files."""
    return "sampled" if self.temperature > 0 else "greedy"

  def split_names(self, names: Sequence[str]) -> list[str]:
    """The evaluation sets this evaluator runs on, in the order of `names` (all of them for splits=())."""
    return [n for n in names if not self.splits or n in self.splits]


def _error(name: str, key: str, value, why: str) -> validation.StartupError:
  return validation.StartupError(f"config.evals.{name}.{key}={value!r}: {why}")


def specs(config) -> list[Spec]:
  """The evaluators of config.evals, in name order (a ConfigDict's), checked field by field (each error names
  config.evals.NAME.KEY and the mend)."""
  for key, where in REPLACED.items():
    if key in config.eval:
      raise validation.StartupError(f"config.eval.{key} was replaced by config.evals (named evaluators); set the "
                                    f"{where} instead (jaxghpo/evaluation/specs.py)")
  if "evals" not in config or not hasattr(config.evals, "items"):
    raise validation.StartupError("config.evals is missing: give a ConfigDict of named evaluators, e.g. "
                                  "{'sampled': evaluation.evaluator_config()} (configs/base.py)")
  out = []
  for name, e in config.evals.items():
    if not hasattr(e, "items"):
      raise validation.StartupError(f"config.evals.{name}={e!r}: must be an evaluator's ConfigDict "
                                    "(evaluation.evaluator_config(...))")
    unknown = sorted(set(e.keys()) - set(FIELDS))
    missing = [f for f in FIELDS if f not in e]
    if unknown or missing:
      raise validation.StartupError(f"config.evals.{name}: " + "; ".join(
          ([f"unknown keys {unknown}"] if unknown else []) + ([f"missing keys {missing}"] if missing else []))
          + f"; an evaluator has exactly {list(FIELDS)}")
    splits = e.splits
    if isinstance(splits, str) or not isinstance(splits, (tuple, list)):
      raise _error(name, "splits", splits, "must be a tuple of evaluation set names, e.g. ('hard',), or () for "
                   "every set (never a comma string)")
    ratio, temperature, samples, every = float(e.hint_ratio), float(e.temperature), int(e.samples), int(e.every)
    if not 0.0 <= ratio <= 1.0:
      raise _error(name, "hint_ratio", e.hint_ratio, "must be in [0, 1] (a fraction of the solution)")
    if temperature < 0.0:
      raise _error(name, "temperature", e.temperature, "must be >= 0 (0: greedy)")
    if samples < 0 or every < 0:
      key = "samples" if samples < 0 else "every"
      raise _error(name, key, e[key], "must be >= 0 (0: the config.eval default)")
    samples = samples or int(config.eval.num_samples)
    if temperature == 0.0 and samples != 1:
      raise _error(name, "samples", e.samples, "a greedy evaluator (temperature 0) draws the same completion every "
                   "time: set samples=1")
    if samples > int(config.rollout.group_size):
      raise _error(name, "samples", e.samples, f"resolves to {samples}, above config.rollout.group_size="
                   f"{int(config.rollout.group_size)} (evaluation draws one group per problem)")
    out.append(Spec(str(name), tuple(str(s) for s in splits), ratio, temperature, samples,
                    every or int(config.eval_every_steps)))
  return out


def check_splits(all_specs: Sequence[Spec], names: Sequence[str]) -> None:
  """Every named split is an evaluation set, and no two evaluators measure the same (split, hint, mode):
  their metrics and row files would overwrite each other."""
  seen: dict[tuple, str] = {}
  for spec in all_specs:
    unknown = [s for s in spec.splits if s not in names]
    if unknown:
      raise _error(spec.name, "splits", spec.splits, f"{unknown} are not evaluation sets of this run (it has "
                   f"{list(names)}); name sets from those, or () for every set")
    for split in spec.split_names(names):
      key = (split, f"{spec.hint_ratio:g}", spec.mode)
      if key in seen:
        raise validation.StartupError(
            f"config.evals.{seen[key]} and config.evals.{spec.name} both measure split {split!r} at hint "
            f"{spec.hint_ratio:g}, {spec.mode}: their metrics (eval/{split}/hint{spec.hint_ratio:g}/{spec.mode}/...) "
            "would overwrite each other; drop one or give them different splits")
      seen[key] = spec.name


def split_hint_ratios(config, names: Sequence[str]) -> dict[str, float]:
  """{evaluation set: the largest hint ratio any evaluator asks for on it} (0.0 for a set without a hint):
  the room its prompts need (experiment.check_prompt_room)."""
  out = {name: 0.0 for name in names}
  for spec in specs(config):
    for name in spec.split_names(names):
      out[name] = max(out[name], spec.hint_ratio)
  return out
