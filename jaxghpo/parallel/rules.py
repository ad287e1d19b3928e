"""Logical axis names -> mesh axes: the single rules table for parameters and batches.

Every parameter of a model carries logical axis names (``out_sharding`` metadata on its ``nnx.Param``),
for example ``("embed", "mlp")``. ``DEFAULT_RULES`` maps each name to a mesh axis (or None: replicated).
A mapping is dropped for a dimension that the mesh axis does not divide (a 2-head KV projection on a
4-way tensor axis stays replicated on that axis) so every model loads on every mesh.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import jax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

# Parameters: FSDP shards the model dimension, tensor parallelism the heads / MLP / vocabulary.
DEFAULT_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "head_dim": None,
    "norm": None,
    "layers": None,
    "length": None,
}


def _axis_size(mesh: jax.sharding.Mesh, axes) -> int:
  if axes is None:
    return 1
  axes = (axes,) if isinstance(axes, str) else axes
  size = 1
  for a in axes:
    size *= mesh.shape[a]
  return size


def logical_to_spec(names: Sequence[str | None], rules: Mapping = DEFAULT_RULES) -> P:
  """Maps logical axis names to a PartitionSpec (no divisibility check)."""
  out = []
  for name in names:
    if name is None:
      out.append(None)
    elif name not in rules:
      raise KeyError(f"logical axis {name!r} has no entry in the sharding rules; add it to "
                     "jaxghpo.parallel.rules.DEFAULT_RULES or pass rules=")
    else:
      out.append(rules[name])
  return P(*out)


def spec_for_shape(shape: Sequence[int], names: Sequence[str | None] | None, mesh: jax.sharding.Mesh,
                   rules: Mapping = DEFAULT_RULES) -> P:
  """PartitionSpec for an array of ``shape``: each dim mapped by the rules when the mesh axis divides it."""
  if not names:
    return P()
  if len(names) != len(shape):
    raise ValueError(f"logical names {tuple(names)} do not match array shape {tuple(shape)}")
  spec = logical_to_spec(names, rules)
  used: set[str] = set()
  out = []
  for dim, axes in zip(shape, spec):
    flat = () if axes is None else ((axes,) if isinstance(axes, str) else tuple(axes))
    flat = tuple(a for a in flat if a not in used and mesh.shape.get(a, 1) > 1)
    if flat and dim % _axis_size(mesh, flat) == 0:
      used.update(flat)
      out.append(flat[0] if len(flat) == 1 else flat)
    else:
      out.append(None)
  return P(*out)


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int = 2, rules: Mapping = DEFAULT_RULES) -> NamedSharding:
  """Leading (batch) axis over data x fsdp, the rest replicated."""
  return NamedSharding(mesh, P(rules["batch"], *([None] * (ndim - 1))))


def _names_of(variable) -> tuple | None:
  meta = variable.get_metadata() if hasattr(variable, "get_metadata") else {}
  names = meta.get("out_sharding") or meta.get("sharding_names") or meta.get("sharding")
  return tuple(names) if names else None


def param_shardings(state: nnx.State, mesh: jax.sharding.Mesh, rules: Mapping = DEFAULT_RULES):
  """A pytree of NamedSharding matching ``state`` (an nnx.State of Variables, concrete or abstract)."""
  def one(variable):
    value = variable.get_value() if hasattr(variable, "get_value") else variable.value
    return NamedSharding(mesh, spec_for_shape(value.shape, _names_of(variable), mesh, rules))
  return jax.tree.map(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def shard_model(model: nnx.Module, mesh: jax.sharding.Mesh, rules: Mapping = DEFAULT_RULES) -> nnx.Module:
  """Places every variable of ``model`` on ``mesh`` by its logical axes (in place; returns the model)."""
  state = nnx.state(model)
  shardings = param_shardings(state, mesh, rules)
  placed = jax.tree.map(lambda v, s: jax.device_put(v, s), nnx.to_pure_dict(state), nnx.to_pure_dict(shardings))
  nnx.replace_by_pure_dict(state, placed)
  nnx.update(model, state)
  return model
