"""All-gathering the scheduler's per-host rows so that every host applies the same update.

Each host passes its own slice of the batch to `HintScheduler.update`; the rows of all hosts are
concatenated in process order, so every host (and a one-host run over the whole batch) records
exactly the same groups in the same order and ends with the same state.
"""
from __future__ import annotations

import math

import numpy as np


def process_count() -> int:
  import jax  # imported here: a one-host, numpy-only user of the scheduler never pays for it
  return jax.process_count()


def _as_bytes(arr: np.ndarray, rows: int) -> np.ndarray:
  arr = np.ascontiguousarray(arr)
  return arr.reshape(rows, math.prod(arr.shape[1:])).view(np.uint8)


def allgather_rows(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Concatenates each array along axis 0 over all JAX processes, in process order.

  Arrays of one call must share their first dimension on a host; hosts may hold different row
  counts (rows are padded for the collective and stripped after). Any dtype works: rows travel as
  bytes, so int64 ids and float64 counters survive without jax_enable_x64. One process: returned
  unchanged. Every process must call this the same number of times (it is a collective).
  """
  if process_count() == 1:
    return arrays
  from jax.experimental import multihost_utils

  names = sorted(arrays)
  rows = int(arrays[names[0]].shape[0])
  for name in names:
    if arrays[name].shape[0] != rows:
      raise ValueError(f"allgather_rows: {name!r} has {arrays[name].shape[0]} rows, {names[0]!r} has {rows}")
  parts = [_as_bytes(arrays[name], rows) for name in names]
  widths = [p.shape[1] for p in parts]
  packed = np.concatenate(parts, axis=1)
  rows_per_process = np.asarray(multihost_utils.process_allgather(np.array([rows], np.int32))).reshape(-1)
  max_rows = int(rows_per_process.max())
  padded = np.zeros((max_rows, packed.shape[1]), np.uint8)
  padded[:rows] = packed
  gathered = np.asarray(multihost_utils.process_allgather(padded, tiled=True)).reshape(len(rows_per_process), max_rows, -1)
  gathered = np.concatenate([gathered[p, :int(n)] for p, n in enumerate(rows_per_process)], axis=0)
  out, col = {}, 0
  for name, width in zip(names, widths):
    arr = arrays[name]
    chunk = np.ascontiguousarray(gathered[:, col:col + width])
    out[name] = chunk.view(arr.dtype).reshape((gathered.shape[0],) + arr.shape[1:])
    col += width
  return out


def agreed_max(value: int) -> int:
  """The largest `value` over all JAX processes (a collective: every process calls it, in the same order).

  The host loop sizes every collective call with it, so hosts with different outcomes still issue
  the same calls with the same shapes. One process: `value` unchanged, no JAX needed."""
  if process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils
  return int(np.asarray(multihost_utils.process_allgather(np.array([int(value)], np.int32))).max())


def agreed_sum(value: int) -> int:
  """The sum of the count `value` over all JAX processes (a collective, like agreed_max; int32 per host)."""
  if process_count() == 1:
    return int(value)
  from jax.experimental import multihost_utils
  return int(np.asarray(multihost_utils.process_allgather(np.array([int(value)], np.int32))).astype(np.int64).sum())
