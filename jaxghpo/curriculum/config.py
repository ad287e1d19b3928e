"""Every key of the hint scheduler, with its default (`config.curriculum` in experiment configs).

One place for each default: `default_config()` lists them all; `resolve_config()` fills a partial
config from it and rejects unknown keys, so a typo on the command line fails at start instead of
being silently ignored.
"""
from __future__ import annotations

import ml_collections

from jaxghpo import sections, validation
from jaxghpo.curriculum.modes import MODES  # the modes by name (curriculum/modes.py: register_mode)

ANNEAL_SCHEDULES = ("linear", "cosine")
LADDER_KINDS = ("ratios", "steps")
ADAPTIVE_RAISES = ("below_band", "all_fail")


def default_config() -> ml_collections.ConfigDict:
  """The scheduler's configuration with every key at its default."""
  c = ml_collections.ConfigDict()
  # "none" (plain GRPO) | "filter" (DAPO dynamic sampling) | "ghpo" (in-step hint ladder)
  # | "adaptive" (per-problem ratio from running pass rates) | "anneal" (ratio decays over training)
  # | any name registered with curriculum.register_mode.
  c.mode = "none"
  c.seed = 0  # keys the random hint draws of "anneal" (a counter-based hash, see counter_rng.py)
  c.total_steps = 0  # a run derives it from config.num_steps (jaxghpo/derived.py); "anneal" uses it when anneal_steps == 0

  # A sample succeeds when its accuracy reward is > difficulty_threshold; a group is difficult
  # when none of its samples succeeds (GHPO: every accuracy reward <= 0).
  c.difficulty_threshold = 0.0
  # No hint at all (and no retries) while step < cold_start_steps. GHPO's paper used 20.
  c.cold_start_steps = 0

  # ghpo (and adaptive with adaptive_retry): a difficult group is re-sampled within the step at the
  # next ladder ratio above the one it was sampled with; after the last rung the group is kept as is.
  c.ladder = (0.25, 0.5, 0.75)
  # "ratios": the rungs are `ladder` (the paper's 0.25/0.5/0.75). "steps": one rung per remaining
  # step: a level-n problem (n steps, its level passed to plan()) retries with 1, 2, ..., n - 1 whole
  # steps of hint (ratio (k + 0.5) / n, which hints.cut("steps") turns into exactly k steps), so each
  # retry leaves one step less to write. Needs hints.unit = "steps".
  c.ladder_kind = "ratios"

  # filter (DAPO dynamic sampling): groups whose rewards are all equal carry no advantage and are
  # dropped; each refill round draws a new batch of problems and samples as many of them as groups
  # are missing, until the batch holds P groups with signal or filter_refill rounds have run (the
  # bound keeps a batch of solved problems from looping forever; 0: train on the groups kept).
  # Metrics filter_refill_rounds and filter_groups_unfilled say how it went; refill tokens count in
  # gen_tokens.
  c.filter_refill = 3

  # adaptive: aim each problem's pass rate into [target_low, target_high] (a group of G carries the
  # most signal near 0.5); the ratio goes down by ratio_step_down above the band (hints fade) and up
  # by ratio_step_up below it, snapped to multiples of ratio_grid so hint lengths take few values.
  c.initial_ratio = 0.0  # first-attempt ratio of a problem never seen (and of unknown level)
  c.target_low = 0.25
  c.target_high = 0.75
  c.ratio_step_up = 0.25
  c.ratio_step_down = 0.125
  c.ratio_grid = 0.125  # also the width of the statistics' ratio buckets; 1 / ratio_grid must be an integer
  c.max_ratio = 0.75  # never plan more than this (a hint of 1.0 is the whole solution, answer included)
  c.adaptive_retry = False  # also climb the ghpo ladder within the step for difficult groups
  # When the hint may grow: "below_band" (the pass-rate estimate is below target_low) or "all_fail"
  # (below the band AND the problem's last group had no success: GHPO's trigger on the adaptive schedule).
  c.adaptive_raise = "below_band"

  # anneal: ratio(step) decays from anneal_start_ratio to 0 over anneal_steps (0: use total_steps).
  c.anneal_start_ratio = 0.5
  c.anneal_steps = 0
  c.anneal_schedule = "cosine"  # "linear" | "cosine"
  # UFT-like random length: each problem draws Binomial(anneal_draw_n, ratio(step)) / anneal_draw_n,
  # so the mean follows the schedule and each draw lies on a grid of anneal_draw_n + 1 values.
  c.anneal_random = False
  c.anneal_draw_n = 8

  # Running statistics.
  c.ema_decay = 0.8  # ema <- ema_decay * ema + (1 - ema_decay) * group pass rate
  # Beta prior of a problem's pass rate at its current ratio: Jeffreys' (0.5, 0.5) lets one group of
  # G = 2 move the estimate out of the band (0 of 2 -> 0.17), which a uniform (1, 1) prior would not.
  c.prior_alpha = 0.5
  c.prior_beta = 0.5
  c.posterior_decay = 0.5  # old evidence at the same ratio is discounted by this per new group (skill drifts)
  c.max_problems = 131072  # problems held; beyond it the least recently seen are folded into level summaries
  c.max_levels = 64  # difficulty levels must lie in [0, max_levels)
  return c


