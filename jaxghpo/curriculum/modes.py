"""The scheduler's modes by name (MODES, keyed curriculum.mode), and their decision rules as pure numpy
functions of arrays.

Ratios are fractions of the solution trace given as hint: 0 is no hint, 1 the whole trace.

A mode is its first-attempt plan plus a few flags; a new one is one decorated function, and its name is then
a valid curriculum.mode:

    @register_mode("my_mode", ladder=True)        # difficult groups also climb the ladder within the step
    def _my_mode(sched, ids_B, levels):           # the HintScheduler, int64 [B] ids, plan()'s levels (or None)
      return np.full(ids_B.size, 0.25, np.float32)  # float32 [B] first-attempt ratios (after the cold start)
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from jaxghpo.curriculum import counter_rng
from jaxghpo.registry import Registry

_EPS = 1e-6  # ratios are float32; compare with this slack so 0.25 + float noise is still 0.25


def group_successes(rewards_BxG: np.ndarray, threshold: float) -> np.ndarray:
  """int32 [B]: samples per group whose accuracy reward is > threshold (a success)."""
  return np.count_nonzero(rewards_BxG > threshold, axis=1).astype(np.int32)


def is_difficult(rewards_BxG: np.ndarray, threshold: float) -> np.ndarray:
  """bool [B]: GHPO's test, every accuracy reward of the group is <= threshold."""
  return np.all(rewards_BxG <= threshold, axis=1)


def has_signal(rewards_BxG: np.ndarray) -> np.ndarray:
  """bool [B]: the group's rewards are not all equal, so its group-relative advantage is non-zero."""
  return np.max(rewards_BxG, axis=1) != np.min(rewards_BxG, axis=1)


def snap_to_grid(ratio: np.ndarray, grid: float, max_ratio: float) -> np.ndarray:
  """float32: ratio rounded to the nearest multiple of `grid`, clipped to [0, max_ratio] (NaN stays NaN)."""
  snapped = np.round(np.asarray(ratio, np.float64) / grid) * grid
  top = math.floor(max_ratio / grid + _EPS) * grid  # the largest grid point not above max_ratio
  return np.clip(snapped, 0.0, top).astype(np.float32)


def ratio_bucket(ratio: np.ndarray, grid: float) -> np.ndarray:
  """int32: index of the nearest multiple of `grid` (the statistics' ratio bucket), in [0, 1 / grid]."""
  num_buckets = int(round(1.0 / grid)) + 1
  return np.clip(np.round(np.asarray(ratio, np.float64) / grid), 0, num_buckets - 1).astype(np.int32)


def ladder_next(ratio_B: np.ndarray, ladder) -> np.ndarray:
  """float32 [B]: the smallest ladder ratio strictly above each ratio; NaN past the last rung or for NaN input."""
  rungs = np.asarray(ladder, np.float64)
  idx = np.searchsorted(rungs, np.asarray(ratio_B, np.float64) + _EPS, side="left")
  out = np.full(idx.shape, np.nan, np.float32)
  ok = idx < rungs.size
  out[ok] = rungs[idx[ok]]
  return out


def step_ladder_next(ratio_B: np.ndarray, steps_B: np.ndarray) -> np.ndarray:
  """float32 [B]: the step ladder's next rung: one more whole step of hint than ratio_B gives a
  problem of steps_B steps, as the ratio (k + 0.5) / n (hints.cut of "steps" floors it to k);
  NaN once k would reach n (the answer step), for NaN input, or for an unknown length (<= 1)."""
  ratio = np.asarray(ratio_B, np.float64)
  n = np.asarray(steps_B, np.float64)
  with np.errstate(invalid="ignore"):
    k = np.floor(ratio * n + _EPS) + 1.0
    out = (k + 0.5) / np.maximum(n, 1.0)
  bad = ~np.isfinite(ratio) | (n <= 1) | (k >= n)
  return np.where(bad, np.nan, out).astype(np.float32)


def adaptive_next_ratio(ratio_B, pass_mean_B, *, target_low, target_high, step_up, step_down, grid,
                        max_ratio, may_raise_B=None) -> np.ndarray:
  """float32 [B]: the next first-attempt ratio after a group sampled at ratio_B.

  pass_mean_B is the pass-rate estimate at ratio_B (the Beta posterior mean). Above the band the
  hint shrinks (the model no longer needs it), below the band it grows, inside it stays.
  may_raise_B (bool [B], default all True): where False the hint does not grow even below the band
  (curriculum.adaptive_raise = "all_fail" passes "the last group had no success", GHPO's trigger).
  """
  ratio = np.asarray(ratio_B, np.float64)
  p = np.asarray(pass_mean_B, np.float64)
  up = p < target_low
  if may_raise_B is not None:
    up &= np.asarray(may_raise_B, bool)
  moved = np.where(p > target_high, ratio - step_down, np.where(up, ratio + step_up, ratio))
  return snap_to_grid(moved, grid, max_ratio)


