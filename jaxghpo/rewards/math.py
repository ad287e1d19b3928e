"""Math answer checking with math-verify, run in killable worker processes.

    scores = math_reward(completions, answers)   # list[str], list[str] -> np.float32 [B] in {0, 1}

Gold answers are taken as MATH writes them: raw LaTeX ("\\frac{1}{2}", "[1,2)", "\\{1,2\\}", "x^2+1"),
with or without surrounding $...$ / \\(...\\) / \\[...\\] or \\boxed{...}. We wrap them in $...$ so that
math-verify reads them as math (unwrapped, "[1,2)" or "x^2+1" would not be extracted as LaTeX).

Completions: the answer is the last \\boxed{...} (math-verify's LaTeX extraction with boxed at top
priority), else an anchored "final answer is $x$" / "Answer: x"; bare numbers in the text do not count,
as in GHPO's (open-r1's) accuracy reward. If the completion has <answer>...</answer> tags, the content
of the last pair is the answer, read like a gold answer (raw LaTeX allowed).

math-verify's own timeouts use signal.alarm, which fails off the main thread, and some inputs keep
sympy busy for minutes, so items run in a `WorkerPool` (pool.py) with a hard per-item deadline.
Counters of the last call (timeouts, kills, errors, unparsable gold answers, ...) are in `last_stats()`.

Workers import this module by name (the pool's forkserver preloads it and math-verify once per
process); math-verify itself is imported by `warm_up`, so the parent never pays for it.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 5.0
DEFAULT_MAX_COMPLETION_CHARS = 32768   # keep the tail: answers come last; a megabyte costs IPC and regex time

# ----------------------------------------------------------------------------------------------
# Text handling (pure; runs in workers, tested directly).

_MATH_DELIMITERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))


def gold_to_latex(answer: str) -> str:
  """A gold answer as MATH writes it -> text that math-verify extracts as one LaTeX expression.

  "\\frac{1}{2}" -> "$\\frac{1}{2}$"; "$[1,2)$" -> "$[1,2)$"; "\\boxed{3}" stays as it is (math-verify
  extracts boxed content); "" -> "" (nothing to compare against).
  """
  s = answer.strip()
  if "\\boxed" in s or "\\fbox" in s:
    return s
  for left, right in _MATH_DELIMITERS:
    if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
      s = s[len(left):len(s) - len(right)].strip()
      break
  if not s:
    return ""
  # Inline $...$ cannot span lines in math-verify's patterns.
  return "$" + " ".join(s.split("\n")) + "$"


def answer_tag_content(completion: str) -> str | None:
  """Content of the last complete <answer>...</answer> pair, or None. Linear time."""
  end = completion.rfind("</answer>")
  if end < 0:
    return None
  start = completion.rfind("<answer>", 0, end)
  if start < 0:
    return None
  return completion[start + len("<answer>"):end]


def completion_target(completion: str) -> tuple[str, bool]:
  """(text to parse, parse it like a gold answer?) for one completion."""
  inner = answer_tag_content(completion)
  if inner is None:
    return completion, False
  if "\\boxed" in inner:
    return inner, False
  return gold_to_latex(inner), True


# ----------------------------------------------------------------------------------------------
# Worker side.

_MV: dict = {}


def warm_up() -> None:
  """Imports math-verify (with sympy: ~1 s) and runs one comparison, so regexes are compiled and
  the LaTeX parser is loaded before the worker reports ready."""
  if _MV:
    return
  from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
  # Timeouts are the pool's job (math-verify's are disabled below); its warnings would echo
  # whole hostile completions to stderr.
  for name in ("math_verify", "latex2sympy2_extended"):
    logging.getLogger(name).setLevel(logging.CRITICAL)
  _MV.update(
      parse=parse, verify=verify,
      gold_config=(LatexExtractionConfig(), ExprExtractionConfig()),
      pred_config=(LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False),
                   ExprExtractionConfig(try_extract_without_anchor=False)),
  )
  score_one("so it is \\boxed{\\frac{1}{2}}", "0.5")


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold_latex: str) -> tuple:
  # G completions share one gold answer: parse it once per worker.
  return tuple(_MV["parse"](gold_latex, _MV["gold_config"], extraction_mode="first_match",
                            parsing_timeout=None))


def score_one(completion: str, answer: str) -> tuple[float, str]:
  """(score in {0, 1}, code) for one item, code in "ok" | "gold_unparsed" | "pred_unparsed".

  Runs math-verify without its own (signal) timeouts: the pool's soft and hard deadlines apply.
  """
  warm_up()
  gold = _parse_gold(gold_to_latex(answer))
  if not gold:
    return 0.0, "gold_unparsed"
  text, as_gold = completion_target(completion)
  config = _MV["gold_config"] if as_gold else _MV["pred_config"]
  pred = _MV["parse"](text, config, extraction_mode="first_match", parsing_timeout=None)
  if not pred:
    return 0.0, "pred_unparsed"
  ok = _MV["verify"](list(gold), pred, timeout_seconds=None)
  return (1.0 if ok else 0.0), "ok"


# ----------------------------------------------------------------------------------------------
# Parent side.

@dataclasses.dataclass
class RewardStats:
  """Counters of one scoring call.

  items: completions scored. correct: scored 1. timeouts: overran the deadline (scored 0).
  kills: workers killed for it (each one restarted). errors: math-verify raised or a worker died.
  gold_unparsed: gold answers math-verify could not read (a data problem: these items score 0).
  pred_unparsed: completions with no extractable answer. restarts: workers started as replacements.
  seconds: wall time of the call.
  """

  items: int = 0
  correct: int = 0
  timeouts: int = 0
  kills: int = 0
  errors: int = 0
  gold_unparsed: int = 0
  pred_unparsed: int = 0
  restarts: int = 0
  seconds: float = 0.0

  def as_dict(self, prefix: str = "") -> dict:
    return {prefix + k: v for k, v in dataclasses.asdict(self).items()}


def _as_text_list(values: Sequence, what: str) -> list[str]:
  if isinstance(values, (str, bytes)):
    raise TypeError(f"{what} must be a list of strings, got a single {type(values).__name__}.")
  out = []
  for i, v in enumerate(values):
    if isinstance(v, str):
      out.append(v)
    elif isinstance(v, (int, float, np.integer, np.floating)) and what == "answers":
      out.append(str(v))
    else:
      raise TypeError(f"{what}[{i}] is a {type(v).__name__}, expected str.")
  return out


class MathVerifier:
  """math-verify scoring in a private worker pool (created on first use, reused across calls).

  Args:
    num_workers: worker processes (default: pool.default_num_workers()).
    deadline_s: hard per-item deadline in seconds; an item over it scores 0 and is counted.
    max_completion_chars: only the last this-many characters of a completion are checked.
    soft_fraction: in-worker soft deadline as a fraction of deadline_s (keeps the worker alive).
    memory_limit_mb: address-space limit per worker.
  """

  def __init__(self, *, num_workers: int | None = None, deadline_s: float = DEFAULT_DEADLINE_S,
               max_completion_chars: int = DEFAULT_MAX_COMPLETION_CHARS, soft_fraction: float = 0.8,
               memory_limit_mb: int = 4096):
    if max_completion_chars < 1:
      raise ValueError(f"max_completion_chars={max_completion_chars} must be >= 1.")
    if not deadline_s > 0:
      raise ValueError(f"deadline_s={deadline_s} must be > 0 seconds.")
    if not 0.0 <= soft_fraction < 1.0:
      raise ValueError(f"soft_fraction={soft_fraction} must be in [0, 1); 0 turns the soft deadline off.")
    if num_workers is not None and num_workers < 1:
      raise ValueError(f"num_workers={num_workers} must be >= 1 (or None for the default).")
    self.num_workers = num_workers
    self.deadline_s = float(deadline_s)
    self.max_completion_chars = int(max_completion_chars)
    self.soft_fraction = soft_fraction
    self.memory_limit_mb = memory_limit_mb
    self._pool = None
    self._lock = threading.Lock()

  @property
  def pool(self):
    """The WorkerPool (created, not yet started, on first access)."""
    with self._lock:
      if self._pool is None or self._pool.closed:
        from jaxghpo.rewards.pool import WorkerPool  # not at module level: pool.py imports pebble
        self._pool = WorkerPool(
            score_one, init=warm_up, num_workers=self.num_workers, deadline_s=self.deadline_s,
            soft_fraction=self.soft_fraction, fallback=(0.0, "fallback"),
            memory_limit_mb=self.memory_limit_mb)
      return self._pool

  def score(self, completions: Sequence[str], answers: Sequence[str], *,
            deadline_s: float | None = None) -> tuple[np.ndarray, RewardStats]:
    """-> (scores float32 [B] in {0, 1}, RewardStats). Never hangs: each item is bounded by the deadline."""
    completions = _as_text_list(completions, "completions")
    answers = _as_text_list(answers, "answers")
    if len(completions) != len(answers):
      raise ValueError(f"{len(completions)} completions but {len(answers)} answers; "
                       "pass one gold answer per completion (repeat each answer G times).")
    if not completions:
      return np.zeros((0,), np.float32), RewardStats()
    cut = self.max_completion_chars
    items = [(c[-cut:], a) for c, a in zip(completions, answers)]
    result = self.pool.map(items, deadline_s=deadline_s)
    scores_B = np.array([v[0] for v in result.values], dtype=np.float32)
    codes = [v[1] for v in result.values]
    stats = RewardStats(
        items=len(items), correct=int(scores_B.sum()), timeouts=result.stats.timeouts,
        kills=result.stats.kills, errors=result.stats.errors,
        gold_unparsed=codes.count("gold_unparsed"), pred_unparsed=codes.count("pred_unparsed"),
        restarts=result.stats.restarts, seconds=result.stats.seconds)
    if stats.gold_unparsed:
      bad = next(a for a, c in zip(answers, codes) if c == "gold_unparsed")
      logger.warning("math-verify could not parse %d gold answer(s), e.g. %r; those items score 0. "
                     "Fix the answer field of the dataset.", stats.gold_unparsed, bad[:200])
    return scores_B, stats

  def close(self) -> None:
    with self._lock:
      if self._pool is not None:
        self._pool.close()
        self._pool = None

  def __enter__(self) -> "MathVerifier":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# The process-wide verifier behind math_reward(); its pool is closed at interpreter exit by pool.py.
_default: MathVerifier | None = None
_default_kwargs: dict = dict(num_workers=None, deadline_s=DEFAULT_DEADLINE_S,
                             max_completion_chars=DEFAULT_MAX_COMPLETION_CHARS, soft_fraction=0.8,
                             memory_limit_mb=4096)
_default_lock = threading.Lock()
_last_stats = RewardStats()


def configure(**kwargs) -> None:
  """Sets options of the default verifier behind math_reward (MathVerifier's arguments: num_workers,
  deadline_s, max_completion_chars, soft_fraction, memory_limit_mb); options not named keep their
  values. Its pool restarts (on next use) only if an option changes."""
  global _default, _default_kwargs
  unknown = set(kwargs) - set(_default_kwargs)
  if unknown:
    raise TypeError(f"configure() got unknown option(s) {sorted(unknown)}; known: {sorted(_default_kwargs)}.")
  merged = {**_default_kwargs, **kwargs}
  MathVerifier(**merged)  # validate before touching the running one
  with _default_lock:
    if merged != _default_kwargs and _default is not None:
      _default.close()
      _default = None
    _default_kwargs = merged


def default_verifier() -> MathVerifier:
  global _default
  with _default_lock:
    if _default is None:
      _default = MathVerifier(**_default_kwargs)
    return _default


def math_reward(completions: Sequence[str], answers: Sequence[str], *,
                deadline_s: float | None = None) -> np.ndarray:
  """1.0 where the completion's final answer equals the gold answer per math-verify, else 0.0.

  completions, answers: lists of B strings -> np.float32 [B]. Never hangs: each item has a hard
  deadline (`deadline_s`, default 5 s; see `configure`); an item over it scores 0 and is counted in
  `last_stats()`.
  """
  global _last_stats
  scores_B, stats = default_verifier().score(completions, answers, deadline_s=deadline_s)
  _last_stats = stats
  return scores_B


def last_stats() -> RewardStats:
  """Counters of the most recent math_reward() call."""
  return dataclasses.replace(_last_stats)


def shutdown() -> None:
  """Stops the default verifier's workers (they restart on the next math_reward call)."""
  global _default
  with _default_lock:
    if _default is not None:
      _default.close()
      _default = None