def resolve_config(cfg) -> ml_collections.ConfigDict:
  """Returns default_config() overridden by `cfg` (a ConfigDict or dict), validated.

  Raises:
    KeyError: `cfg` has a key the scheduler does not know (named, with the known keys).
    ValueError: a value is out of range or keys conflict (the keys are named).
  """
  out = sections.override(default_config(), cfg, "curriculum config",
                          convert={"ladder": lambda v: tuple(float(x) for x in v)})
  validate_config(out)
  return out


def validate_config(c: ml_collections.ConfigDict) -> None:
  """Checks ranges and conflicts; each error names the key(s) at fault and how to mend them."""

  def fail(msg):
    raise ValueError(f"curriculum config: {msg}")

  # Ranges of single keys: the one table (jaxghpo/validation.py); choices and key relations below.
  validation.check_ranges(c, prefix="curriculum.")
  if c.mode not in MODES:  # the registry's names: a registered mode is valid here
    fail(f"mode={c.mode!r} is not one of {MODES.names()}")  # docs/hostile_inputs.md quotes this line
  mode = MODES.get(c.mode)
  ladder = tuple(c.ladder)
  if not ladder or any(b <= a for a, b in zip(ladder, ladder[1:])):
    fail(f"ladder={ladder} must be non-empty, strictly increasing, within (0, 1]")
  if not c.target_low < c.target_high:
    fail(f"need target_low < target_high, got target_low={c.target_low}, target_high={c.target_high}")
  cells = 1.0 / c.ratio_grid
  if abs(cells - round(cells)) >= 1e-6:
    fail(f"ratio_grid={c.ratio_grid} must be in (0, 1] with 1 / ratio_grid an integer (e.g. 0.125, 0.25)")
  if c.initial_ratio > c.max_ratio:
    fail(f"initial_ratio={c.initial_ratio} exceeds max_ratio={c.max_ratio}")
  if c.ladder_kind not in LADDER_KINDS:
    fail(f"ladder_kind={c.ladder_kind!r} is not one of {LADDER_KINDS}")
  if c.adaptive_raise not in ADAPTIVE_RAISES:
    fail(f"adaptive_raise={c.adaptive_raise!r} is not one of {ADAPTIVE_RAISES}")
  if c.anneal_schedule not in ANNEAL_SCHEDULES:
    fail(f"anneal_schedule={c.anneal_schedule!r} is not one of {ANNEAL_SCHEDULES}")
  problem = mode.check(c) if mode.check is not None else None
  if problem:
    fail(problem)
  if isinstance(c.filter_refill, bool):
    fail(f"filter_refill={c.filter_refill} must be an integer >= 0 (the most refill rounds per step)")


def highest_ratio(c) -> float:
  """The longest hint, as a fraction of the trace (below 1), that the scheduler of config `c` can ask for."""
  mode = MODES.get(c.mode) if c.mode in MODES else None
  if mode is not None and mode.hintless:
    return 0.0
  if mode is not None and mode.may_use_ladder and c.get("ladder_kind", "ratios") == "steps":
    return 1.0 - 1e-6  # the last rung leaves one step: everything before the answer line
  top = max([float(c.max_ratio), float(c.anneal_start_ratio)] + [float(r) for r in c.ladder])
  return min(top, 1.0 - 1e-6)
