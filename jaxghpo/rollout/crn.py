"""Common random numbers for training rollouts: one key per (seed, step, problem, round, occurrence).

Why: two arms of one seed (GRPO and GHPO, say) should draw the same unhinted samples wherever their
policies agree, so that a paired comparison over seeds pairs like with like. Splitting one running key
per sampler call breaks that at the first retry: the arm that retried has consumed more splits, and
every later draw differs. Here a row's key is a pure function of what the row is:

  problem key  = fold_in(... fold_in(base, step), id_lo32), id_hi32), round), occurrence)
  sample g     = fold_in(problem key, g)          (in the sampler: Sampler(row_keys=...))
  token t      = fold_in(sample g's key, t)

base = jax.random.key(derived.seed(config, "train_rng")); round = the sampler call of the step (0: the
first attempt, 1, 2, ...: retry rounds, then filter refills); occurrence = how many times the same
problem id came before in this host's rows of the step (a recurring pool can put one problem twice in a
batch that straddles an epoch; the two copies then still draw differently). Nothing depends on the
row's position in a sampler call, the call's width or the host: a one-process run and a multi-process
run draw the same samples for a problem (occurrences are counted per host, so this holds unless one
problem sits twice in a step on two different hosts).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def occurrences(ids_B) -> np.ndarray:
  """int64 [B]: for each row, how many earlier rows hold the same id."""
  seen: dict[int, int] = {}
  out = np.zeros(len(ids_B), np.int64)
  for i, pid in enumerate(np.asarray(ids_B, np.int64).tolist()):
    out[i] = seen.get(pid, 0)
    seen[pid] = out[i] + 1
  return out


@jax.jit
def _keys(base_key, step, lo_B, hi_B, round_, occ_B):
  step_key = jax.random.fold_in(base_key, step)

  def one(lo, hi, occ):
    k = jax.random.fold_in(jax.random.fold_in(step_key, lo), hi)
    return jax.random.fold_in(jax.random.fold_in(k, round_), occ)

  return jax.random.key_data(jax.vmap(one)(lo_B, hi_B, occ_B))


def problem_keys(base_key, step: int, ids_B, round_: int, occurrence_B=None) -> np.ndarray:
  """Raw key data [B, ...] (numpy, base_key's implementation): the sampling key of each problem row.

  base_key: a typed JAX key; step, round_: ints >= 0; ids_B: int problem ids (64-bit: both halves are
  folded in); occurrence_B: int [B] (default: `occurrences(ids_B)`)."""
  if not jnp.issubdtype(base_key.dtype, jax.dtypes.prng_key):
    base_key = jax.random.wrap_key_data(base_key)  # raw uint32 key data (an old checkpoint's rng)
  ids = np.asarray(ids_B, np.int64).astype(np.uint64)
  occ = occurrences(ids_B) if occurrence_B is None else np.asarray(occurrence_B, np.int64)
  if ids.size == 0:
    return np.zeros((0,) + np.shape(jax.random.key_data(base_key)), np.uint32)
  B = ids.size
  width = 1 << max(0, B - 1).bit_length()  # padded to a power of two: few shapes, few compiles
  lo, hi, oc = (np.zeros(width, np.uint32) for _ in range(3))
  lo[:B] = (ids & np.uint64(0xFFFFFFFF)).astype(np.uint32)
  hi[:B] = (ids >> np.uint64(32)).astype(np.uint32)
  oc[:B] = occ.astype(np.uint32)
  return np.asarray(_keys(base_key, jnp.uint32(step), lo, hi, jnp.uint32(round_), oc))[:B]
