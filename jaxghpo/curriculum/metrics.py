"""Per-step scheduler metrics: flat dict of string keys to JSON-able Python floats (no NaN).

Keys (all fractions are over the groups recorded by `update`, i.e. the final group of each problem):
  groups                         groups recorded this step
  pass_rate                      mean success fraction of the final groups
  pass_rate_hinted / _unhinted   the same over groups with ratio > 0 / == 0 (only when present)
  frac_groups_nonzero_adv        groups whose accuracy rewards are not all equal (learning-signal yield)
  frac_groups_difficult          groups whose first attempt was all wrong (GHPO's "difficult")
  frac_groups_difficult_final    final groups still all wrong
  frac_groups_hinted             final groups sampled with a hint
  hint_ratio_mean                mean final hint ratio
  planned_ratio_mean             mean first-attempt ratio returned by plan since the last update
  hint_ratio_hist/<r>            fraction of final groups in ratio bucket r (every bucket, fixed key set)
  pass_rate_by_ratio/<r>         pass rate of the final groups in bucket r (buckets present only)
  pass_rate_by_level/<l>         pass rate of the final groups of level l (levels present only)
  retries                        groups re-sampled within the step (sum over the retry rounds)
  retry_rounds                   retry calls that asked for at least one re-sample (max over hosts)
  filter_groups_checked / filter_groups_dropped / frac_groups_dropped   counts seen by keep_mask
  problems_tracked, problems_evicted_total                              size of the statistics
"""
from __future__ import annotations

import numpy as np

from jaxghpo.curriculum import modes

# Per-step counters each host accumulates between updates (summed over hosts, except retry_rounds).
COUNTERS = ("plan_groups", "plan_ratio_sum", "first_groups", "first_difficult", "retries", "retry_rounds",
            "filter_checked", "filter_dropped")


def ratio_key(bucket: int, grid: float) -> str:
  return f"{bucket * grid:g}"


def step_metrics(ratios_B, rewards_BxG, levels_B, counters: dict, *, threshold: float, grid: float,
                 num_buckets: int) -> dict[str, float]:
  """The metrics of one step from the (all-gathered) final groups and the summed counters."""
  num_groups = ratios_B.size
  out: dict[str, float] = {"groups": float(num_groups)}
  out["retries"] = float(counters["retries"])
  out["retry_rounds"] = float(counters["retry_rounds"])
  out["filter_groups_checked"] = float(counters["filter_checked"])
  out["filter_groups_dropped"] = float(counters["filter_dropped"])
  out["frac_groups_dropped"] = float(counters["filter_dropped"] / max(counters["filter_checked"], 1))
  if counters["plan_groups"] > 0:
    out["planned_ratio_mean"] = float(counters["plan_ratio_sum"] / counters["plan_groups"])
  if num_groups == 0:
    return out

  pass_B = modes.group_successes(rewards_BxG, threshold) / rewards_BxG.shape[1]
  difficult_B = modes.is_difficult(rewards_BxG, threshold)
  hinted_B = ratios_B > 0
  out["pass_rate"] = float(pass_B.mean())
  if hinted_B.any():
    out["pass_rate_hinted"] = float(pass_B[hinted_B].mean())
  if (~hinted_B).any():
    out["pass_rate_unhinted"] = float(pass_B[~hinted_B].mean())
  out["frac_groups_nonzero_adv"] = float(modes.has_signal(rewards_BxG).mean())
  # Without retry() calls this step, the final groups are the first attempts.
  if counters["first_groups"] > 0:
    out["frac_groups_difficult"] = float(counters["first_difficult"] / counters["first_groups"])
  else:
    out["frac_groups_difficult"] = float(difficult_B.mean())
  out["frac_groups_difficult_final"] = float(difficult_B.mean())
  out["frac_groups_hinted"] = float(hinted_B.mean())
  out["hint_ratio_mean"] = float(ratios_B.mean(dtype=np.float64))

  bucket_B = modes.ratio_bucket(ratios_B, grid)
  count_K = np.bincount(bucket_B, minlength=num_buckets)
  pass_sum_K = np.bincount(bucket_B, weights=pass_B, minlength=num_buckets)
  for k in range(num_buckets):
    out[f"hint_ratio_hist/{ratio_key(k, grid)}"] = float(count_K[k] / num_groups)
    if count_K[k]:
      out[f"pass_rate_by_ratio/{ratio_key(k, grid)}"] = float(pass_sum_K[k] / count_K[k])
  known = levels_B >= 0
  if known.any():
    lv, inverse = np.unique(levels_B[known], return_inverse=True)
    count = np.bincount(inverse)
    pass_sum = np.bincount(inverse, weights=pass_B[known])
    for level, c, s in zip(lv.tolist(), count.tolist(), pass_sum.tolist()):
      out[f"pass_rate_by_level/{level}"] = float(s / c)
  return out
