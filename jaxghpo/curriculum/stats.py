"""Running pass-rate statistics per problem and per difficulty level, in flat numpy arrays.

Problems live in slots (rows). Ids map to slots through a sorted copy of the ids and
`np.searchsorted`, so a lookup of a batch is O(B log N) with no Python loop over samples;
inserting new ids merges them into the sorted copy with `np.insert` (O(N) memory moves, no sort).
Memory is bounded by `max_problems`: when a batch brings new ids into a full table, the least
recently seen problems outside the batch are evicted. Level tables aggregate every recorded
group anyway (they are lifetime sums plus EMAs), so an evicted problem's history survives in
its level's summary; its slot is cleared and reused, and the eviction is counted per level.

Ratios are bucketed to the nearest multiple of the ratio grid: bucket k holds ratio k * grid.
Level index 0 holds problems of unknown level; level l is at index l + 1.
"""
from __future__ import annotations

import numpy as np

# name -> (dtype, has a ratio-bucket axis, value of an empty row)
_PROBLEM_FIELDS = {
    "ids": (np.int64, False, 0),
    "level": (np.int32, False, -1),  # -1: unknown
    "attempts": (np.int32, True, 0),  # samples drawn at each ratio bucket
    "successes": (np.int32, True, 0),  # of which succeeded
    "groups": (np.int32, False, 0),  # groups recorded
    "ema_pass": (np.float32, False, 0.0),  # EMA of the group pass rate (any ratio)
    "last_step": (np.int64, False, -1),
    "ratio": (np.float32, False, 0.0),  # next first-attempt ratio proposed by the adaptive rule
    "alpha": (np.float32, False, 0.0),  # Beta posterior of the pass rate at bucket post_bucket
    "beta": (np.float32, False, 0.0),
    "post_bucket": (np.int32, False, -1),
}


def last_occurrence(keys_B: np.ndarray) -> np.ndarray:
  """int64 [U]: for each distinct key (ascending), the index of its last occurrence in keys_B."""
  keys_B = np.asarray(keys_B)
  _, first_in_reversed = np.unique(keys_B[::-1], return_index=True)
  return (keys_B.size - 1 - first_in_reversed).astype(np.int64)


def ema_update(old, new, decay: float, is_first) -> np.ndarray:
  """float32: decay * old + (1 - decay) * new, or new itself where is_first (no history yet)."""
  return np.where(is_first, new, decay * np.asarray(old, np.float64) + (1.0 - decay) * new).astype(np.float32)


def beta_posterior_update(alpha, beta, same_bucket, successes, failures, *, prior_alpha, prior_beta, decay):
  """The discounted Beta posterior of a pass rate after one group.

  Evidence gathered at the same ratio bucket is kept, discounted by `decay` (the policy improves,
  so old outcomes say less); a group at another bucket starts from the prior. Returns
  (alpha, beta) as float32.
  """
  keep = np.where(same_bucket, decay, 0.0)
  a = prior_alpha + keep * (np.asarray(alpha, np.float64) - prior_alpha) + successes
  b = prior_beta + keep * (np.asarray(beta, np.float64) - prior_beta) + failures
  return a.astype(np.float32), b.astype(np.float32)


