"""HintScheduler: the host-side scheduler deciding hint ratios from running pass-rate statistics.

One RL step talks to it in this order: plan (first-attempt ratios), retry (after each sampling
round; NaN = keep the group), keep_mask (filter mode), update (the final groups). The order as code
is curriculum.driver.step_loop, which the trainer, the simulations and the tests all run.

`retry` takes either the re-sampled subset (as step_loop passes it) or the whole batch with NaN in `ratios` for
the groups that are finished: rows whose ratio is NaN are ignored and return NaN, whatever their
rewards hold, so both call styles give the same answers and the same metrics. The ghpo ladder ends
after len(cfg.ladder) rounds, so a trainer with fixed shapes may run exactly that many rounds.

Multi-host: plan and retry are local (they change only per-step metric counters, never the
statistics); `update` all-gathers every host's rows (and per-step counters) so all hosts record
the same groups in the same order; call it on every host each step with the host's slice (equal
or unequal sizes). Decisions then agree across hosts, and equal those of a one-host run over the
concatenated batch.

The step: `set_step(step)` (or step= on plan/update) sets it; without it the scheduler counts
updates (update ends a step and advances it by one). Cold start and anneal read it.
"""
from __future__ import annotations

import numpy as np

from jaxghpo.curriculum import config as config_lib
from jaxghpo.curriculum import metrics as metrics_lib
from jaxghpo.curriculum import modes
from jaxghpo.curriculum.stats import LevelStats, ProblemStats

STATE_VERSION = 1


