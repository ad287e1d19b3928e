"""The device mesh: one mesh with axes ("data", "fsdp", "tensor") for training and sampling."""
from __future__ import annotations

import math
from typing import Sequence

import jax
import numpy as np

MESH_AXES = ("data", "fsdp", "tensor")


def validate_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, int, int]:
  """Resolves one -1 entry and checks that data*fsdp*tensor equals the device count."""
  shape = list(shape)
  if len(shape) != 3:
    raise ValueError(f"config.mesh.shape must have 3 entries (data, fsdp, tensor); got {shape}")
  if shape.count(-1) > 1:
    raise ValueError(f"config.mesh.shape may hold at most one -1; got {shape}")
  if -1 in shape:
    known = math.prod(s for s in shape if s != -1)
    if num_devices % known:
      raise ValueError(
          f"config.mesh.shape={shape} cannot fill {num_devices} devices: {num_devices} is not divisible by {known}")
    shape[shape.index(-1)] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ValueError(
        f"config.mesh.shape={shape} (data*fsdp*tensor={math.prod(shape)}) does not match the {num_devices} "
        "available devices; use -1 for one axis to fill the rest")
  return tuple(shape)


def make_mesh(shape: Sequence[int] = (1, -1, 1), devices=None) -> jax.sharding.Mesh:
  """A mesh over all (or the given) devices with axes data/fsdp/tensor and Auto axis types.

  shape: (data, fsdp, tensor); one entry may be -1 to take the remaining devices.
  """
  devices = jax.devices() if devices is None else list(devices)
  shape = validate_mesh_shape(shape, len(devices))
  if devices == jax.devices() or devices[0].platform == "tpu":  # jax lays a TPU slice's chips out along its ICI
    return jax.make_mesh(shape, MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3, devices=devices)
  return jax.sharding.Mesh(np.asarray(devices).reshape(shape), MESH_AXES,
                           axis_types=(jax.sharding.AxisType.Auto,) * 3)
