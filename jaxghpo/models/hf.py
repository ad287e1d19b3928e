"""Hugging Face checkpoints <-> jaxghpo models: config.json plus one or many safetensors files.

Loading builds the model abstractly (no random weights), then places each tensor straight into the
sharding its logical axes ask for on the current mesh: each device reads only its slice from a memory map.
"""
from __future__ import annotations

import glob
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxghpo import faults, parallel, paths
from jaxghpo.models.config import ModelConfig
from jaxghpo.models.safetensors_io import FLOAT_CODES, SafetensorsError, SafetensorsFile, save_file
from jaxghpo.models.transformer import Transformer, abstract_model

# Buffers some exporters write that are not parameters.
_IGNORED = re.compile(r".*rotary_emb\.inv_freq$")


ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")


def resolve_model_path(path: str) -> str:
  """"builtin:NAME" -> the directory of a model shipped in jaxghpo/assets/; anything else unchanged."""
  if path.startswith("builtin:"):
    name = path.split(":", 1)[1]
    out = os.path.join(ASSETS, name)
    if not os.path.isdir(out):
      raise FileNotFoundError(f"config.model.path={path!r}: no shipped model {name!r} in {ASSETS}; "
                              "make it with tools/make_base_policy.py")
    return out
  return path


def hf_name(path: tuple) -> tuple[str, bool]:
  """Our state path -> (HF tensor name, whether the HF tensor is the transpose of ours)."""
  parts = [str(p) for p in path]
  if parts == ["embed_tokens"]:
    return "model.embed_tokens.weight", False
  if parts == ["lm_head"]:
    return "lm_head.weight", True
  if parts == ["norm", "scale"]:
    return "model.norm.weight", False
  if parts[0] == "layers":
    *module, leaf = parts[1:]
    name = "model.layers." + ".".join(module)
    if leaf == "kernel":
      return name + ".weight", True
    if leaf == "bias":
      return name + ".bias", False
    if leaf == "scale":
      return name + ".weight", False
  raise KeyError(f"no Hugging Face name for parameter {'.'.join(parts)}")


def _np_dtype(dtype) -> np.dtype:
  return np.dtype(jnp.dtype(dtype))


def load_config(path: str, *, dtype=None, param_dtype=None, attention: str = "xla",
                remat: str = "none") -> ModelConfig:
  if not str(path).strip():
    raise ValueError("the model path is empty: give a Hugging Face model directory (config.json + *.safetensors)")
  cfg_path = os.path.join(path, "config.json")
  if not os.path.isfile(cfg_path):
    raise FileNotFoundError(f"{cfg_path} not found: from_pretrained needs a Hugging Face model directory")
  with open(cfg_path) as f:
    hf = json.load(f)
  name = lambda d: None if d is None else (d if isinstance(d, str) else jnp.dtype(d).name)
  return ModelConfig.from_hf_dict(hf, dtype=name(dtype), param_dtype=name(param_dtype or dtype), source=cfg_path,
                                  attention=attention, remat=remat)


def _weight_files(path: str) -> list[str]:
  index = os.path.join(path, "model.safetensors.index.json")
  if os.path.isfile(index):
    with open(index) as f:
      weight_map = json.load(f).get("weight_map", {})
    files = sorted(set(weight_map.values()))
    for name in files:
      if not _inside_dir(name):
        raise SafetensorsError(f"{index} names the shard {name!r}, which is not a file name inside the model "
                               "directory (absolute paths and '..' are refused); fix the index")
    missing = [p for p in files if not os.path.isfile(os.path.join(path, p))]
    if missing:
      raise FileNotFoundError(f"{index} names shard(s) {missing} that are not in {path}")
    return [os.path.join(path, p) for p in files]
  files = sorted(glob.glob(os.path.join(path, "*.safetensors")))
  if not files:
    raise FileNotFoundError(f"no *.safetensors file (or model.safetensors.index.json) in {path}")
  return files


def _inside_dir(name) -> bool:
  """A shard name from an index is a relative path that stays in its directory (no '..', not absolute)."""
  if not isinstance(name, str) or not name or os.path.isabs(name) or "\\" in name or "\0" in name:
    return False
  parts = name.split("/")
  return all(p not in ("", ".", "..") for p in parts)


def _current_mesh(mesh):
  if mesh is not None:
    return mesh
  ambient = jax.sharding.get_mesh()
  return None if ambient.empty else ambient


def _read_slice(f: SafetensorsFile, name: str, transpose: bool, index: tuple) -> np.ndarray:
  """parameter[index] from the file, where the parameter is the tensor (transposed when `transpose`)."""
  index = tuple(index)
  if not transpose:
    return f.read(name, index)
  return f.read(name, index[::-1]).T


