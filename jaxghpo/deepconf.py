"""DeepConf online (Fu et al. 2025, shared/GHPO.md): warm-up traces set each problem's confidence bar,
later traces stop inside the sampler once their sliding-window confidence falls below it.

Per problem, in evaluation:
  1. warm-up: ``warmup_traces`` full traces (the offline samples' first ones); each trace's lowest
     window confidence (lowest_group_confidence over ``window`` tokens);
  2. threshold = the ``percentile``-th percentile of those (DeepConf-low: 90, keeps the top 10% of
     warm-up traces' confidence; DeepConf-high: 10, keeps 90%);
  3. num_samples - warmup_traces online traces are sampled with that threshold
     (Sampler(..., return_confidence=True)(..., stop_threshold=thr_B, stop_window=window)): a trace ends,
     without an answer, at its first window whose mean confidence is below it; nothing compiles anew, the
     threshold is data;
  4. the online vote is the majority vote of the warm-up traces and the online traces that finished.
It is reported beside the offline confidence-filtered vote over the same problem's num_samples full
traces (confidence_filtered_vote keeping 1 - percentile / 100): both spend num_samples traces
(the warm-up ones are shared), so their tokens compare directly.

Config (``config.eval.deepconf``): enabled, warmup_traces (< eval.num_samples), window (tokens),
percentile. evaluation.evaluate(..., deepconf=from_config(...)) runs it, in the trainer and in
tools/evaluate.py.

DeepConf's maths live here (pure numpy, re-exported by evaluation): group_confidence (sliding-window
means of per-token confidences), lowest_group_confidence / bottom_percent_confidence / tail_confidence
(trace-level), trace_confidences, confidence_filtered_vote, stop_threshold, early_stop_savings. This
module imports voting.py, never evaluation.py (evaluation imports it).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable, Hashable, Sequence

import numpy as np

from jaxghpo import voting
from jaxghpo.rewards import simple

# ---------------------------------------------------------------------------- DeepConf confidence
def _valid(conf_N, length: int | None) -> np.ndarray:
  conf = np.asarray(conf_N, np.float64)
  if conf.ndim != 1:
    raise ValueError(f"token confidences must be 1-D [N], got shape {conf.shape}")
  length = conf.shape[0] if length is None else int(length)
  if not 0 <= length <= conf.shape[0]:
    raise ValueError(f"length={length} is outside [0, {conf.shape[0]}] for confidences of shape {conf.shape}")
  return conf[:length]


def group_confidence(conf_N, window: int, length: int | None = None) -> np.ndarray:
  """Sliding-window means of a response's token confidences: float64 [max(L - window + 1, 1)].

  Entry j is the mean over tokens [j, j + window). A response shorter than the window has one group,
  the mean of all its tokens; an empty response has none (shape [0]).
  conf_N: per-token confidences (padding after ``length`` is ignored); window: tokens per group.
  """
  if window < 1:
    raise ValueError(f"window={window} must be >= 1 tokens")
  conf = _valid(conf_N, length)
  L = conf.shape[0]
  if L == 0:
    return np.zeros(0)
  if L <= window:
    return np.array([conf.mean()])
  csum = np.concatenate([[0.0], np.cumsum(conf)])
  return (csum[window:] - csum[:-window]) / window


def lowest_group_confidence(conf_N, window: int, length: int | None = None) -> float:
  """The minimum window mean: the trace's weakest stretch (NaN for an empty response)."""
  groups = group_confidence(conf_N, window, length)
  return float(groups.min()) if groups.size else float("nan")


def bottom_percent_confidence(conf_N, window: int, length: int | None = None, percent: float = 0.1) -> float:
  """Mean of the lowest ``percent`` (a fraction in (0, 1]) of window means, at least one window."""
  if not 0.0 < percent <= 1.0:
    raise ValueError(f"percent={percent} must be a fraction in (0, 1]")
  groups = np.sort(group_confidence(conf_N, window, length))
  if groups.size == 0:
    return float("nan")
  return float(groups[:max(1, int(math.ceil(percent * groups.size)))].mean())


def tail_confidence(conf_N, tail_tokens: int, length: int | None = None) -> float:
  """Mean confidence of the last ``tail_tokens`` tokens (where the answer is written)."""
  if tail_tokens < 1:
    raise ValueError(f"tail_tokens={tail_tokens} must be >= 1")
  conf = _valid(conf_N, length)
  return float(conf[-tail_tokens:].mean()) if conf.size else float("nan")


