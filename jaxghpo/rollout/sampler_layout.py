"""Where a Sampler's arrays live: the KV cache's axes (which one holds the slots, the logical name of each)
and the placement of every array on the mesh by logical axis names (none without a mesh).

The cache has S = Lp + N slots for each of the R rows (sampler.py's module docstring: the layout of rows
and slots)."""
from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxghpo import models, parallel
from jaxghpo.parallel import hosts


class SamplerLayout:
  """The cache layout and placements of one Sampler (model config, cache dtype, mesh, R rows, S slots)."""

  def __init__(self, cfg: models.ModelConfig, cache_dtype, mesh: jax.sharding.Mesh | None, num_rows: int,
               slots: int):
    self.cfg, self.cache_dtype, self.mesh = cfg, cache_dtype, mesh
    self.num_rows, self.slots = int(num_rows), int(slots)
    # Where the slot axis of the model's key and value caches is (found from shapes, so a layout change
    # in models.KVCache needs no change here), and the logical names of their axes.
    one, two = (jax.eval_shape(lambda n=n: models.KVCache.zeros(cfg, 1, n, cache_dtype)) for n in (1, 2))
    self.slot_axis, self.cache_names = {}, {}
    for field in ("k", "v"):
      a_shape, b_shape = getattr(one, field)[0].shape, getattr(two, field)[0].shape
      slot = [a != b for a, b in zip(a_shape, b_shape)].index(True)
      rest = iter(("kv_heads", "head_dim"))  # the other two axes, in this order in every layout used
      self.slot_axis[field] = slot
      self.cache_names[field] = tuple("batch" if a == 0 else "length" if a == slot else next(rest)
                                      for a in range(len(a_shape)))

  def sharding(self, shape, names):
    if self.mesh is None:
      return None
    return NamedSharding(self.mesh, parallel.spec_for_shape(shape, names, self.mesh))

  def constrain(self, x, names):
    sharding = self.sharding(x.shape, names)
    return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)

  def put(self, x, names):
    """A global array from the full host value ``x`` (the same on every process)."""
    sharding = self.sharding(np.shape(x), names)
    if hosts.process_count() == 1:
      # device_put, not jnp.asarray: the latter stages a small program per new shape.
      return jax.device_put(x, sharding)
    return jax.make_array_from_callback(np.shape(x), sharding, lambda index: x[index])

  def abstract(self, shape, dtype, names):
    """A ShapeDtypeStruct sharded by logical `names` on the mesh; names None: no sharding, as the numpy
    values a call passes (the key and the controls) have none."""
    shape = tuple(shape)
    if self.mesh is None or names is None:
      return jax.ShapeDtypeStruct(shape, dtype)
    return jax.ShapeDtypeStruct(shape, dtype, sharding=self.sharding(shape, names))

  def empty_cache(self) -> models.KVCache:
    """The decode cache [R rows, S slots], zeros, placed (call it under jit or eval_shape)."""
    cache = models.KVCache.zeros(self.cfg, self.num_rows, self.slots, self.cache_dtype)
    return self.map_cache(lambda field, x: self.constrain(x, self.cache_names[field]), cache)

  @staticmethod
  def map_cache(fn, cache, *more):
    """KVCache with fn(field, layer_array, *the same layer of `more` caches) for every layer of k and v."""
    return models.KVCache(
        k=tuple(fn("k", *xs) for xs in zip(cache.k, *(m.k for m in more))),
        v=tuple(fn("v", *xs) for xs in zip(cache.v, *(m.v for m in more))))
