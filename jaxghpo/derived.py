"""Keys computed from other keys, in one place, once: a run reads them from here and nowhere else.

An experiment config (configs/base.py) holds what a researcher chooses. A few settings of the modules
follow from those choices and are not keys of the experiment config, so that no command line can set
them to disagree with what they follow from:

  curriculum.seed         from config.seed (the "anneal" arm's random hint lengths change with the seed)
  curriculum.total_steps  from config.num_steps
  rl.temperature          from config.rollout.temperature (the loss recomputes the sampler's logprobs)
  the seeds of every random stream of a run (training problems, data order, hint
  corruption, evaluation sampling, SFT), from config.seed through `seed()`.

`derive(config)` returns the resolved module configs with these filled; it fails when an experiment
config sets a derived key itself (the value would be silently replaced otherwise).
"""
from __future__ import annotations

import dataclasses
import hashlib

import ml_collections
import numpy as np

from jaxghpo import curriculum, rl
from jaxghpo.curriculum import counter_rng

# Where a derived key comes from: (section, key) -> the experiment key it follows.
DERIVED_KEYS = {
    ("curriculum", "seed"): "seed",
    ("curriculum", "total_steps"): "num_steps",
    ("rl", "temperature"): "rollout.temperature",
}

# Every random stream of a run. Each stream's seed is a hash of (config.seed, the stream's name)
# (`seed()`), so that streams differ from one another and every one changes with the seed. (Until
# issue 24 a table of offsets gave 7 of the 8 streams offset 0, i.e. the same seed; runs made before
# it draw differently from runs made after it.) The procedural task's evaluation problems are no
# stream: they are the fixed set of evaluation.fixed_level_set, the same for every seed.
STREAMS = (
    "train_problems",    # the procedural task's training problems
    "data_order",        # the pipeline's shuffle
    "eval_sampling",     # evaluation's sampling keys
    "policy_init",       # a random policy (sft with model.path="random")
    "train_rng",         # the RL loop's JAX key (sampling, train step)
    "hint_corruption",   # which other problem / which shuffle a corrupted hint takes
    "curriculum",        # the scheduler's counter-based draws ("anneal" with anneal_random)
    "sft",               # SFT's example draws and hint choices
)

SEED_BITS = 31   # seeds in [0, 2**31): valid for jax.random.key, numpy Generators and counter_rng alike


def stream_seed(run_seed: int, stream: str) -> int:
  """A seed in [0, 2**SEED_BITS) from (run seed, stream name): SplitMix64 (counter_rng.mix64) of the
  run seed's golden-ratio multiple xor a stable 64-bit hash of the name (blake2b; Python's hash() of a
  string changes between interpreters). Pure and the same on every host and Python version."""
  name_bits = int.from_bytes(hashlib.blake2b(stream.encode("utf-8"), digest_size=8).digest(), "little")
  key = (int(run_seed) * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
  mixed = counter_rng.mix64(np.array([key ^ name_bits], np.uint64))[0]
  return int(mixed >> np.uint64(64 - SEED_BITS))


def seed(config, stream: str) -> int:
  """The seed of one random stream of the run: stream_seed(config.seed, stream)."""
  if stream not in STREAMS:
    raise KeyError(f"unknown random stream {stream!r}; streams: {sorted(STREAMS)} (add it to "
                   "jaxghpo/derived.py STREAMS)")
  return stream_seed(int(config.seed), stream)


@dataclasses.dataclass(frozen=True)
class Derived:
  """The module configs of a run, resolved (defaults filled, validated) with the derived keys set."""
  rl: ml_collections.ConfigDict
  curriculum: ml_collections.ConfigDict


def check_not_set(config) -> None:
  """Fails when the experiment config sets a key that is derived (naming it and what it follows)."""
  for (section, key), source in DERIVED_KEYS.items():
    if section in config and key in config[section]:
      raise ValueError(f"config.{section}.{key} is derived from config.{source} (jaxghpo/derived.py) and "
                       f"cannot be set; set config.{source} instead and remove config.{section}.{key}")


def validate(config) -> None:
  """Checks between sections that the module configs cannot see on their own."""
  if float(config.rl.get("hint_nll_coef", 0.0)) > 0 and config.hints.placement != "response":
    raise ValueError(f"config.rl.hint_nll_coef={config.rl.hint_nll_coef} needs config.hints.placement="
                     f"'response' (hint tokens in the prompt are context, not targets); got "
                     f"config.hints.placement={config.hints.placement!r}")
  mode = config.curriculum.mode
  if bool(config.rl.get("guide", False)) and mode in curriculum.MODES and curriculum.MODES.get(mode).hintless:
    hinting = ", ".join(name for name in curriculum.MODES if not curriculum.MODES.get(name).hintless)
    raise ValueError(f"config.rl.guide=True trains hinted samples in the unhinted context, but "
                     f"config.curriculum.mode={mode!r} never hints; use a hinting mode "
                     f"({hinting}) or set rl.guide=False")
  if float(config.rollout.temperature) <= 0:  # the one check (experiment.validate_values reaches it through derive)
    raise ValueError(f"config.rollout.temperature={config.rollout.temperature!r}: RL needs sampling: at "
                     "temperature 0 the G responses of a group are identical, no group has a reward spread and "
                     "nothing is learned (and the loss recomputes logprobs at the sampling temperature); use e.g. 1.0")


def rl_config(config) -> ml_collections.ConfigDict:
  """config.rl resolved, with temperature = config.rollout.temperature."""
  check_not_set(config)
  validate(config)
  out = rl.resolve_config(config.rl)
  out.temperature = float(config.rollout.temperature)
  rl.validate_config(out)
  return out


def curriculum_config(config) -> ml_collections.ConfigDict:
  """config.curriculum resolved, with seed from config.seed and total_steps = config.num_steps."""
  check_not_set(config)
  given = config.curriculum.to_dict()
  given["seed"] = seed(config, "curriculum")
  given["total_steps"] = int(config.num_steps)
  return curriculum.resolve_config(given)


def derive(config) -> Derived:
  """The run's module configs with every derived key filled (see the module docstring)."""
  return Derived(rl=rl_config(config), curriculum=curriculum_config(config))
