"""Many JAX processes (hosts): each process's rows of a global batch, and the collectives between processes.

Process h owns rows [h * R / n, (h + 1) * R / n) of every global batch (the mesh orders devices by
process, so the batch axis over ("data", "fsdp") splits along process boundaries). On one process
these are plain device_put / device_get, and every collective returns its input unchanged.

Collectives (allgather_rows, allgather, allgather_json, agreed_max, agreed_sum, sync): every process
calls them, the same number of times and in the same order, whatever it has; a host with fewer rows,
or none, still calls. Rows travel as bytes, padded to the longest host's count and stripped after, so
hosts may hold different row counts and int64 ids or float64 counters survive without jax_enable_x64.
"""
from __future__ import annotations

import json
import math

import jax
import numpy as np
from jax.experimental import multihost_utils


def process_count() -> int:
  """The number of JAX processes (the one place the package asks; tests replace it)."""
  return jax.process_count()


# ------------------------------------------------------------------- host <-> device rows
def global_from_local(local, sharding):
  """A global jax.Array from this process's rows (numpy [R_local, ...])."""
  local = np.asarray(local)
  if process_count() == 1:
    return jax.device_put(local, sharding)
  return jax.make_array_from_process_local_data(sharding, local)


def local_rows(x) -> np.ndarray:
  """This process's rows of a global array sharded (or replicated) along axis 0, as numpy."""
  n = process_count()
  if n == 1 or x.is_fully_addressable:
    full = np.asarray(jax.device_get(x))
    if n == 1:
      return full
    h = jax.process_index()
    rows = full.shape[0] // n
    return full[h * rows:(h + 1) * rows]
  shards = {}
  for s in x.addressable_shards:
    start = s.index[0].start or 0
    shards.setdefault(start, np.asarray(s.data))
  return np.concatenate([shards[k] for k in sorted(shards)], axis=0)


# ------------------------------------------------------------------------------ collectives
def _same_shape_gather(x: np.ndarray) -> np.ndarray:
  """[n_processes * rows, ...]: an array of the same shape and dtype on every process, stacked in process order."""
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _padded_gather(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(every process's rows of `packed` concatenated in process order, int [n_processes] rows per process).

  packed: uint8 [rows, W], W the same on every process, rows this process's own."""
  rows = packed.shape[0]
  rows_per_process = _same_shape_gather(np.array([rows], np.int32)).reshape(-1)
  max_rows = int(rows_per_process.max())
  padded = np.zeros((max_rows, packed.shape[1]), np.uint8)
  padded[:rows] = packed
  gathered = _same_shape_gather(padded).reshape(len(rows_per_process), max_rows, -1)
  return np.concatenate([gathered[p, :int(n)] for p, n in enumerate(rows_per_process)], axis=0), rows_per_process


def _as_bytes(arr: np.ndarray, rows: int) -> np.ndarray:
  arr = np.ascontiguousarray(arr)
  return arr.reshape(rows, math.prod(arr.shape[1:])).view(np.uint8)


def allgather_rows(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Concatenates each array along axis 0 over all JAX processes, in process order.

  Arrays of one call must share their first dimension on a host; hosts may hold different row
  counts. Any fixed-size dtype works (rows travel as bytes). One process: returned unchanged.
  """
  if process_count() == 1:
    return arrays
  names = sorted(arrays)
  rows = int(arrays[names[0]].shape[0])
  for name in names:
    if arrays[name].shape[0] != rows:
      raise ValueError(f"allgather_rows: {name!r} has {arrays[name].shape[0]} rows, {names[0]!r} has {rows}")
  parts = [_as_bytes(arrays[name], rows) for name in names]
  widths = [p.shape[1] for p in parts]
  gathered, _ = _padded_gather(np.concatenate(parts, axis=1))
  out, col = {}, 0
  for name, width in zip(names, widths):
    arr = arrays[name]
    chunk = np.ascontiguousarray(gathered[:, col:col + width])
    out[name] = chunk.view(arr.dtype).reshape((gathered.shape[0],) + arr.shape[1:])
    col += width
  return out


def allgather(x: np.ndarray) -> np.ndarray:
  """[all processes' rows, ...]: every process's rows of one array stacked in process order (see
  allgather_rows; identity on one process)."""
  x = np.asarray(x)
  return x if process_count() == 1 else allgather_rows({"x": x})["x"]


def allgather_json(value) -> list:
  """[every process's `value`] in process order, through JSON (strings, numbers, lists, dicts; sizes may
  differ between processes)."""
  if process_count() == 1:
    return [value]
  data = np.frombuffer(json.dumps(value, default=lambda x: x.tolist()).encode("utf-8"), np.uint8)  # numpy: lists
  gathered, sizes = _padded_gather(data.reshape(-1, 1))
  ends = np.cumsum(sizes)
  return [json.loads(gathered[end - int(n):end, 0].tobytes().decode("utf-8")) for n, end in zip(sizes, ends)]


def agreed_max(value: int) -> int:
  """The largest `value` over all JAX processes (int32 per host).

  The host loop sizes every collective call with it, so hosts with different outcomes still issue
  the same calls with the same shapes. One process: `value` unchanged."""
  if process_count() == 1:
    return int(value)
  return int(_same_shape_gather(np.array([int(value)], np.int32)).max())


def agreed_sum(value: int) -> int:
  """The sum of the count `value` over all JAX processes (int32 per host, summed as int64)."""
  if process_count() == 1:
    return int(value)
  return int(_same_shape_gather(np.array([int(value)], np.int32)).astype(np.int64).sum())


def sync(name: str) -> None:
  """A barrier of all processes (named, for the error a missing process gives)."""
  if process_count() > 1:
    multihost_utils.sync_global_devices(name)