def from_pretrained(path: str, dtype=jnp.float32, *, param_dtype=None, mesh=None, rules=None,
                    attention: str = "xla", remat: str = "none"):
  """Loads a Hugging Face decoder directory. Returns (model, cfg).

  dtype: compute dtype; param_dtype: storage dtype (default = dtype). Weights are cast on the host slice
  by slice. mesh: where to place the parameters (default: the mesh set with ``jax.set_mesh``, else one device).
  attention, remat: ModelConfig's run-time choices (config.model.attention / config.model.remat).
  """
  cfg = load_config(path, dtype=dtype, param_dtype=param_dtype, attention=attention, remat=remat)
  files = [SafetensorsFile(f) for f in _weight_files(path)]
  where: dict[str, SafetensorsFile] = {}
  for f in files:
    for key in f.keys():
      if key in where:
        raise SafetensorsError(f"tensor {key!r} appears in both {where[key].path} and {f.path}")
      where[key] = f

  model = abstract_model(cfg)
  graphdef, state = nnx.split(model)
  mesh = _current_mesh(mesh)
  shardings = parallel.param_shardings(state, mesh, rules or parallel.DEFAULT_RULES) if mesh is not None else None
  flat = nnx.to_flat_state(state)
  flat_sh = dict(nnx.to_flat_state(shardings)) if shardings is not None else {}
  target = _np_dtype(cfg.storage_dtype)
  used = set()
  values = {}
  for path_key, variable in flat:
    name, transpose = hf_name(path_key)
    if name not in where:
      raise SafetensorsError(
          f"tensor {name!r} (for parameter {'.'.join(map(str, path_key))}) is missing from "
          f"{[f.path for f in files]}: the checkpoint is incomplete or not a {cfg.model_type} model")
    f = where[name]
    used.add(name)
    if f.dtype_code(name) not in FLOAT_CODES:
      raise SafetensorsError(f"{f.path}: tensor {name!r} has dtype {f.dtype_code(name)}, expected a float "
                             "type: the file does not hold model weights")
    shape = tuple(variable.get_value().shape)
    file_shape = f.shape(name)
    if (file_shape[::-1] if transpose else file_shape) != shape:
      raise SafetensorsError(f"{f.path}: tensor {name!r} has shape {file_shape}, "
                             f"expected {shape[::-1] if transpose else shape} from config.json")
    sharding = flat_sh.get(path_key)
    sharding = sharding.get_value() if isinstance(sharding, nnx.Variable) else sharding
    if sharding is None:
      values[path_key] = jnp.asarray(_read_slice(f, name, transpose, ()).astype(target, copy=False))
    else:  # each device reads only its shard's bytes
      values[path_key] = jax.make_array_from_callback(
          shape, sharding, lambda idx, f=f, n=name, t=transpose: _read_slice(f, n, t, idx).astype(target, copy=False))
  extra = [k for k in where if k not in used and not _IGNORED.match(k)
           and not (k == "lm_head.weight" and cfg.tie_word_embeddings)]
  if extra:
    raise SafetensorsError(
        f"tensors {extra[:5]}{' ...' if len(extra) > 5 else ''} in {sorted({where[k].path for k in extra})} "
        f"have no place in a {cfg.model_type} model with this config.json (wrong architecture or config?)")
  faults.check_finite({hf_name(k)[0]: v for k, v in values.items()}, f"{path}: imported weights",
                      "the files are corrupt or were exported from a diverged run; re-download or re-export them")
  for path_key, variable in flat:
    variable.set_value(values[path_key])
  return nnx.merge(graphdef, nnx.from_flat_state(flat)), cfg


def save_pretrained(model: Transformer, cfg: ModelConfig, out_dir: str, *, dtype=None,
                    max_shard_bytes: int = 2 ** 31, tokenizer=None) -> None:
  """Writes config.json and model.safetensors (sharded with an index beyond ``max_shard_bytes``), and the
  tokenizer's files when one is given.

  The result loads with ``transformers.AutoModelForCausalLM.from_pretrained(out_dir)``.
  out_dir: a local directory or a URI (gs://...): remote files are written locally first, then copied
  (paths.local_dir), so the local disk must hold one export.
  dtype: storage dtype of the files (default: the model's parameter dtype).
  """
  with paths.local_dir(out_dir) as local:
    _save_local(model, cfg, local, dtype=dtype, max_shard_bytes=max_shard_bytes)
    if tokenizer is not None:
      tokenizer.save_pretrained(local)


def _save_local(model: Transformer, cfg: ModelConfig, out_dir: str, *, dtype, max_shard_bytes: int) -> None:
  out_np = _np_dtype(dtype or cfg.storage_dtype)
  tensors = {}
  for path_key, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    name, transpose = hf_name(path_key)
    array = np.asarray(jax.device_get(variable.get_value())).astype(out_np)
    tensors[name] = np.ascontiguousarray(array.T if transpose else array)
  hf = cfg.to_hf_dict()
  hf["torch_dtype"] = jnp.dtype(out_np).name
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(hf, f, indent=2)
  shards, current, size = [], {}, 0
  for name in sorted(tensors):
    if current and size + tensors[name].nbytes > max_shard_bytes:
      shards.append(current)
      current, size = {}, 0
    current[name] = tensors[name]
    size += tensors[name].nbytes
  shards.append(current)
  meta = {"format": "pt"}
  if len(shards) == 1:
    save_file(shards[0], os.path.join(out_dir, "model.safetensors"), meta)
    return
  weight_map = {}
  for i, shard in enumerate(shards):
    fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    save_file(shard, os.path.join(out_dir, fname), meta)
    weight_map.update({k: fname for k in shard})
  with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": sum(t.nbytes for t in tensors.values())}, "weight_map": weight_map}, f,
              indent=2)