def trace_confidences(conf_BxN, lengths_B, *, method: str = "lowest_group", window: int = 16,
                      tail_tokens: int = 16, percent: float = 0.1) -> np.ndarray:
  """One confidence per response of a batch: float64 [B] by ``method`` ("lowest_group" |
  "bottom_percent" | "tail" | "mean")."""
  conf, lengths = np.asarray(conf_BxN), np.asarray(lengths_B)
  fns = {
      "lowest_group": lambda c, n: lowest_group_confidence(c, window, n),
      "bottom_percent": lambda c, n: bottom_percent_confidence(c, window, n, percent),
      "tail": lambda c, n: tail_confidence(c, tail_tokens, n),
      "mean": lambda c, n: float(np.mean(c[:n])) if n else float("nan"),
  }
  if method not in fns:
    raise ValueError(f"confidence method {method!r} is not one of {sorted(fns)}")
  return np.array([fns[method](c, int(n)) for c, n in zip(conf, lengths)], np.float64)


def confidence_filtered_vote(answers: Sequence[Hashable | None], trace_confidences_N, keep_frac: float,
                             *, weighted: bool = True) -> Hashable | None:
  """DeepConf offline voting: keep the ceil(keep_frac * n) most confident traces, then vote.

  weighted: each kept trace votes with its confidence (DeepConf's weighted vote); else one vote each.
  Confidence ties keep the earlier trace; vote ties go as in majority_vote (first seen among kept,
  in the original order). NaN confidences (empty traces) rank last.
  """
  if not 0.0 < keep_frac <= 1.0:
    raise ValueError(f"keep_frac={keep_frac} must be a fraction in (0, 1]")
  conf = np.asarray(trace_confidences_N, np.float64)
  if conf.shape != (len(answers),):
    raise ValueError(f"trace confidences have shape {conf.shape}; expected one per answer ({len(answers)})")
  if not answers:
    return None
  keep = max(1, int(math.ceil(keep_frac * len(answers))))
  order = np.argsort(-np.nan_to_num(conf, nan=-np.inf), kind="stable")[:keep]
  kept = np.sort(order)  # original order, so vote ties follow sampling order
  return voting.majority_vote([answers[i] for i in kept], conf[kept] if weighted else None)


def stop_threshold(warmup_confidences, keep_frac: float) -> float:
  """DeepConf's online threshold: the confidence that the top ``keep_frac`` of warm-up traces reach.

  warmup_confidences: one trace confidence (e.g. lowest_group_confidence) per warm-up trace. With
  keep_frac=0.1 (DeepConf-low) the threshold is their 90th percentile; a later trace stops when a
  window falls below it.
  """
  if not 0.0 < keep_frac <= 1.0:
    raise ValueError(f"keep_frac={keep_frac} must be a fraction in (0, 1]")
  conf = np.asarray(warmup_confidences, np.float64)
  conf = conf[np.isfinite(conf)]
  if conf.size == 0:
    raise ValueError("stop_threshold needs at least one finite warm-up confidence")
  return float(np.quantile(conf, 1.0 - keep_frac))


def early_stop_savings(conf_windows: Sequence[np.ndarray], lengths, threshold: float,
                       window: int | None = None) -> dict[str, float]:
  """Tokens not generated had each trace stopped at its first window whose mean is below threshold.

  conf_windows: per trace, its group_confidence(...) array (window j covers tokens [j, j + window));
  lengths: tokens each trace generated. A trace stopping at window j ends after token j + window - 1.
  window: tokens per group; None infers it from the arrays (L - number of windows + 1).
  Returns tokens_total, tokens_kept, tokens_saved, frac_saved and traces_stopped.
  """
  lengths = [int(n) for n in np.asarray(lengths).reshape(-1)]
  if len(conf_windows) != len(lengths):
    raise ValueError(f"{len(conf_windows)} confidence arrays but {len(lengths)} lengths")
  total = kept = stopped = 0
  for groups, L in zip(conf_windows, lengths):
    groups = np.asarray(groups, np.float64)
    w = window if window is not None else (L - groups.size + 1 if groups.size > 1 else L)
    below = np.flatnonzero(groups < threshold)
    end = L if below.size == 0 else min(int(below[0]) + w, L)
    total += L
    kept += end
    stopped += int(end < L)
  saved = total - kept
  return {"tokens_total": float(total), "tokens_kept": float(kept), "tokens_saved": float(saved),
          "frac_saved": saved / total if total else 0.0, "traces_stopped": float(stopped)}


STYLE_ANSWERS = {"plain": simple.strip, "boxed": simple.last_boxed, "think_answer": simple.answer_tag}


@dataclasses.dataclass(frozen=True)
class DeepConfOnline:
  warmup_traces: int
  window: int
  percentile: float

  @property
  def keep_frac(self) -> float:
    """The fraction of traces DeepConf keeps at this percentile (offline filter, stop_threshold)."""
    return 1.0 - self.percentile / 100.0


