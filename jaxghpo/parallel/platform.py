"""Which platform a program is being built for: the devices of its mesh, never the process's default backend.

A TPU program can be compiled on a CPU host (ahead of time, for a TPU slice's devices from
``jax.experimental.topologies``; see jaxghpo/aot). There ``jax.default_backend()`` is "cpu" while the
program being traced will run on TPU, so every platform decision taken while tracing (the splash kernel
compiled by Mosaic or run by the Pallas interpreter, the remat ordering's barrier or data dependency,
cuDNN attention) asks :func:`current`, which answers in this order:

1. the platform set with :func:`targeting` (the sampler, the train step and the logprob program set it
   from their mesh while they trace; jax offers no concrete mesh inside a trace to ask instead);
2. ``jax.default_backend()`` (a program with no mesh runs where the process runs).
"""
from __future__ import annotations

import contextlib
import contextvars

import jax

_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar("jaxghpo_target_platform", default=None)


def of_mesh(mesh) -> str:
  """The platform ("cpu", "gpu", "tpu") of a concrete mesh's devices."""
  return mesh.devices.flat[0].platform


@contextlib.contextmanager
def targeting(mesh_or_platform):
  """Traces inside this context are built for the mesh's platform (or the given platform name; None: no-op)."""
  if mesh_or_platform is None:
    yield
    return
  platform = mesh_or_platform if isinstance(mesh_or_platform, str) else of_mesh(mesh_or_platform)
  token = _TARGET.set(platform)
  try:
    yield
  finally:
    _TARGET.reset(token)


def current() -> str:
  """The platform the program being traced is for (see the module docstring)."""
  target = _TARGET.get()
  if target is not None:
    return target
  return jax.default_backend()
