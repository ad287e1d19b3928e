"""An in-memory stand-in for gs:// (no network): fsspec's memory filesystem registered for the gs/gcs
protocols, which is where etils.epath sends gs:// paths when TensorFlow is not installed.

Like an object store it has no appends and no renames (both raise), so code that passes here writes
whole objects. What it does not model: latency, eventual listing, credentials, and orbax's own gs://
path (tensorstore's GCS driver, which does not go through fsspec).
"""
from __future__ import annotations

import contextlib

import fsspec
from etils.epath import backend as epath_backend
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import _registry


class ObjectStoreError(OSError):
  pass


def make_filesystem():
  class FakeGCS(MemoryFileSystem):
    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs = [""]

    def _open(self, path, mode="rb", **kwargs):
      if "a" in mode or "+" in mode:
        raise ObjectStoreError(f"{path}: an object store cannot open in mode {mode!r}")
      return super()._open(path, mode=mode, **kwargs)

    def mv(self, *args, **kwargs):
      raise ObjectStoreError("an object store has no rename")

    rename = mv

  return FakeGCS


@contextlib.contextmanager
def fake_gcs():
  """Within the block gs:// paths live in a fresh in-memory store; yields the filesystem class (.store:
  path -> MemoryFile)."""
  fs_cls = make_filesystem()
  before = {name: _registry.get(name) for name in ("gs", "gcs")}
  for name in ("gs", "gcs"):
    fsspec.register_implementation(name, fs_cls, clobber=True)
  epath_backend.fsspec_backend._get_filesystem.cache_clear()  # epath caches the filesystem per protocol
  try:
    yield fs_cls
  finally:
    for name, cls in before.items():
      if cls is None:
        _registry.pop(name, None)  # back to fsspec's known_implementations (gcsfs, when installed)
      else:
        _registry[name] = cls
    epath_backend.fsspec_backend._get_filesystem.cache_clear()


def read_bytes(fs_cls, path: str) -> bytes:
  return bytes(fs_cls.store[path].getvalue())
