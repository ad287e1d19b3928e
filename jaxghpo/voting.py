"""Answer voting (pure): vote counts, the majority (optionally weighted) vote, and whether a vote is right.

A floor below both evaluation.py and deepconf.py, which each vote over sampled answers.
"""
from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np


def vote_counts(answers: Sequence[Hashable | None], weights=None) -> dict:
  """{answer: total weight}, in order of first appearance; None answers (unparsed) are not counted."""
  weights = np.ones(len(answers)) if weights is None else np.asarray(weights, np.float64)
  if weights.shape != (len(answers),):
    raise ValueError(f"weights has shape {weights.shape}; expected one weight per answer ({len(answers)})")
  counts: dict = {}
  for answer, weight in zip(answers, weights):
    if answer is not None:
      counts[answer] = counts.get(answer, 0.0) + float(weight)
  return counts


def majority_vote(answers: Sequence[Hashable | None], weights=None) -> Hashable | None:
  """The answer with the largest (weighted) vote; None if no answer was given.

  Ties go to the tied answer that appears first in ``answers`` (deterministic, order of sampling).
  """
  counts = vote_counts(answers, weights)
  if not counts:
    return None
  best = max(counts.values())
  return next(a for a, v in counts.items() if v == best)  # dicts keep first-appearance order


def voted_correct(voted, extracted, correct) -> bool:
  """The voted answer is right when a sample giving that answer was scored correct."""
  return voted is not None and any(c for a, c in zip(extracted, correct) if a == voted)
