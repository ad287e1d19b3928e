"""safetensors files through the `safetensors` package, with errors that name the file.

Reading: `safe_open(path, framework="numpy")` validates the whole header in its Rust parser when the
file is opened (known dtypes, integer shapes and offsets, each tensor's byte length = prod(shape) x
itemsize, tensors contiguous and covering the data section exactly, so none overlap and nothing is
truncated) and maps the file; `read(name, index)` copies only the slice a device shard asks for.
bfloat16 needs no code of ours: the package reads and writes numpy arrays of `ml_dtypes.bfloat16`.

What stays ours: the named `SafetensorsError` (a ValueError naming the file, with the package's reason
and the mend), the dtype codes a loader checks against (`FLOAT_CODES`), and the write to a temporary file
renamed into place, so a crash mid-write never leaves a half file under the final name.
"""
from __future__ import annotations

import os

import numpy as np
import safetensors
import safetensors.numpy

FLOAT_CODES = ("F64", "F32", "F16", "BF16")


class SafetensorsError(ValueError):
  pass


class SafetensorsFile:
  """Lazy access to the tensors of one file; the header is validated on construction."""

  def __init__(self, path: str):
    self.path = path
    try:
      self._file = safetensors.safe_open(path, framework="numpy")
    except (safetensors.SafetensorError, OSError) as e:
      raise SafetensorsError(f"{path}: not a valid safetensors file ({e}): the file is truncated or corrupt; "
                             "re-download or re-export it") from e
    self._slices = {name: self._file.get_slice(name) for name in self._file.keys()}

  def keys(self):
    return self._slices.keys()

  def dtype_code(self, name: str) -> str:
    """The format's dtype code of a tensor ("F32", "BF16", "I64", ...)."""
    return self._slices[name].get_dtype()

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._slices[name].get_shape())

  def read(self, name: str, index: tuple = ()) -> np.ndarray:
    """tensor[index] as a numpy array, reading only those bytes (index: a tuple of slices, as
    jax.make_array_from_callback passes; () reads the whole tensor)."""
    sl = self._slices[name]
    return sl[index] if index else sl[:]

  def get(self, name: str) -> np.ndarray:
    """The whole tensor as a numpy array."""
    return self.read(name)


def save_file(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str] | None = None) -> None:
  """Writes numpy arrays (bfloat16 included) as one safetensors file, atomically (temp file, then rename)."""
  tmp = path + ".tmp"
  try:
    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, tmp, metadata=metadata)
  except (safetensors.SafetensorError, ValueError, TypeError, KeyError) as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    dtypes = sorted({str(np.asarray(v).dtype) for v in tensors.values()})
    raise SafetensorsError(f"{path}: cannot write these tensors as safetensors ({type(e).__name__}: {e}); "
                           f"dtypes given: {dtypes}") from e
  os.replace(tmp, path)
