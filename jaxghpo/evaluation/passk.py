"""The metrics of an evaluation, pure numpy: unbiased pass@k, avg@k, and their aggregation per level.

    pass_at_k(n, c, k)            unbiased pass@k per problem (Chen et al. 2021), stable product form
    avg_at_k(correct_PxN)         mean accuracy over all samples (avg@n)
    aggregate(rows, k)            pass@1, pass@k, avg@n, answer / valid pass@1, votes: overall and per level
    prefix_metrics(metrics, p)    {"pass@1": x} -> {p + "pass@1": x}
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import numpy as np


def pass_at_k(n, c, k: int) -> np.ndarray:
  """Unbiased pass@k = 1 - C(n - c, k) / C(n, k) per problem; float64, shape of broadcast(n, c).

  n: samples drawn per problem; c: how many of them are correct; k <= n.
  Computed as 1 - prod_{i = n - c + 1}^{n} (1 - k / i), which never forms a large binomial.
  When n - c < k every size-k subset holds a correct sample, so pass@k = 1.
  """
  n, c = np.broadcast_arrays(np.asarray(n, np.int64), np.asarray(c, np.int64))
  k = int(k)
  if k < 1:
    raise ValueError(f"pass@k needs k >= 1, got k={k}")
  if np.any(c < 0) or np.any(c > n):
    raise ValueError(f"pass@k needs 0 <= c <= n; got n={n.tolist()}, c={c.tolist()}")
  if np.any(n < k):
    raise ValueError(f"pass@{k} needs at least k={k} samples per problem; got n={n.tolist()}. "
                     "Draw num_samples >= k.")
  if n.size == 0:
    return np.zeros(n.shape)
  i = np.arange(1, int(n.max()) + 1, dtype=np.float64)        # [I]
  in_range = (i > (n - c)[..., None]) & (i <= n[..., None])   # [..., I]: i in (n - c, n]
  factors = np.where(in_range, 1.0 - k / i, 1.0)              # < 0 only where n - c < k (then a 0 factor appears)
  product = np.prod(factors, axis=-1)
  return np.where(n - c < k, 1.0, 1.0 - product)


def avg_at_k(correct_PxN) -> float:
  """Mean accuracy over every sample of every problem (avg@n); NaN when there are none."""
  correct = np.asarray(correct_PxN, np.float64)
  return float(correct.mean()) if correct.size else float("nan")


def aggregate(rows: Sequence[Mapping], k: int) -> dict[str, float]:
  """pass@1, pass@k, avg@n, answer_pass@1 (and valid_pass@1 when rows carry "valid", maj@n /
  conf_maj@n when they carry votes), overall and per level."""
  groups: dict[str, list] = defaultdict(list)
  for row in rows:
    groups[""].append(row)
    if int(row.get("level", -1)) >= 0:
      groups[f"/level_{int(row['level'])}"].append(row)
  metrics: dict[str, float] = {}
  for suffix, members in sorted(groups.items()):
    correct = [np.asarray(r["correct"], bool) for r in members]
    n = np.array([c.size for c in correct])
    c = np.array([c.sum() for c in correct])
    n_label = int(n.min()) if n.size else k
    metrics[f"pass@1{suffix}"] = float(pass_at_k(n, c, 1).mean())
    if all("valid" in r for r in members):  # answer right AND every written step valid
      metrics[f"valid_pass@1{suffix}"] = float(np.mean([np.mean(np.asarray(r["valid"], bool)) for r in members]))
    answer_key = "answer_right" if all("answer_right" in r for r in members) else "correct"
    metrics[f"answer_pass@1{suffix}"] = float(np.mean([np.mean(np.asarray(r[answer_key], bool)) for r in members]))
    if k != 1:
      metrics[f"pass@{k}{suffix}"] = float(pass_at_k(n, c, k).mean())
    metrics[f"avg@{n_label}{suffix}"] = float(np.mean([x.mean() for x in correct]))
    if all("maj_correct" in r for r in members):
      metrics[f"maj@{n_label}{suffix}"] = float(np.mean([r["maj_correct"] for r in members]))
    if all("conf_maj_correct" in r for r in members):
      metrics[f"conf_maj@{n_label}{suffix}"] = float(np.mean([r["conf_maj_correct"] for r in members]))
    metrics[f"num_problems{suffix}"] = float(len(members))
  return metrics


def prefix_metrics(metrics: Mapping[str, Any], prefix: str) -> dict[str, Any]:
  """{"pass@1": x} -> {"eval/test/pass@1": x} for a prefix "eval/test/"."""
  return {prefix + key: value for key, value in metrics.items()}
