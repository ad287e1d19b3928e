"""The sampler's jitted program: one prefill pass over the prompts, then the KV-cache decode ``while_loop``.

Functions of the Sampler ``s`` (its model graph, sizes, controls' meaning and layout); the Sampler jits
``program``, and sampler_aot.py lowers ``prefill`` and one ``decode_step`` alone. The layout of rows, cache
slots and positions, and what each output holds: sampler.py's module docstring.
"""
from __future__ import annotations

import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jaxghpo import models
from jaxghpo.rollout import filters, penalties


@struct.dataclass
class SampleOutput:
  """Result of one sampling call; arrays stay on device (R = prompts x samples per prompt)."""
  tokens: jax.Array      # int32 [R, N]
  logprobs: jax.Array    # float32 [R, N]
  lengths: jax.Array     # int32 [R]
  confidence: jax.Array | None = None  # float32 [R, N] when asked for
  decode_steps: jax.Array | None = None  # int32 []: tokens chosen per row (< N when all rows ended early)
  prompt_ids: np.ndarray | None = None    # int32 [B_local, Lp] host copy: this process's left-padded prompts
  prompt_valid: np.ndarray | None = None  # bool [B_local, Lp]
  stopped: jax.Array | None = None  # bool [R]: ended by DeepConf online stopping (with confidence)


@struct.dataclass
class RowState:
  """Per-row decode state carried through the loop (R rows, N new tokens)."""
  tokens: jax.Array        # int32 [R, N]
  logprobs: jax.Array      # float32 [R, N]
  confidence: jax.Array | None  # float32 [R, N]
  lengths: jax.Array       # int32 [R]: tokens written so far
  done: jax.Array          # bool [R]: produced EOS (or inactive filler row, or stopped)
  stopped: jax.Array       # bool [R]: ended by DeepConf online stopping
  since_switch: jax.Array  # int32 [R]: tokens since the last thought-switch token (TIP)


def program(s, params, prompt_ids_BxLp, prompt_valid_BxLp, active_B, key_data, key_impl, controls, cache):
  """The whole sampling call (jitted by the Sampler): (SampleOutput, the cache when donated else None)."""
  G, N = s.num_samples, s.max_new_tokens
  rng = jax.random.wrap_key_data(key_data, impl=key_impl) if key_impl else key_data
  model = nnx.merge(s.graphdef, params)
  logits_BxV, small = prefill(s, model, prompt_ids_BxLp, prompt_valid_BxLp)

  def rows(x):  # [B, ...] -> [R, ...], prompt-major
    return jnp.repeat(x, G, axis=0) if G > 1 else x

  def grow(field, part, full=None):  # the prompt cache into the first Lp slots of the decode cache
    part = rows(part)
    if full is None:
      widths = [(0, 0)] * part.ndim
      widths[s.layout.slot_axis[field]] = (0, N)
      full = jnp.pad(part, widths)
    else:
      full = jax.lax.dynamic_update_slice(full, part, (0,) * part.ndim)
    return s.layout.constrain(full, s.layout.cache_names[field])

  cache = s.layout.map_cache(grow, small) if cache is None else s.layout.map_cache(grow, small, cache)
  logits_RxV = s.layout.constrain(rows(logits_BxV), ("batch", "vocab"))
  prompt_len_R = rows(jnp.sum(prompt_valid_BxLp, axis=1, dtype=jnp.int32))
  prompt_valid_RxLp = rows(prompt_valid_BxLp)
  row_controls = dict(controls, stop_threshold_B=rows(controls["stop_threshold_B"]))
  row_key_data = row_controls.pop("row_key_data_B", None)
  if row_key_data is not None:  # per-row keys (common random numbers): sample g of prompt b: fold_in(key_b, g)
    prompt_keys_B = jax.random.wrap_key_data(row_key_data, impl=key_impl) if key_impl else row_key_data
    B = prompt_ids_BxLp.shape[0]
    row_controls["row_keys_R"] = jax.vmap(jax.random.fold_in)(rows(prompt_keys_B),
                                                              jnp.tile(jnp.arange(G, dtype=jnp.uint32), B))
  init = initial_rows(s, ~rows(active_B), controls["pad_id"])

  def cond(carry):
    t, _, _, rows_state = carry
    return (t < N) & ~jnp.all(rows_state.done)

  body = functools.partial(decode_step, s, model, rng, row_controls, prompt_len_R, prompt_valid_RxLp)
  steps, _, cache, final = jax.lax.while_loop(cond, body, (jnp.int32(0), logits_RxV, cache, init))
  out = SampleOutput(tokens=final.tokens, logprobs=final.logprobs, lengths=final.lengths,
                     confidence=final.confidence, decode_steps=steps,
                     stopped=final.stopped if s.return_confidence else None)
  return out, (cache if s.donate_cache else None)


