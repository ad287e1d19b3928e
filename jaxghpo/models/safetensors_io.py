"""Minimal safetensors reader/writer on numpy memory maps (bfloat16 included, via ml_dtypes).

Reading maps the file and returns views, so a tensor is only read when a device shard asks for it.
"""
from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
FLOAT_CODES = ("F64", "F32", "F16", "BF16")


class SafetensorsError(ValueError):
  pass


def read_header(path: str) -> tuple[dict, int]:
  """Returns ({tensor name: {dtype, shape, data_offsets}}, byte offset of the data section)."""
  size = os.path.getsize(path)
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) < 8:
      raise SafetensorsError(f"{path}: file is truncated ({size} bytes): not a safetensors file")
    (n,) = struct.unpack("<Q", raw)
    if n > size - 8 or n > 100_000_000:
      raise SafetensorsError(f"{path}: header length {n} exceeds the file size {size}: the file is corrupt")
    try:
      header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
      raise SafetensorsError(f"{path}: header is not valid JSON ({e}): the file is corrupt") from e
  header.pop("__metadata__", None)
  data_len = size - 8 - n
  for name, info in header.items():
    if info.get("dtype") not in _DTYPES:
      raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
    begin, end = info["data_offsets"]
    want = int(np.prod(info["shape"], dtype=np.int64)) * _DTYPES[info["dtype"]].itemsize
    if end - begin != want or end > data_len:
      raise SafetensorsError(
          f"{path}: tensor {name!r} (shape {info['shape']}, {info['dtype']}) needs {want} bytes at "
          f"[{begin}, {end}) but the data section has {data_len}: the file is truncated or corrupt")
  return header, 8 + n


class SafetensorsFile:
  """Lazy access to the tensors of one file."""

  def __init__(self, path: str):
    self.path = path
    self.header, self._offset = read_header(path)
    self._mmap = None

  def keys(self):
    return self.header.keys()

  def dtype_code(self, name: str) -> str:
    return self.header[name]["dtype"]

  def get(self, name: str) -> np.ndarray:
    if self._mmap is None:
      self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
    info = self.header[name]
    begin, end = info["data_offsets"]
    raw = self._mmap[self._offset + begin:self._offset + end]
    return raw.view(_DTYPES[info["dtype"]]).reshape(info["shape"])


def save_file(tensors: dict[str, np.ndarray], path: str, metadata: dict[str, str] | None = None) -> None:
  """Writes numpy arrays (any dtype in _DTYPES, bfloat16 included) as one safetensors file."""
  header, offset, arrays = {}, 0, []
  for name in sorted(tensors):
    arr = np.ascontiguousarray(tensors[name])
    if arr.dtype not in _NAMES:
      raise SafetensorsError(f"tensor {name!r}: dtype {arr.dtype} cannot be written to safetensors")
    header[name] = {"dtype": _NAMES[arr.dtype], "shape": list(arr.shape),
                    "data_offsets": [offset, offset + arr.nbytes]}
    offset += arr.nbytes
    arrays.append(arr)
  if metadata:
    header["__metadata__"] = metadata
  blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
  blob += b" " * (-len(blob) % 8)  # the format aligns the data section to 8 bytes
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for arr in arrays:
      f.write(arr.tobytes())
  os.replace(tmp, path)