class HintScheduler:
  """Decides each group's hint ratio (plan, retry), records outcomes (update); see the module doc."""

  def __init__(self, cfg=None):
    self.cfg = config_lib.resolve_config(cfg if cfg is not None else {})
    c = self.cfg
    self.num_buckets = int(round(1.0 / c.ratio_grid)) + 1
    self.problems = ProblemStats(self.num_buckets, c.max_problems)
    self.levels = LevelStats(c.max_levels, self.num_buckets)
    self._step = 0
    self._seed = int(c.seed)
    self._updates = 0
    self._last_metrics: dict[str, float] = {}
    self._reset_step_counters()

  # --- the step ------------------------------------------------------------------------------
  @property
  def step(self) -> int:
    return self._step

  def set_step(self, step: int) -> None:
    self._step = int(step)

  @property
  def mode(self) -> modes.Mode:
    """The configured mode: its plan and flags (curriculum/modes.py)."""
    return modes.MODES.get(self.cfg.mode)

  @property
  def seed(self) -> int:
    """The seed of the scheduler's counter-based draws (anneal_random)."""
    return self._seed

  @property
  def in_cold_start(self) -> bool:
    return self._step < self.cfg.cold_start_steps

  @property
  def uses_ladder(self) -> bool:
    return self.mode.uses_ladder(self.cfg)

  # --- decisions -----------------------------------------------------------------------------
  def plan(self, problem_ids, levels=None, *, step=None) -> np.ndarray:
    """float32 [B] in [0, max]: the hint ratio of each problem's first attempt this step.

    problem_ids: int [B] stable ids; levels: optional int [B] difficulty levels (-1 unknown), used
    only for problems never seen (they start from their level's typical ratio in "adaptive"), and by the
    "steps" ladder. The ratios are those of the mode's plan (curriculum/modes.py), 0 during the cold start.
    Reads the state only: calling it does not change any later decision.
    """
    if step is not None:
      self.set_step(step)
    ids = _ids(problem_ids, "problem_ids")
    c = self.cfg
    if levels is not None:  # the step ladder's rungs depend on each problem's number of steps
      self._step_levels.update(zip(ids.tolist(), np.asarray(levels, np.int64).reshape(-1).tolist()))
    if self.in_cold_start:
      ratios = np.zeros(ids.size, np.float32)
    else:  # the mode's own plan (curriculum/modes.py): none, filter and ghpo plan 0 (ghpo hints on retries only)
      ratios = np.asarray(self.mode.plan(self, ids, levels), np.float32)
      if ratios.shape != ids.shape:
        raise ValueError(f"curriculum.mode={c.mode!r}: its plan returned shape {ratios.shape}, expected {ids.shape}")
    self._counters["plan_groups"] += ids.size
    self._counters["plan_ratio_sum"] += float(ratios.sum(dtype=np.float64))
    return ratios

  def retry(self, problem_ids, ratios, rewards) -> np.ndarray:
    """float32 [B]: the ratio to re-sample each group with within this step, NaN for no retry.

    ratios: float32 [B], the ratio each group was just sampled with (NaN: finished, ignored);
    rewards: [B, G] accuracy rewards of those samples. In "ghpo" (and "adaptive" with
    adaptive_retry) a difficult group gets the next ladder ratio above its own, NaN past the last
    rung; other modes, and every mode during cold start, never retry.
    """
    ids = _ids(problem_ids, "problem_ids")
    ratios = _vector(ratios, ids.size, "ratios", np.float32)
    rewards = _rewards(rewards, ids.size, "rewards")
    active = np.isfinite(ratios)
    if not np.isfinite(rewards[active]).all():
      raise ValueError("retry: rewards hold NaN/inf in a group whose ratio is finite; pass the accuracy rewards")
    difficult = np.zeros(ids.size, bool)
    difficult[active] = modes.is_difficult(rewards[active], self.cfg.difficulty_threshold)
    next_ratios = np.full(ids.size, np.nan, np.float32)
    if self.uses_ladder and not self.in_cold_start:
      if self.cfg.ladder_kind == "steps":
        steps = np.asarray([self._step_levels.get(int(i), -1) for i in ids[difficult]], np.int64)
        if (steps < 1).any():
          raise ValueError("curriculum.ladder_kind='steps' needs each problem's level (its number of steps): "
                           "pass levels to plan() for the problems that retry() sees")
        next_ratios[difficult] = modes.step_ladder_next(ratios[difficult], steps)
      else:
        next_ratios[difficult] = modes.ladder_next(ratios[difficult], self.cfg.ladder)
    # A group's first retry() call this step saw its first attempt: that is GHPO's "difficult" count.
    first = active & ~np.isin(ids, self._retry_seen_ids)
    self._retry_seen_ids = np.union1d(self._retry_seen_ids, ids[active])
    num_retries = int(np.isfinite(next_ratios).sum())
    self._counters["first_groups"] += int(first.sum())
    self._counters["first_difficult"] += int((first & difficult).sum())
    self._counters["retries"] += num_retries
    self._counters["retry_rounds"] += int(num_retries > 0)
    return next_ratios

  def keep_mask(self, rewards) -> np.ndarray:
    """bool [B]: groups whose rewards are not all equal (DAPO dynamic sampling keeps only these).

    Pass the rewards that make the advantages (accuracy + format if used). Counts of checked and
    dropped groups appear in the step's metrics. Dropped groups are replaced by new problems in at
    most cfg.filter_refill refill rounds (driver.step_loop). Give
    `update` every group sampled in the step, kept or dropped: the statistics then hold every
    outcome, and frac_groups_nonzero_adv stays the yield of the samples drawn (it would read 1.0
    over kept groups only).
    """
    rewards = np.asarray(rewards)
    if rewards.ndim != 2:
      raise ValueError(f"keep_mask: rewards must be [B, G], got shape {rewards.shape}")
    keep = modes.has_signal(rewards)
    self._counters["filter_checked"] += keep.size
    self._counters["filter_dropped"] += int((~keep).sum())
    return keep

  # --- recording -----------------------------------------------------------------------------
  def update(self, problem_ids, ratios, rewards, levels=None, *, step=None) -> dict[str, float]:
    """Records the final group of each problem and ends the step; returns the step's metrics.

    ratios: float32 [B], the ratio each final group was sampled with; rewards: [B, G] accuracy
    rewards; levels: optional int [B] (-1 unknown). With several JAX processes this is a
    collective: every host calls it with its own slice.
    """
    if step is not None:
      self.set_step(step)
    ids = _ids(problem_ids, "problem_ids")
    ratios = _vector(ratios, ids.size, "ratios", np.float32)
    rewards = _rewards(rewards, ids.size, "rewards").astype(np.float32)
    if not (np.isfinite(ratios).all() and np.isfinite(rewards).all()):
      raise ValueError("update: ratios and rewards must be finite (pass the final ratio of every group)")
    if ((ratios < 0) | (ratios > 1)).any():
      raise ValueError(f"update: ratios must lie in [0, 1], got {ratios[(ratios < 0) | (ratios > 1)][:5].tolist()}")
    levels = self.level_array(levels, ids.size)
    from jaxghpo.parallel import hosts  # here: a numpy-only user of the scheduler never imports jax
    rows = hosts.allgather_rows({"ids": ids, "ratios": ratios, "rewards": rewards, "levels": levels})
    counters_per_process = hosts.allgather_rows({"c": self._counter_row()})["c"]
    counters = dict(zip(metrics_lib.COUNTERS, counters_per_process.sum(axis=0).tolist()))
    counters["retry_rounds"] = float(counters_per_process[:, metrics_lib.COUNTERS.index("retry_rounds")].max())
    self._record(rows["ids"], rows["ratios"], rows["rewards"], rows["levels"])

    slots = self.problems.lookup(rows["ids"])
    out = metrics_lib.step_metrics(rows["ratios"], rows["rewards"], self.problems.level[slots], counters,
                                   threshold=self.cfg.difficulty_threshold, grid=self.cfg.ratio_grid,
                                   num_buckets=self.num_buckets)
    out["problems_tracked"] = float(self.problems.size)
    out["problems_evicted_total"] = float(self.problems.evicted_total)
    self._last_metrics = out
    self._updates += 1
    self._step += 1
    self._reset_step_counters()
    return out

  def _record(self, ids, ratios, rewards, levels) -> None:
    c = self.cfg
    successes = modes.group_successes(rewards, c.difficulty_threshold)
    samples = np.full(ids.size, rewards.shape[1], np.int32)
    buckets = modes.ratio_bucket(ratios, c.ratio_grid)
    slots, evicted_levels = self.problems.ensure(ids)
    self.levels.record_evicted(evicted_levels + 1)
    last = self.problems.record(slots, buckets, successes, samples, self._step, levels, ema_decay=c.ema_decay,
                                prior_alpha=c.prior_alpha, prior_beta=c.prior_beta,
                                posterior_decay=c.posterior_decay)
    # Every mode keeps the adaptive proposal up to date, so switching mode on resume has it ready.
    slots_u = slots[last]
    next_ratios = modes.adaptive_next_ratio(ratios[last], self.problems.posterior_mean(slots_u),
                                    target_low=c.target_low, target_high=c.target_high,
                                    step_up=c.ratio_step_up, step_down=c.ratio_step_down,
                                    grid=c.ratio_grid, max_ratio=c.max_ratio,
                                    may_raise_B=None if c.adaptive_raise == "below_band" else successes[last] == 0)
    self.problems.ratio[slots_u] = next_ratios
    level_idx = self.problems.level[slots] + 1
    self.levels.record(level_idx, buckets, successes, samples, next_ratios, level_idx[last], ema_decay=c.ema_decay)

  def metrics(self) -> dict[str, float]:
    """The metrics returned by the last update (empty before the first)."""
    return dict(self._last_metrics)

  # --- per-step counters (local to a host until update gathers them) -------------------------
  def _reset_step_counters(self) -> None:
    self._counters = {name: 0.0 for name in metrics_lib.COUNTERS}
    self._retry_seen_ids = np.empty(0, np.int64)
    self._step_levels: dict[int, int] = {}  # problem id -> level, from this step's plan() calls

  def _counter_row(self) -> np.ndarray:
    return np.array([[self._counters[name] for name in metrics_lib.COUNTERS]], np.float64)

  def level_array(self, levels, size: int, name: str = "levels") -> np.ndarray:
    """int32 [size]: the levels given (checked against [-1, max_levels)), or -1 (unknown) for None."""
    if levels is None:
      return np.full(size, -1, np.int32)
    lv = _vector(levels, size, name, np.int64)
    bad = (lv < -1) | (lv >= self.cfg.max_levels)
    if bad.any():
      raise ValueError(f"{name} holds {lv[bad][:5].tolist()}, outside [-1, curriculum.max_levels="
                       f"{self.cfg.max_levels}); use -1 for unknown or raise max_levels")
    return lv.astype(np.int32)

  # --- state ---------------------------------------------------------------------------------
  def state_dict(self) -> dict:
    """A pytree of numpy arrays and Python scalars (orbax-saveable; no empty arrays).

    Holds everything later decisions depend on: the step, the seed of the random draws, the
    per-problem and per-level tables. Per-step counters are not saved: save between steps.
    """
    return {
        "version": STATE_VERSION,
        "step": int(self._step),
        "seed": int(self._seed),
        "updates": int(self._updates),
        "num_buckets": int(self.num_buckets),
        "problems": self.problems.state_dict(),
        "levels": self.levels.state_dict(),
    }

  def load_state_dict(self, state: dict) -> None:
    """Restores a state_dict (also as restored by orbax: 0-d arrays for scalars are fine)."""
    version = int(np.asarray(state["version"]))
    if version != STATE_VERSION:
      raise ValueError(f"scheduler state version {version} is not the supported {STATE_VERSION}")
    num_buckets = int(np.asarray(state["num_buckets"]))
    if num_buckets != self.num_buckets:
      raise ValueError(f"scheduler state has {num_buckets} ratio buckets, curriculum.ratio_grid="
                       f"{self.cfg.ratio_grid} gives {self.num_buckets}; restore with the saved ratio_grid")
    self.problems.load_state_dict(state["problems"])
    self.levels.load_state_dict(state["levels"])
    self._step = int(np.asarray(state["step"]))
    self._seed = int(np.asarray(state["seed"]))
    self._updates = int(np.asarray(state["updates"]))
    self._last_metrics = {}
    self._reset_step_counters()


def _ids(problem_ids, name: str) -> np.ndarray:
  ids = np.asarray(problem_ids)
  if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
    raise ValueError(f"{name} must be a 1-D integer array of problem ids, got shape {ids.shape} dtype {ids.dtype}")
  return ids.astype(np.int64, copy=False)


def _vector(values, size: int, name: str, dtype) -> np.ndarray:
  arr = np.asarray(values)
  if arr.shape != (size,):
    raise ValueError(f"{name} must have shape ({size},) like problem_ids, got {arr.shape}")
  return arr.astype(dtype, copy=False)


def _rewards(rewards, size: int, name: str) -> np.ndarray:
  arr = np.asarray(rewards)
  if arr.ndim != 2 or arr.shape[0] != size or arr.shape[1] < 1:
    raise ValueError(f"{name} must be [B, G] with B={size} (one row of G accuracy rewards per group), "
                     f"got shape {arr.shape}")
  return arr
