"""Minimal safetensors reader/writer on numpy memory maps (bfloat16 included, via ml_dtypes).

Reading maps the file and returns views, so a tensor is only read when a device shard asks for it.
"""
from __future__ import annotations

import json
import math
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
  """Returns ({tensor name: {dtype, shape, data_offsets}}, byte offset of the data section).

  The header is validated before any tensor is read: every entry has a known dtype, a shape of
  non-negative integers and integer offsets 0 <= begin <= end inside the data section, with
  end - begin == prod(shape) * itemsize, and no two tensors overlap. A SafetensorsError names the
  file and the tensor.
  """
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
  if not isinstance(header, dict):
    raise SafetensorsError(f"{path}: header is a JSON {type(header).__name__}, not an object: the file is corrupt")
  header.pop("__metadata__", None)
  data_len = size - 8 - n
  spans = []
  for name, info in header.items():
    _check_entry(path, name, info, data_len)
    begin, end = info["data_offsets"]
    if end > begin:
      spans.append((begin, end, name))
  spans.sort()
  for (_, end_a, name_a), (begin_b, _, name_b) in zip(spans, spans[1:]):
    if begin_b < end_a:
      raise SafetensorsError(f"{path}: tensors {name_a!r} and {name_b!r} overlap in the data section "
                             f"(one ends at {end_a}, the other begins at {begin_b}): the file is corrupt")
  return header, 8 + n


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _check_entry(path: str, name: str, info, data_len: int) -> None:
  """One header entry: dtype, shape and offsets consistent with each other and with the file."""
  if not isinstance(info, dict):
    raise SafetensorsError(f"{path}: header entry of tensor {name!r} is not an object: the file is corrupt")
  if info.get("dtype") not in _DTYPES:
    raise SafetensorsError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
  shape, offsets = info.get("shape"), info.get("data_offsets")
  if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
    raise SafetensorsError(f"{path}: tensor {name!r} has shape {shape!r}, not a list of integers >= 0: "
                           "the file is corrupt")
  if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(o) for o in offsets)
      or not 0 <= offsets[0] <= offsets[1]):
    raise SafetensorsError(f"{path}: tensor {name!r} has data_offsets {offsets!r}, not [begin, end] with "
                           "0 <= begin <= end: the file is corrupt")
  begin, end = offsets
  want = math.prod(shape) * _DTYPES[info["dtype"]].itemsize
  if end - begin != want or end > data_len:
    raise SafetensorsError(
        f"{path}: tensor {name!r} (shape {shape}, {info['dtype']}) needs {want} bytes at "
        f"[{begin}, {end}) but the data section has {data_len}: the file is truncated or corrupt")


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
