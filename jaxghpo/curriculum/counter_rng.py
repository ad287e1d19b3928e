"""Counter-based random numbers: uniform(seed, step, problem id, draw index), vectorised in numpy.

Why not a sequential numpy Generator: with several hosts, each host plans only its own slice of
the batch, so a shared Generator would advance differently on each host (and differently from a
one-host run of the same batch). A hash of (seed, step, id, j) gives every problem the same draw
whichever host plans it and however the batch is split, and needs no state beyond the seed, so a
restored scheduler draws exactly what an uninterrupted one would.

The mixer is SplitMix64's finaliser (Steele, Lea, Flood 2014), applied to uint64 arrays; numpy
wraps uint64 overflow silently, which is the arithmetic the mixer wants.
"""
from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1


def mix64(x: np.ndarray) -> np.ndarray:
  """SplitMix64 finaliser: a bijection on uint64 that scrambles every input bit into every output bit."""
  x = np.asarray(x, np.uint64)
  x = (x ^ (x >> np.uint64(30))) * _M1
  x = (x ^ (x >> np.uint64(27))) * _M2
  return x ^ (x >> np.uint64(31))


def uniforms(seed: int, step: int, ids_B: np.ndarray, num_draws: int) -> np.ndarray:
  """float64 [B, num_draws] in [0, 1): independent uniforms for each (seed, step, id, draw index)."""
  key = mix64(np.array([(int(seed) * 0x9E3779B97F4A7C15 + int(step)) & _MASK64], np.uint64))
  per_id_B = mix64(key ^ mix64(np.asarray(ids_B, np.int64).astype(np.uint64)))
  j_N = np.arange(1, num_draws + 1, dtype=np.uint64) * _GOLDEN
  bits_BxN = mix64(per_id_B[:, None] + j_N[None, :])
  return (bits_BxN >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
