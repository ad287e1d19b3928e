"""DeepConf online (Fu et al. 2025, shared/GHPO.md): warm-up traces set each problem's confidence bar,
later traces stop inside the sampler once their sliding-window confidence falls below it.

Per problem, in evaluation:
  1. warm-up: ``warmup_traces`` full traces (the offline samples' first ones); each trace's lowest
     window confidence (evaluation.lowest_group_confidence over ``window`` tokens);
  2. threshold = the ``percentile``-th percentile of those (DeepConf-low: 90, keeps the top 10% of
     warm-up traces' confidence; DeepConf-high: 10, keeps 90%);
  3. num_samples - warmup_traces online traces are sampled with that threshold
     (Sampler(..., return_confidence=True)(..., stop_threshold=thr_B, stop_window=window)): a trace ends,
     without an answer, at its first window whose mean confidence is below it; nothing compiles anew, the
     threshold is data;
  4. the online vote is the majority vote of the warm-up traces and the online traces that finished.
It is reported beside the offline confidence-filtered vote over the same problem's num_samples full
traces (evaluation.confidence_filtered_vote keeping 1 - percentile / 100): both spend num_samples traces
(the warm-up ones are shared), so their tokens compare directly.

Config (``config.eval.deepconf``): enabled, warmup_traces (< eval.num_samples), window (tokens),
percentile. evaluation.evaluate(..., deepconf=from_config(...)) runs it, in the trainer and in
tools/evaluate.py.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Hashable, Sequence

import numpy as np

from jaxghpo import evaluation
from jaxghpo.rewards import simple

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
    lowest = np.array([evaluation.lowest_group_confidence(conf[r], dc.window, int(lengths[r])) for r in rows])
    if np.isfinite(lowest).any():
      out[b] = evaluation.stop_threshold(lowest, dc.keep_frac)
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
  lowest = [evaluation.lowest_group_confidence(c, dc.window, int(n)) for c, n in zip(offline_conf_N, offline_lengths)]
  offline = evaluation.confidence_filtered_vote(list(offline_answers), lowest, dc.keep_frac)
  finished = [i for i, s in enumerate(online_stopped) if not s]
  answers = list(offline_answers[:w]) + [online_answers[i] for i in finished]
  correct = list(offline_correct[:w]) + [online_correct[i] for i in finished]
  online = evaluation.majority_vote(answers)
  warm_tokens = int(np.sum(offline_lengths[:w]))
  return {"threshold": float(threshold),
          "offline_vote_correct": evaluation._voted_correct(offline, list(offline_answers), list(offline_correct)),
          "online_vote_correct": evaluation._voted_correct(online, answers, correct),
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
