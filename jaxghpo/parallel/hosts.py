"""Host <-> device traffic when each JAX process feeds its own slice of a global batch.

Process h owns rows [h * R / n, (h + 1) * R / n) of every global batch (the mesh orders devices by
process, so the batch axis over ("data", "fsdp") splits along process boundaries). On one process
these are plain device_put / device_get.
"""
from __future__ import annotations

import json

import jax
import numpy as np
from jax.experimental import multihost_utils


def process_count() -> int:
  return jax.process_count()


def global_from_local(local, sharding):
  """A global jax.Array from this process's rows (numpy [R_local, ...])."""
  local = np.asarray(local)
  if jax.process_count() == 1:
    return jax.device_put(local, sharding)
  return jax.make_array_from_process_local_data(sharding, local)


def local_rows(x) -> np.ndarray:
  """This process's rows of a global array sharded (or replicated) along axis 0, as numpy."""
  if jax.process_count() == 1 or x.is_fully_addressable:
    full = np.asarray(jax.device_get(x))
    if jax.process_count() == 1:
      return full
    n, h = jax.process_count(), jax.process_index()
    rows = full.shape[0] // n
    return full[h * rows:(h + 1) * rows]
  shards = {}
  for s in x.addressable_shards:
    start = s.index[0].start or 0
    shards.setdefault(start, np.asarray(s.data))
  return np.concatenate([shards[k] for k in sorted(shards)], axis=0)


def allgather(x: np.ndarray) -> np.ndarray:
  """[n_processes * rows, ...]: every process's rows stacked in process order (identity on one process)."""
  x = np.asarray(x)
  if jax.process_count() == 1:
    return x
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def allgather_json(value) -> list:
  """[every process's `value`] in process order, through JSON (strings, numbers, lists, dicts; sizes may
  differ between processes). A collective: every process calls it, with whatever it has."""
  if jax.process_count() == 1:
    return [value]
  data = np.frombuffer(json.dumps(value, default=lambda x: x.tolist()).encode("utf-8"), np.uint8)  # numpy: lists
  sizes = allgather(np.asarray([data.size], np.int64))
  padded = np.zeros((1, int(sizes.max())), np.uint8)
  padded[0, :data.size] = data
  rows = allgather(padded)
  return [json.loads(rows[i, :int(n)].tobytes().decode("utf-8")) for i, n in enumerate(sizes)]


def sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