def prefill(s, model, prompt_ids_BxLp, prompt_valid_BxLp):
  """The prompts' forward pass: (float32 logits of the last position [B, V], the prompts' cache [B, Lp])."""
  B, Lp = prompt_ids_BxLp.shape
  positions_BxLp = models.positions_from_valid(prompt_valid_BxLp)
  small = models.KVCache.zeros(s.cfg, B, Lp, s.cache_dtype)
  # The prompts attend among themselves through models.attention (cfg.attention); splash runs per
  # device under the mesh (shard_map), so it needs the mesh in context.
  with mesh_context(s.mesh if s.cfg.attention == "splash" else None):
    hidden_BxLpxD, small = model.hidden_states(prompt_ids_BxLp, positions_BxLp, cache=small, cache_pos=0,
                                              segment_ids_BxT=models.padding_segments(prompt_valid_BxLp))
  return model.project(hidden_BxLpxD[:, -1]), small  # only the last position's logits are used


def initial_rows(s, done_R, pad_id) -> RowState:
  """The decode state before token 0: rows `done_R` (inactive filler rows) are done from the start."""
  R, N = done_R.shape[0], s.max_new_tokens
  batch2 = ("batch", None)
  return RowState(
      tokens=s.layout.constrain(jnp.full((R, N), pad_id, jnp.int32), batch2),
      logprobs=s.layout.constrain(jnp.zeros((R, N), jnp.float32), batch2),
      confidence=s.layout.constrain(jnp.zeros((R, N), jnp.float32), batch2) if s.return_confidence else None,
      lengths=jnp.zeros((R,), jnp.int32), done=done_R, stopped=jnp.zeros((R,), bool),
      since_switch=jnp.zeros((R,), jnp.int32))


def decode_step(s, model, rng, controls, prompt_len_R, prompt_valid_RxLp, carry):
  """One turn of the decode loop: choose token t of every row, then feed it (the loop's body).

  controls: the call's controls with stop_threshold_B already repeated to rows [R], and row_keys_R (each row's
  own key, common random numbers) when the call brought row_keys: token t of a row is then drawn from
  fold_in(its key, t), else from fold_in(rng, t)."""
  N, Lp = s.max_new_tokens, prompt_valid_RxLp.shape[1]
  t, logits_RxV, cache, st = carry
  temperature, top_k, top_p = controls["temperature"], controls["top_k"], controls["top_p"]
  is_eos_V, pad_id = controls["is_eos_V"], controls["pad_id"]
  switch_V, alpha, beta = controls["switch_V"], controls["alpha"], controls["beta"]
  stop_R, stop_window = controls["stop_threshold_B"], controls["stop_window"]

  # Choose token t of every row and record it; rows that have ended write pad.
  penalised = penalties.apply_thought_switch_penalty(logits_RxV, st.since_switch, switch_V, alpha, beta)
  u_R = None
  if "row_keys_R" in controls:
    u_R = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, t), (), jnp.float32))(controls["row_keys_R"])
  token_R = filters.choose_tokens(jax.random.fold_in(rng, t), penalised, temperature, top_k, top_p, u_R)
  logp_RxV = filters.log_probs(logits_RxV, temperature)
  logp_R = jnp.take_along_axis(logp_RxV, token_R[:, None], axis=1)[:, 0]
  live = ~st.done
  confidence, stop = st.confidence, jnp.zeros_like(live)
  if confidence is not None:
    conf_R = filters.deepconf_confidence(logp_RxV, s.confidence_k)
    confidence = confidence.at[:, t].set(jnp.where(live, conf_R, 0.0))
    # DeepConf online: the mean confidence of the last stop_window tokens (once there are that many).
    in_window_N = (jnp.arange(N) <= t) & (jnp.arange(N) > t - stop_window)
    window_R = jnp.sum(jnp.where(in_window_N[None, :], confidence, 0.0), axis=1) / stop_window
    stop = live & (t + 1 >= stop_window) & (window_R < stop_R) & ~is_eos_V[token_R]
  st = RowState(tokens=st.tokens.at[:, t].set(jnp.where(live, token_R, pad_id)),
                logprobs=st.logprobs.at[:, t].set(jnp.where(live, logp_R, 0.0)),
                confidence=confidence,
                lengths=st.lengths + live.astype(jnp.int32),
                done=st.done | is_eos_V[token_R] | stop,
                stopped=st.stopped | stop,
                since_switch=penalties.update_tokens_since_switch(st.since_switch, token_R, switch_V))
  # Feed token t (slot Lp+t, RoPE position prompt_len+t); it attends to the prompt and new slots <= Lp+t.
  # After the last token this forward is not needed; one spare step costs less than a second copy of
  # the sampling code in the compiled program.
  R = token_R.shape[0]
  mask_RxS = jnp.concatenate([prompt_valid_RxLp, jnp.broadcast_to(jnp.arange(N) <= t, (R, N))], axis=1)
  logits_Rx1xV, cache = model(token_R[:, None], (prompt_len_R + t)[:, None], mask_RxS[:, None, :],
                              cache=cache, cache_pos=Lp + t)
  return t + 1, logits_Rx1xV[:, 0], cache, st


def mesh_context(mesh):
  """The mesh as the abstract mesh of the traced code (a no-op context for None)."""
  return contextlib.nullcontext() if mesh is None else jax.sharding.use_abstract_mesh(mesh.abstract_mesh)
