"""A Sampler call's host side: the inputs checked and turned into the jitted program's fixed-shape arguments.

Prompts are left-padded into the prompt bucket (inactive filler rows after the call's prompts); the
sampling controls become numpy values (traced inputs: changing them compiles nothing); with several
processes each brings its own ``batch_size / process_count`` prompts, and the rows of all processes are
allgathered in process order (parallel.hosts). Functions of the Sampler ``s`` (its sizes and layout).
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxghpo.parallel import hosts
from jaxghpo.rollout import penalties


def pad_prompts(prompts: Sequence[Sequence[int]], batch_size: int, max_prompt_len: int, pad_id: int):
  """Left-pads ragged prompts into ids int32 [B, Lp], valid bool [B, Lp] and active bool [B]."""
  if len(prompts) > batch_size:
    raise ValueError(f"got {len(prompts)} prompts but this Sampler was built for batch_size={batch_size}; "
                     "build a Sampler with a larger batch_size or split the call")
  ids = np.full((batch_size, max_prompt_len), pad_id, np.int32)
  valid = np.zeros((batch_size, max_prompt_len), bool)
  active = np.zeros((batch_size,), bool)
  for i, prompt in enumerate(prompts):
    n = len(prompt)
    if n == 0:
      raise ValueError(f"prompt {i} is empty; every prompt needs at least one token (a BOS token will do)")
    if n > max_prompt_len:
      raise ValueError(f"prompt {i} has {n} tokens, more than max_prompt_len={max_prompt_len}; "
                       "raise max_prompt_len (the prompt bucket) or shorten the prompt")
    ids[i, max_prompt_len - n:] = np.asarray(prompt, np.int32)
    valid[i, max_prompt_len - n:] = True
    active[i] = True
  # Inactive filler rows get one valid token so that their attention rows are not empty.
  valid[~active, -1] = True
  return ids, valid, active


def eos_mask(eos_id, vocab_size: int) -> np.ndarray:
  """bool [V]: True at the end-of-sequence ids (None: no EOS; an int or a list of ints)."""
  mask = np.zeros((vocab_size,), bool)
  if eos_id is None:
    return mask
  ids = np.asarray(eos_id, np.int64).reshape(-1)
  if ((ids < 0) | (ids >= vocab_size)).any():
    raise ValueError(f"eos_id={eos_id} is outside the vocabulary [0, {vocab_size})")
  mask[ids] = True
  return mask


def gathered_prompts(s, prompts, pad_id: int):
  """(global, local): left-padded ids/valid/active for the whole batch, and this process's rows.

  With several processes each brings its own ``batch_size / process_count`` prompts (rows in process
  order, as parallel.hosts lays out batches)."""
  n = hosts.process_count()
  if n == 1:
    local = pad_prompts(prompts, s.batch_size, s.max_prompt_len, pad_id)
    return local, local
  if s.mesh is None or s.batch_size % n:
    raise ValueError(f"with {n} processes the Sampler needs mesh= and a batch_size ({s.batch_size}) "
                     f"divisible by the process count; each process passes its batch_size / {n} prompts")
  local = pad_prompts(prompts, s.batch_size // n, s.max_prompt_len, pad_id)
  rows = hosts.allgather_rows(dict(zip(("ids", "valid", "active"), local)))
  return (rows["ids"], rows["valid"], rows["active"]), local


def gathered_stop_thresholds(s, stop_threshold, num_prompts: int) -> np.ndarray:
  """float32 [B] (global): each prompt's DeepConf stop threshold; -inf (never stops) when off."""
  n = hosts.process_count()
  local = np.full((s.batch_size // n,), -np.inf, np.float32)
  if stop_threshold is not None:
    if not s.return_confidence:
      raise ValueError("stop_threshold (DeepConf online stopping) needs a Sampler built with return_confidence=True")
    values = np.broadcast_to(np.asarray(stop_threshold, np.float32), (num_prompts,))
    local[:num_prompts] = values
  return local if n == 1 else hosts.allgather(local)


def gathered_row_keys(s, row_keys, num_prompts: int, key_data: np.ndarray) -> np.ndarray:
  """uint32 [B, ...] (global): each prompt's raw key data; zeros for inactive rows."""
  n = hosts.process_count()
  row_keys = np.asarray(row_keys)
  if row_keys.shape != (num_prompts,) + key_data.shape or row_keys.dtype != key_data.dtype:
    raise ValueError(f"row_keys has shape {row_keys.shape} and dtype {row_keys.dtype}; expected one raw key "
                     f"per prompt, {(num_prompts,) + key_data.shape} {key_data.dtype} (jax.random.key_data of "
                     "keys of rng's implementation)")
  local = np.zeros((s.batch_size // n,) + key_data.shape, key_data.dtype)
  local[:num_prompts] = row_keys
  return local if n == 1 else hosts.allgather(local)


def call_arguments(s, params, prompts, *, rng, temperature=0.0, top_p=1.0, top_k=0, eos_id=None, pad_id=0,
                   penalty=None, stop_threshold=None, stop_window=1, row_keys=None):
  """(args, this process's padded prompts): the inputs checked and turned into the jitted function's
  fixed-shape (sharded) arguments, the cache left out (the Sampler adds it)."""
  if isinstance(params, nnx.Module):
    params = nnx.split(params)[1]
  if not 0.0 < float(top_p) <= 1.0:
    raise ValueError(f"top_p={top_p} must be in (0, 1]")
  if float(temperature) < 0 or int(top_k) < 0:
    raise ValueError(f"temperature={temperature} and top_k={top_k} must be >= 0")
  if isinstance(rng, int):
    rng = jax.random.key(rng)
  V = s.cfg.vocab_size
  (ids, valid, active), local = gathered_prompts(s, prompts, int(pad_id))
  if int(stop_window) < 1:
    raise ValueError(f"stop_window={stop_window} must be >= 1 tokens")
  controls = sampling_controls(s, V, len(prompts), temperature, top_p, top_k, eos_id, pad_id, penalty,
                               stop_threshold, stop_window)
  # The key travels as raw data (its implementation is part of the traced program) and the controls as
  # numpy values, so that neither is tied to one device (several processes share one mesh).
  key_impl = str(jax.random.key_impl(rng)) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else None
  key_data = np.asarray(jax.random.key_data(rng) if key_impl else rng)
  if row_keys is not None:
    controls["row_key_data_B"] = gathered_row_keys(s, row_keys, len(prompts), key_data)
  args = (params, s.layout.put(ids, ("batch", None)), s.layout.put(valid, ("batch", None)),
          s.layout.put(active, ("batch",)), key_data, key_impl, controls)
  return args, local


def sampling_controls(s, V, num_prompts, temperature, top_p, top_k, eos_id, pad_id, penalty, stop_threshold,
                      stop_window) -> dict:
  """The sampling controls as numpy values (traced inputs of the program: changing them compiles nothing)."""
  return {"temperature": np.float32(temperature), "top_p": np.float32(top_p), "top_k": np.int32(top_k),
          "is_eos_V": eos_mask(eos_id, V), "pad_id": np.int32(pad_id),
          "stop_threshold_B": gathered_stop_thresholds(s, stop_threshold, num_prompts),
          "stop_window": np.int32(stop_window),
          **(penalty or penalties.ThoughtSwitchPenalty()).arrays(V)}
