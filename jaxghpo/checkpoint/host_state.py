"""Host state (scheduler, data position, RNG key, ...) as a JSON skeleton plus numpy arrays, exactly.

encode_host_state splits plain data into a JSON-able skeleton (its structure, Python scalars and strings,
and the dtype and shape of every array) and {name: numpy array}; decode_host_state inverts it. So int64
ids stay int64 without jax's x64 mode, numpy scalars keep their dtype, tuples stay tuples, NaN stays NaN,
empty arrays survive (orbax cannot store them), and a typed PRNG key comes back as a key.
"""
from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

HOST_META_VERSION = 1

# Tags of the JSON encoding of host state (a dict key starting with "__" marks an encoded node).
_ARRAY, _SCALAR, _TUPLE, _FLOAT, _KEY = "__ndarray__", "__npscalar__", "__tuple__", "__float__", "__prng_key__"
_TAGS = (_ARRAY, _SCALAR, _TUPLE, _FLOAT, _KEY)


def _is_prng_key(x) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def encode_host_state(state: Any) -> tuple[dict, dict[str, np.ndarray]]:
  """Splits host state into (JSON-able skeleton, {name: numpy array}); see decode_host_state.

  Accepted: dicts with string keys, lists, tuples, None, bool, int, float, str, numpy arrays and
  scalars, jax arrays (fetched to host as numpy; their dtype as jax holds it) and typed PRNG keys.
  Arrays are copied, so the caller may change its own arrays while an async save is still writing.
  """
  arrays: dict[str, np.ndarray] = {}

  def put(arr: np.ndarray) -> str | None:
    if arr.size == 0:
      return None  # orbax cannot store an empty array; dtype and shape in the skeleton suffice
    name = f"a{len(arrays)}"
    arrays[name] = np.array(arr, copy=True)
    return name

  def enc(x, path: str):
    if x is None or isinstance(x, (bool, str)):
      return x
    if isinstance(x, int) and not isinstance(x, bool):
      return x
    if isinstance(x, float):
      return x if math.isfinite(x) else {_FLOAT: repr(x)}
    if isinstance(x, dict):
      out = {}
      for key, value in x.items():
        if not isinstance(key, str):
          raise TypeError(f"host_state{path}: dict key {key!r} is {type(key).__name__}; keys must be str "
                          "(JSON); convert them with str() before saving")
        if key.startswith("__") and key in _TAGS:
          raise ValueError(f"host_state{path}: key {key!r} is reserved by the checkpoint encoding; rename it")
        out[key] = enc(value, f"{path}[{key!r}]")
      return out
    if isinstance(x, list):
      return [enc(v, f"{path}[{i}]") for i, v in enumerate(x)]
    if isinstance(x, tuple):
      return {_TUPLE: [enc(v, f"{path}[{i}]") for i, v in enumerate(x)]}
    if _is_prng_key(x):
      data = np.asarray(jax.random.key_data(x))
      return {_KEY: put(data), "impl": str(jax.random.key_impl(x)), "shape": list(x.shape),
              "dtype": str(data.dtype), "data_shape": list(data.shape)}
    if isinstance(x, np.str_):
      return str(x)
    if isinstance(x, np.generic):
      if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise TypeError(f"host_state{path}: numpy scalar of dtype {x.dtype} cannot be saved")
      value = x.item()
      if isinstance(value, float) and not math.isfinite(value):
        value = repr(value)
      return {_SCALAR: value, "dtype": x.dtype.str}
    if isinstance(x, (np.ndarray, jax.Array)):
      arr = np.asarray(x)
      if arr.dtype == object:
        raise TypeError(f"host_state{path}: object arrays cannot be saved; use a list or a typed array")
      return {_ARRAY: put(arr), "dtype": arr.dtype.str, "shape": list(arr.shape)}
    raise TypeError(f"host_state{path}: {type(x).__name__} cannot be saved; use dicts, lists, tuples, "
                    "Python scalars, strings and numpy arrays")

  return {"version": HOST_META_VERSION, "tree": enc(state, "")}, arrays


def decode_host_state(meta: dict, arrays: dict[str, Any]) -> Any:
  """Inverse of encode_host_state."""
  if int(meta.get("version", -1)) != HOST_META_VERSION:
    raise ValueError(f"checkpoint host state version {meta.get('version')} is not {HOST_META_VERSION}; "
                     "it was written by another jaxghpo version")

  def array(name, dtype, shape):
    if name is None:
      return np.zeros(shape, dtype)
    return np.asarray(arrays[name]).astype(dtype, copy=False).reshape(shape)

  def dec(x):
    if isinstance(x, list):
      return [dec(v) for v in x]
    if not isinstance(x, dict):
      return x
    if _FLOAT in x:
      return float(x[_FLOAT])
    if _TUPLE in x:
      return tuple(dec(v) for v in x[_TUPLE])
    if _SCALAR in x:
      value = x[_SCALAR]
      return np.dtype(x["dtype"]).type(float(value) if isinstance(value, str) else value)
    if _ARRAY in x:
      return array(x[_ARRAY], np.dtype(x["dtype"]), tuple(x["shape"]))
    if _KEY in x:
      data = array(x[_KEY], np.dtype(x["dtype"]), tuple(x["data_shape"]))
      return jax.random.wrap_key_data(data, impl=x["impl"])
    return {k: dec(v) for k, v in x.items()}

  return dec(meta["tree"])
