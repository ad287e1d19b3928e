"""Mesh, logical-axis sharding rules and multi-host set-up: the one place that says where arrays live."""
from jaxghpo.parallel.mesh import MESH_AXES, make_mesh, validate_mesh_shape
from jaxghpo.parallel.rules import (
    DEFAULT_RULES,
    batch_sharding,
    logical_to_spec,
    param_shardings,
    replicated,
    shard_model,
    spec_for_shape,
)
