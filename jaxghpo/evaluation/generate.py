"""The generate_fn of the evaluator driver from the evaluation GroupSampler (rollout/groups.py).

    generate = group_generate(eval_rollout, params, rng, width=w, temperature=1.0)
    completions, None, extras = generate(examples, hint_ratio, num_samples, stop=None)
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def group_generate(group_sampler, params, rng, *, width: int, temperature: float) -> Callable:
  """generate_fn for `driver.evaluate` from a rollout.groups.GroupSampler (the evaluation sampler).

  Each call samples one group per problem in `width` rows per host (the rows past the chunk
  inactive), at hint ratio `hint_ratio` and `temperature`, with a new key split from `rng`; it keeps
  the first num_samples of the group's samples and returns (completions, None, extras) with extras
  hint, scores (the sampler's accuracy) and, when the sampler returns confidences, token_confidences
  (per sample, up to its length; 4 decimals) and stopped (DeepConf online, with stop=(thresholds, window)).
  """
  key = [rng]

  def generate(chunk, hint_ratio, n, stop=None):
    key[0], sub = _split_key(key[0])
    thresholds, window = (None, 1) if stop is None else stop
    g = group_sampler(params, chunk, np.full(len(chunk), hint_ratio, np.float32), sub, width=width,
                      temperature=temperature, stop_threshold=thresholds, stop_window=window)
    completions, extras = [], []
    for i in range(len(chunk)):
      completions.append([str(t) for t in g.completions[i, :n]])
      extra = {"hint": str(g.hint_text[i]), "scores": [float(a) for a in g.accuracy[i, :n]]}
      if g.confidence is not None:  # DeepConf: per-token confidence of each completion, up to its length
        extra["token_confidences"] = [np.round(g.confidence[i, j, :int(g.lengths[i, j])], 4).tolist()
                                      for j in range(n)]
      if stop is not None:
        extra["stopped"] = [bool(x) for x in g.stopped[i, :n]]
      extras.append(extra)
    return completions, None, extras

  return generate


def _split_key(rng):
  """(rng, key): jax.random.split of a key (jax imported here: the driver's maths are numpy only)."""
  import jax
  rng, key = jax.random.split(rng)
  return rng, key