class ProblemStats:
  """Per-problem statistics: an id -> slot index and one array per field, slots [0, size) in use."""

  def __init__(self, num_buckets: int, max_problems: int, initial_capacity: int = 1024):
    self.num_buckets = int(num_buckets)
    self.max_problems = int(max_problems)
    self.size = 0
    self.evicted_total = 0
    self._alloc(min(initial_capacity, self.max_problems))
    self._sorted_ids = np.empty(0, np.int64)
    self._sorted_slots = np.empty(0, np.int64)

  # --- storage -------------------------------------------------------------------------------
  def _alloc(self, capacity: int) -> None:
    old = {name: getattr(self, name) for name in _PROBLEM_FIELDS if hasattr(self, name)}
    for name, (dtype, bucketed, empty) in _PROBLEM_FIELDS.items():
      shape = (capacity, self.num_buckets) if bucketed else (capacity,)
      arr = np.full(shape, empty, dtype)
      if name in old:
        arr[:self.size] = old[name][:self.size]
      setattr(self, name, arr)
    self.capacity = capacity

  def _clear_rows(self, slots: np.ndarray) -> None:
    for name, (_, _, empty) in _PROBLEM_FIELDS.items():
      getattr(self, name)[slots] = empty

  # --- lookup and insertion ------------------------------------------------------------------
  def lookup(self, ids_B: np.ndarray) -> np.ndarray:
    """int64 [B]: the slot of each id, -1 for ids not held."""
    ids_B = np.asarray(ids_B, np.int64)
    if self.size == 0:
      return np.full(ids_B.shape, -1, np.int64)
    pos = np.searchsorted(self._sorted_ids, ids_B)
    pos_c = np.minimum(pos, self.size - 1)
    found = self._sorted_ids[pos_c] == ids_B
    return np.where(found, self._sorted_slots[pos_c], -1)

  def ensure(self, ids_B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slots for every id, inserting the new ones (evicting least recently seen problems if full).

    Returns (slots int64 [B], levels int32 [E] of the E evicted problems, -1 for unknown level).
    """
    ids_B = np.asarray(ids_B, np.int64)
    slots = self.lookup(ids_B)
    new_ids = np.unique(ids_B[slots < 0])
    evicted_levels = np.empty(0, np.int32)
    if new_ids.size == 0:
      return slots, evicted_levels
    if new_ids.size > self.max_problems:
      raise ValueError(f"a batch holds {new_ids.size} distinct new problems but curriculum.max_problems="
                       f"{self.max_problems}; raise max_problems above the batch size")
    overflow = self.size + new_ids.size - self.max_problems
    reused = np.empty(0, np.int64)
    if overflow > 0:
      reused = self._evict(overflow, protected=slots[slots >= 0])
      evicted_levels = self.level[reused].copy()
      self._clear_rows(reused)
    num_appended = new_ids.size - reused.size
    if self.size + num_appended > self.capacity:
      self._alloc(min(self.max_problems, max(2 * self.capacity, self.size + num_appended)))
    new_slots = np.concatenate([reused, np.arange(self.size, self.size + num_appended, dtype=np.int64)])
    self.size += num_appended
    self.ids[new_slots] = new_ids
    pos = np.searchsorted(self._sorted_ids, new_ids)
    self._sorted_ids = np.insert(self._sorted_ids, pos, new_ids)
    self._sorted_slots = np.insert(self._sorted_slots, pos, new_slots)
    return self.lookup(ids_B), evicted_levels

  def _evict(self, count: int, protected: np.ndarray) -> np.ndarray:
    """Removes the `count` least recently seen problems not in `protected`; returns their slots, ascending."""
    candidate = np.ones(self.size, bool)
    candidate[protected] = False
    cand = np.flatnonzero(candidate)
    if cand.size < count:
      raise ValueError(f"curriculum.max_problems={self.max_problems} cannot hold this batch's problems; raise it")
    # Unique key: oldest last_step first, lowest slot among equals, so every host evicts the same rows.
    key = (self.last_step[cand] + 1) * np.int64(self.max_problems + 1) + cand
    pick = np.sort(cand[np.argpartition(key, count - 1)[:count]])
    pos = np.searchsorted(self._sorted_ids, self.ids[pick])
    self._sorted_ids = np.delete(self._sorted_ids, pos)
    self._sorted_slots = np.delete(self._sorted_slots, pos)
    self.evicted_total += int(count)
    return pick

  # --- recording -----------------------------------------------------------------------------
  def record(self, slots_B, buckets_B, successes_B, samples_B, step: int, levels_B, *, ema_decay: float,
             prior_alpha: float, prior_beta: float, posterior_decay: float) -> np.ndarray:
    """Adds one final group per row. Counts take every row; the sequential fields (EMA, posterior,
    level) take the last row of each slot when a problem appears twice in a batch.

    slots_B: int64 slots (from ensure); buckets_B: int32 ratio buckets; successes_B, samples_B: int;
    levels_B: int32, -1 keeps the stored level. Returns the rows (indices into B) that were last
    per slot, ascending by slot.
    """
    np.add.at(self.attempts, (slots_B, buckets_B), samples_B)
    np.add.at(self.successes, (slots_B, buckets_B), successes_B)
    last = last_occurrence(slots_B)
    s, b = slots_B[last], buckets_B[last]
    succ = successes_B[last].astype(np.float64)
    n = samples_B[last].astype(np.float64)
    first = self.groups[s] == 0  # no group recorded before this update
    np.add.at(self.groups, slots_B, 1)
    self.ema_pass[s] = ema_update(self.ema_pass[s], succ / n, ema_decay, first)
    self.alpha[s], self.beta[s] = beta_posterior_update(
        self.alpha[s], self.beta[s], self.post_bucket[s] == b, succ, n - succ,
        prior_alpha=prior_alpha, prior_beta=prior_beta, decay=posterior_decay)
    self.post_bucket[s] = b
    self.last_step[s] = step
    lv = np.asarray(levels_B)[last]
    known = lv >= 0
    self.level[s[known]] = lv[known]
    return last

  def posterior_mean(self, slots: np.ndarray) -> np.ndarray:
    """float64: alpha / (alpha + beta) at the slots' current bucket."""
    a = self.alpha[slots].astype(np.float64)
    return a / (a + self.beta[slots])

  # --- state ---------------------------------------------------------------------------------
  def state_dict(self) -> dict:
    """Arrays of the rows in use (at least one row: orbax cannot save empty arrays) and counters."""
    rows = max(self.size, 1)
    out = {name: getattr(self, name)[:rows].copy() for name in _PROBLEM_FIELDS}
    out["size"] = int(self.size)
    out["evicted_total"] = int(self.evicted_total)
    return out

  def load_state_dict(self, state: dict) -> None:
    size = int(np.asarray(state["size"]))
    if size > self.max_problems:
      raise ValueError(f"saved scheduler state holds {size} problems but curriculum.max_problems="
                       f"{self.max_problems}; restore with max_problems >= {size}")
    attempts = np.asarray(state["attempts"])
    if attempts.ndim != 2 or attempts.shape[1] != self.num_buckets:
      raise ValueError(f"saved scheduler state has {attempts.shape[-1]} ratio buckets but curriculum.ratio_grid "
                       f"gives {self.num_buckets}; restore with the ratio_grid it was saved with")
    self.size = 0
    self._alloc(max(min(1024, self.max_problems), size))
    for name, (dtype, _, _) in _PROBLEM_FIELDS.items():
      getattr(self, name)[:size] = np.asarray(state[name], dtype)[:size]
    self.size = size
    self.evicted_total = int(np.asarray(state["evicted_total"]))
    order = np.argsort(self.ids[:size], kind="stable")
    self._sorted_ids = self.ids[:size][order].copy()
    self._sorted_slots = order.astype(np.int64)


class LevelStats:
  """Per-level aggregates: lifetime counts per ratio bucket, EMAs of pass rate and of proposed ratio."""

  FIELDS = ("attempts", "successes", "groups", "ema_pass", "ratio_ema", "evicted")

  def __init__(self, max_levels: int, num_buckets: int):
    rows = int(max_levels) + 1
    self.attempts = np.zeros((rows, num_buckets), np.int64)
    self.successes = np.zeros((rows, num_buckets), np.int64)
    self.groups = np.zeros(rows, np.int64)
    self.ema_pass = np.zeros(rows, np.float32)
    self.ratio_ema = np.zeros(rows, np.float32)  # EMA of the next ratios proposed for the level's problems
    self.evicted = np.zeros(rows, np.int64)

  def record(self, level_idx_B, buckets_B, successes_B, samples_B, next_ratio_U, level_idx_U, *,
             ema_decay: float) -> None:
    """Adds this update's groups (all rows) and next ratios (one per distinct problem)."""
    rows = self.groups.size
    np.add.at(self.attempts, (level_idx_B, buckets_B), samples_B)
    np.add.at(self.successes, (level_idx_B, buckets_B), successes_B)
    count_L = np.bincount(level_idx_B, minlength=rows)
    pass_sum_L = np.bincount(level_idx_B, weights=successes_B / samples_B, minlength=rows)
    ratio_count_L = np.bincount(level_idx_U, minlength=rows)
    ratio_sum_L = np.bincount(level_idx_U, weights=next_ratio_U, minlength=rows)
    first = self.groups == 0
    hit = count_L > 0
    self.ema_pass[hit] = ema_update(self.ema_pass[hit], pass_sum_L[hit] / count_L[hit], ema_decay, first[hit])
    hit = ratio_count_L > 0
    self.ratio_ema[hit] = ema_update(self.ratio_ema[hit], ratio_sum_L[hit] / ratio_count_L[hit], ema_decay,
                                     first[hit])
    self.groups += count_L

  def record_evicted(self, level_idx_E) -> None:
    np.add.at(self.evicted, level_idx_E, 1)

  def state_dict(self) -> dict:
    return {name: getattr(self, name).copy() for name in self.FIELDS}

  def load_state_dict(self, state: dict) -> None:
    for name in self.FIELDS:
      arr = np.asarray(state[name])
      if arr.shape != getattr(self, name).shape:
        raise ValueError(f"saved scheduler level table {name!r} has shape {arr.shape}, expected "
                         f"{getattr(self, name).shape}; restore with the curriculum.max_levels and ratio_grid "
                         "it was saved with")
      setattr(self, name, arr.astype(getattr(self, name).dtype))