def from_config(eval_cfg, num_samples: int) -> DeepConfOnline | None:
  """config.eval.deepconf as settings (None when not enabled); errors name the key at fault."""
  d = eval_cfg.deepconf
  enabled, warmup, window, percentile = bool(d.enabled), int(d.warmup_traces), int(d.window), float(d.percentile)
  if not enabled:
    return None
  if not 1 <= warmup < num_samples:
    raise ValueError(f"config.eval.deepconf.warmup_traces={warmup} must be in [1, {num_samples - 1}]: below "
                     f"config.eval.num_samples={num_samples}, the traces per problem, so that some are online")
  if window < 1 or not 0.0 <= percentile < 100.0:
    raise ValueError(f"config.eval.deepconf.window={window} must be >= 1 and config.eval.deepconf.percentile="
                     f"{percentile} in [0, 100)")
  return DeepConfOnline(warmup, window, percentile)


def answer_fn(style: str, extract: Callable | None = None) -> Callable[[str], Hashable | None]:
  """What a completion votes for: the task's extractor, else the style's answer (\\boxed{}, <answer>)."""
  if extract is not None:
    return extract
  return STYLE_ANSWERS[style]


def warmup_thresholds(conf_RxN, lengths_R, num_samples: int, dc: DeepConfOnline) -> np.ndarray:
  """float32 [B]: each problem's stop threshold from its first dc.warmup_traces rows (R = B * num_samples,
  prompt-major); -inf (never stop) for a problem whose warm-up traces are all empty."""
  conf, lengths = np.asarray(conf_RxN), np.asarray(lengths_R)
  B = conf.shape[0] // num_samples
  out = np.full((B,), -np.inf, np.float32)
  for b in range(B):
    rows = range(b * num_samples, b * num_samples + dc.warmup_traces)
    lowest = np.array([lowest_group_confidence(conf[r], dc.window, int(lengths[r])) for r in rows])
    if np.isfinite(lowest).any():
      out[b] = stop_threshold(lowest, dc.keep_frac)
  return out


def problem_record(dc: DeepConfOnline, *, offline_answers, offline_correct, offline_conf_N, offline_lengths,
                   online_answers, online_correct, online_stopped, online_lengths, threshold: float) -> dict:
  """One problem's DeepConf comparison (JSON-able): offline confidence-filtered vote over its full traces,
  online vote over warm-up + finished online traces, and the tokens of each.

  offline_*: its n full traces (answers, correct bools, per-trace token confidences [n][L], lengths);
  online_*: its n - warmup_traces online traces (answers, correct bools, stopped bools, lengths).
  """
  if len(online_lengths) != len(offline_lengths) - dc.warmup_traces:
    raise ValueError(f"{len(online_lengths)} online traces for {len(offline_lengths)} offline ones; expected "
                     f"{len(offline_lengths) - dc.warmup_traces} (the offline count less the warm-up traces)")
  w = dc.warmup_traces
  lowest = [lowest_group_confidence(c, dc.window, int(n)) for c, n in zip(offline_conf_N, offline_lengths)]
  offline = confidence_filtered_vote(list(offline_answers), lowest, dc.keep_frac)
  finished = [i for i, s in enumerate(online_stopped) if not s]
  answers = list(offline_answers[:w]) + [online_answers[i] for i in finished]
  correct = list(offline_correct[:w]) + [online_correct[i] for i in finished]
  online = voting.majority_vote(answers)
  warm_tokens = int(np.sum(offline_lengths[:w]))
  return {"threshold": float(threshold),
          "offline_vote_correct": voting.voted_correct(offline, list(offline_answers), list(offline_correct)),
          "online_vote_correct": voting.voted_correct(online, answers, correct),
          "offline_tokens": int(np.sum(offline_lengths)),
          "online_tokens": warm_tokens + int(np.sum(online_lengths)),
          "online_stopped": int(np.sum(online_stopped)), "online_traces": len(online_lengths)}


# The numeric fields of a problem record (what summarize reads; gathered over hosts as numbers).
RECORD_NUMBERS = ("offline_vote_correct", "online_vote_correct", "offline_tokens", "online_tokens",
                  "online_stopped", "online_traces")


def summarize(records: Sequence[dict]) -> dict[str, float]:
  """Metrics over problems: vote accuracies, tokens, the fraction of online tokens saved and of traces stopped.

  tokens_saved_frac = 1 - online tokens / offline tokens (the same number of traces, measured).
  """
  if not records:
    return {}
  online = sum(r["online_tokens"] for r in records)
  offline = sum(r["offline_tokens"] for r in records)
  traces = sum(r["online_traces"] for r in records)
  return {"offline_vote_acc": float(np.mean([r["offline_vote_correct"] for r in records])),
          "online_vote_acc": float(np.mean([r["online_vote_correct"] for r in records])),
          "offline_tokens": float(offline),
          "online_tokens": float(online),
          "tokens_saved_frac": float(1.0 - online / offline) if offline else 0.0,
          "traces_stopped_frac": float(sum(r["online_stopped"] for r in records) / traces) if traces else 0.0}