def anneal_ratio(step: int, *, start_ratio: float, num_steps: int, schedule: str) -> float:
  """The annealed hint ratio at `step`: start_ratio at step 0, 0 from step num_steps on."""
  frac = min(max(step / max(num_steps, 1), 0.0), 1.0)
  if schedule == "linear":
    return float(start_ratio * (1.0 - frac))
  if schedule == "cosine":
    return float(start_ratio * 0.5 * (1.0 + math.cos(math.pi * frac)))
  raise ValueError(f"curriculum.anneal_schedule={schedule!r} is not 'linear' or 'cosine'")


def binomial_ratio(p: float, seed: int, step: int, ids_B: np.ndarray, num_draws: int) -> np.ndarray:
  """float32 [B]: Binomial(num_draws, p) / num_draws per problem, from counter-based uniforms.

  UFT draws the hint length as Binomial(L, p) over the L steps of a trace; the scheduler does not
  know L (hints.py cuts the trace), so it draws the ratio on a fixed grid of num_draws + 1 values
  with the same mean p and variance p (1 - p) / num_draws.
  """
  u_BxN = counter_rng.uniforms(seed, step, ids_B, num_draws)
  return (np.count_nonzero(u_BxN < p, axis=1) / num_draws).astype(np.float32)


# --- the modes by name -------------------------------------------------------------------------------
PlanFn = Callable[[Any, np.ndarray, Any], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Mode:
  """A curriculum mode. plan(sched, ids_B, levels) -> float32 [B]: the first-attempt ratios once the cold
  start is over (during it every mode plans 0); `levels` is plan()'s argument as given (None or int [B],
  sched.level_array checks it).
    hintless: never puts a hint in a prompt (plans 0, never retries; highest_ratio 0, no rl.guide).
    ladder:   difficult groups are re-sampled at the next ladder rung within the step (scheduler.retry);
              True, or a function of the curriculum config (adaptive: its adaptive_retry).
    refill:   groups without signal are dropped and replaced by new problems (DAPO; driver.step_loop).
    check:    check(cfg) -> None, or what is wrong with the config for this mode (validate_config says it).
  """
  name: str
  plan: PlanFn
  hintless: bool = False
  ladder: bool | Callable[[Any], bool] = False
  refill: bool = False
  check: Callable[[Any], str | None] | None = None

  def uses_ladder(self, cfg) -> bool:
    return bool(self.ladder(cfg)) if callable(self.ladder) else bool(self.ladder)

  @property
  def may_use_ladder(self) -> bool:
    """The ladder is used under some config (highest_ratio asks before the config's own flags)."""
    return self.ladder is not False


MODES: Registry[Mode] = Registry("curriculum.mode")


def register_mode(name: str, *, hintless: bool = False, ladder: bool | Callable[[Any], bool] = False,
                  refill: bool = False, check: Callable[[Any], str | None] | None = None
                  ) -> Callable[[PlanFn], PlanFn]:
  """Decorator: registers plan(sched, ids_B, levels) -> float32 [B] as curriculum mode `name` (see Mode)."""

  def add(plan: PlanFn) -> PlanFn:
    MODES.register(name)(Mode(name, plan, hintless=hintless, ladder=ladder, refill=refill, check=check))
    return plan

  return add


def _no_hint(sched, ids_B, levels) -> np.ndarray:
  del sched, levels
  return np.zeros(ids_B.size, np.float32)


register_mode("none", hintless=True)(_no_hint)                 # plain GRPO
register_mode("filter", hintless=True, refill=True)(_no_hint)  # DAPO dynamic sampling
register_mode("ghpo", ladder=True)(_no_hint)                   # GHPO: hints on retries only


@register_mode("adaptive", ladder=lambda c: c.adaptive_retry)
def _adaptive(sched, ids_B, levels) -> np.ndarray:
  """Each problem's own ratio from its running pass rate; a problem never seen (or evicted) starts where its
  level's problems currently are (or at initial_ratio)."""
  c = sched.cfg
  levels_B = sched.level_array(levels, ids_B.size)
  slots = sched.problems.lookup(ids_B)
  seen = slots >= 0
  ratios = np.full(ids_B.size, c.initial_ratio, np.float32)
  ratios[seen] = sched.problems.ratio[slots[seen]]
  lv = levels_B + 1
  from_level = ~seen & (levels_B >= 0)
  from_level[from_level] = sched.levels.groups[lv[from_level]] > 0
  ratios[from_level] = snap_to_grid(sched.levels.ratio_ema[lv[from_level]], c.ratio_grid, c.max_ratio)
  return np.minimum(ratios, np.float32(c.max_ratio))


def _anneal_check(c) -> str | None:
  if c.anneal_steps <= 0 and c.total_steps <= 0:
    return "mode='anneal' needs anneal_steps > 0 or total_steps > 0 (the trainer sets total_steps from num_steps)"
  return None


@register_mode("anneal", check=_anneal_check)
def _anneal(sched, ids_B, levels) -> np.ndarray:
  """One ratio for every problem that decays over training (anneal_random: a Binomial draw around it)."""
  del levels
  c = sched.cfg
  p = anneal_ratio(sched.step, start_ratio=c.anneal_start_ratio,
                   num_steps=c.anneal_steps if c.anneal_steps > 0 else c.total_steps, schedule=c.anneal_schedule)
  if c.anneal_random:
    return binomial_ratio(p, sched.seed, sched.step, ids_B, c.anneal_draw_n)
  return np.full(ids_B.size, p, np.float32)
