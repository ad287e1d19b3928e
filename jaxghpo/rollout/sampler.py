"""The jitted sampler: one prefill pass over left-padded prompts, then a KV-cache decode ``while_loop``.

Shapes are fixed per :class:`Sampler` (batch of prompts B, samples per prompt G, prompt bucket Lp, new
tokens N), so a call with other prompts, seeds or sampling controls never compiles again; params are a
traced argument (the weights being trained, with their own shardings, no copy).

Layout: rows are prompt-major (row ``b * G + g`` is sample g of prompt b). The KV cache has S = Lp + N
slots shared by all rows: slots [0, Lp) hold the left-padded prompt, slot Lp + t the t-th new token. RoPE
positions count from each row's first real prompt token, so padding changes nothing. The prefill runs
once per prompt and its cache is repeated for the G samples. The decode ``while_loop`` stops as soon as
every row has produced an EOS token (or after N tokens).

Outputs (:class:`SampleOutput`):
  tokens int32 [R, N]: new tokens, ``pad_id`` after the end; the EOS token itself is kept.
  lengths int32 [R]: new tokens up to and including EOS (N when no EOS came; 0 for inactive rows).
  logprobs float32 [R, N]: ``log_softmax(logits / T)`` of each new token (T = 1 when greedy), before
    top-k/top-p and the thought-switch penalty; 0 after the end.
  confidence float32 [R, N] or None: DeepConf ``-mean(top-k logprobs)``, 0 after the end.
  prompt_ids int32 [B, Lp], prompt_valid bool [B, Lp]: numpy, this process's rows of the left-padded prompts
    the sampler ran on (the trainer's batch reuses them instead of padding a second time).
  stopped bool [R] or None: rows ended by DeepConf online stopping (with confidence and a stop threshold:
    a row ends, without EOS, once the mean confidence of its last ``stop_window`` tokens falls below its
    prompt's threshold; see jaxghpo/deepconf.py).

Random numbers. With one ``rng`` per call, token t of every row is drawn from ``fold_in(rng, t)``, so a
row's draws depend on where it sits in the call. With ``row_keys`` (one key per prompt, as raw key data)
sample g of prompt b draws token t from ``fold_in(fold_in(row_keys[b], g), t)``: its draws depend on its
own key only, whatever the call's size, the row's position or the process it came from (common random
numbers, jaxghpo/rollout/crn.py). The mode is static (each Sampler compiles the one its caller uses);
the keys themselves are data, so new keys never compile again.
"""
from __future__ import annotations

import collections
import contextlib
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct
from jax.sharding import NamedSharding

from jaxghpo import models, parallel
from jaxghpo.parallel import hosts, platform
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
class _RowState:
  """Per-row decode state carried through the loop (R rows, N new tokens)."""
  tokens: jax.Array        # int32 [R, N]
  logprobs: jax.Array      # float32 [R, N]
  confidence: jax.Array | None  # float32 [R, N]
  lengths: jax.Array       # int32 [R]: tokens written so far
  done: jax.Array          # bool [R]: produced EOS (or inactive filler row, or stopped)
  stopped: jax.Array       # bool [R]: ended by DeepConf online stopping
  since_switch: jax.Array  # int32 [R]: tokens since the last thought-switch token (TIP)


def _pad_prompts(prompts: Sequence[Sequence[int]], batch_size: int, max_prompt_len: int, pad_id: int):
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


def _eos_mask(eos_id, vocab_size: int) -> np.ndarray:
  """bool [V]: True at the end-of-sequence ids (None: no EOS; an int or a list of ints)."""
  mask = np.zeros((vocab_size,), bool)
  if eos_id is None:
    return mask
  ids = np.asarray(eos_id, np.int64).reshape(-1)
  if ((ids < 0) | (ids >= vocab_size)).any():
    raise ValueError(f"eos_id={eos_id} is outside the vocabulary [0, {vocab_size})")
  mask[ids] = True
  return mask


class Sampler:
  """A compiled sampler for one model structure and fixed sizes.

  Args:
    model: the policy (its graph structure is captured; weights are passed at call time).
    batch_size: prompts per call B (a call may bring fewer: the rest are inactive filler rows).
    max_prompt_len: the prompt bucket Lp; any prompt up to Lp tokens runs without compiling.
    max_new_tokens: N, new tokens per row.
    num_samples: G samples per prompt; the prompt's prefill is computed once and its cache repeated.
    cache_dtype: KV cache dtype (default: the model's compute dtype).
    mesh: the training mesh; rows and cache are sharded over ("data", "fsdp") (and KV heads over
      "tensor" when it divides them). Params keep their own shardings.
    return_confidence: also return DeepConf token confidence, from the top ``confidence_k`` logprobs
      (default 20, or V when the vocabulary is smaller).
    donate_cache: keep a preallocated cache [R, Lp + N] and donate it to each call (True), or build it
      inside the jitted call (False, default: no measurable speed difference on CPU, see BENCHMARKS.md,
      and no cache memory is held between calls, which the train step needs on an accelerator).

  Several processes (multi-host): each process passes its own ``batch_size / process_count`` prompts;
  rows of the outputs are laid out in process order (``parallel.hosts.local_rows`` returns a process's).
  """

  def __init__(self, model: nnx.Module, *, batch_size: int, max_prompt_len: int, max_new_tokens: int,
               num_samples: int = 1, cache_dtype=None, mesh: jax.sharding.Mesh | None = None,
               return_confidence: bool = False, confidence_k: int = 20, donate_cache: bool = False):
    for name, value in (("batch_size", batch_size), ("max_prompt_len", max_prompt_len),
                        ("max_new_tokens", max_new_tokens), ("num_samples", num_samples),
                        ("confidence_k", confidence_k)):
      if int(value) < 1:
        raise ValueError(f"Sampler {name}={value} must be >= 1")
    self.graphdef, _ = nnx.split(model)
    self.cfg: models.ModelConfig = model.cfg
    self.batch_size, self.num_samples = int(batch_size), int(num_samples)
    self.num_rows = self.batch_size * self.num_samples
    self.max_prompt_len, self.max_new_tokens = int(max_prompt_len), int(max_new_tokens)
    self.cache_dtype = jnp.dtype(cache_dtype or self.cfg.compute_dtype)
    self.mesh = mesh
    self.return_confidence = bool(return_confidence)
    self.confidence_k = min(int(confidence_k), self.cfg.vocab_size)
    self.donate_cache = bool(donate_cache)
    self._cache = None
    # Where the slot axis of the model's key and value caches is (found from shapes, so a layout change
    # in models.KVCache needs no change here), and the logical names of their axes.
    one, two = (jax.eval_shape(lambda n=n: models.KVCache.zeros(self.cfg, 1, n, self.cache_dtype))
                for n in (1, 2))
    self._slot_axis, self._cache_names = {}, {}
    for field in ("k", "v"):
      a_shape, b_shape = getattr(one, field)[0].shape, getattr(two, field)[0].shape
      slot = [a != b for a, b in zip(a_shape, b_shape)].index(True)
      rest = iter(("kv_heads", "head_dim"))  # the other two axes, in this order in every layout used
      self._slot_axis[field] = slot
      self._cache_names[field] = tuple("batch" if a == 0 else "length" if a == slot else next(rest)
                                       for a in range(len(a_shape)))
    if self.donate_cache:
      self._fn = jax.jit(self._generate, static_argnames=("key_impl",), donate_argnames=("cache",))
    else:
      self._fn = jax.jit(functools.partial(self._generate, cache=None), static_argnames=("key_impl",))

  # ---- placement -------------------------------------------------------------------------------------
  def _sharding(self, shape, names):
    if self.mesh is None:
      return None
    return NamedSharding(self.mesh, parallel.spec_for_shape(shape, names, self.mesh))

  def _constrain(self, x, names):
    sharding = self._sharding(x.shape, names)
    return x if sharding is None else jax.lax.with_sharding_constraint(x, sharding)

  def _put(self, x, names):
    """A global array from the full host value ``x`` (the same on every process)."""
    sharding = self._sharding(np.shape(x), names)
    if jax.process_count() == 1:
      # device_put, not jnp.asarray: the latter stages a small program per new shape.
      return jax.device_put(x, sharding)
    return jax.make_array_from_callback(np.shape(x), sharding, lambda index: x[index])

  def _empty_cache(self) -> models.KVCache:
    slots = self.max_prompt_len + self.max_new_tokens
    cache = models.KVCache.zeros(self.cfg, self.num_rows, slots, self.cache_dtype)
    return self._map_cache(lambda field, x: self._constrain(x, self._cache_names[field]), cache)

  @staticmethod
  def _map_cache(fn, cache, *more):
    """KVCache with fn(field, layer_array, *the same layer of `more` caches) for every layer of k and v."""
    return models.KVCache(
        k=tuple(fn("k", *xs) for xs in zip(cache.k, *(m.k for m in more))),
        v=tuple(fn("v", *xs) for xs in zip(cache.v, *(m.v for m in more))))

  # ---- the jitted function ---------------------------------------------------------------------------
  def _generate(self, params, prompt_ids_BxLp, prompt_valid_BxLp, active_B, key_data, key_impl, controls, cache):
    G, N = self.num_samples, self.max_new_tokens
    rng = jax.random.wrap_key_data(key_data, impl=key_impl) if key_impl else key_data
    model = nnx.merge(self.graphdef, params)
    logits_BxV, small = self._prefill(model, prompt_ids_BxLp, prompt_valid_BxLp)

    def rows(x):  # [B, ...] -> [R, ...], prompt-major
      return jnp.repeat(x, G, axis=0) if G > 1 else x

    def grow(field, part, full=None):  # the prompt cache into the first Lp slots of the decode cache
      part = rows(part)
      if full is None:
        widths = [(0, 0)] * part.ndim
        widths[self._slot_axis[field]] = (0, N)
        full = jnp.pad(part, widths)
      else:
        full = jax.lax.dynamic_update_slice(full, part, (0,) * part.ndim)
      return self._constrain(full, self._cache_names[field])

    cache = self._map_cache(grow, small) if cache is None else self._map_cache(grow, small, cache)
    logits_RxV = self._constrain(rows(logits_BxV), ("batch", "vocab"))
    prompt_len_R = rows(jnp.sum(prompt_valid_BxLp, axis=1, dtype=jnp.int32))
    prompt_valid_RxLp = rows(prompt_valid_BxLp)
    row_controls = dict(controls, stop_threshold_B=rows(controls["stop_threshold_B"]))
    row_key_data = row_controls.pop("row_key_data_B", None)
    if row_key_data is not None:  # per-row keys (common random numbers): sample g of prompt b: fold_in(key_b, g)
      prompt_keys_B = jax.random.wrap_key_data(row_key_data, impl=key_impl) if key_impl else row_key_data
      B = prompt_ids_BxLp.shape[0]
      row_controls["row_keys_R"] = jax.vmap(jax.random.fold_in)(rows(prompt_keys_B),
                                                                jnp.tile(jnp.arange(G, dtype=jnp.uint32), B))
    init = self._initial_rows(~rows(active_B), controls["pad_id"])

    def cond(carry):
      t, _, _, rows_state = carry
      return (t < N) & ~jnp.all(rows_state.done)

    body = functools.partial(self._decode_step, model, rng, row_controls, prompt_len_R, prompt_valid_RxLp)
    steps, _, cache, final = jax.lax.while_loop(cond, body, (jnp.int32(0), logits_RxV, cache, init))
    out = SampleOutput(tokens=final.tokens, logprobs=final.logprobs, lengths=final.lengths,
                       confidence=final.confidence, decode_steps=steps,
                       stopped=final.stopped if self.return_confidence else None)
    return out, (cache if self.donate_cache else None)

  def _prefill(self, model, prompt_ids_BxLp, prompt_valid_BxLp):
    """The prompts' forward pass: (float32 logits of the last position [B, V], the prompts' cache [B, Lp])."""
    B, Lp = prompt_ids_BxLp.shape
    positions_BxLp = models.positions_from_valid(prompt_valid_BxLp)
    small = models.KVCache.zeros(self.cfg, B, Lp, self.cache_dtype)
    # The prompts attend among themselves through models.attention (cfg.attention); splash runs per
    # device under the mesh (shard_map), so it needs the mesh in context.
    with _mesh_context(self.mesh if self.cfg.attention == "splash" else None):
      hidden_BxLpxD, small = model.hidden_states(prompt_ids_BxLp, positions_BxLp, cache=small, cache_pos=0,
                                                segment_ids_BxT=models.padding_segments(prompt_valid_BxLp))
    return model.project(hidden_BxLpxD[:, -1]), small  # only the last position's logits are used

  def _initial_rows(self, done_R, pad_id) -> _RowState:
    R, N = done_R.shape[0], self.max_new_tokens
    batch2 = ("batch", None)
    return _RowState(
        tokens=self._constrain(jnp.full((R, N), pad_id, jnp.int32), batch2),
        logprobs=self._constrain(jnp.zeros((R, N), jnp.float32), batch2),
        confidence=self._constrain(jnp.zeros((R, N), jnp.float32), batch2) if self.return_confidence else None,
        lengths=jnp.zeros((R,), jnp.int32), done=done_R, stopped=jnp.zeros((R,), bool),
        since_switch=jnp.zeros((R,), jnp.int32))

  def _decode_step(self, model, rng, controls, prompt_len_R, prompt_valid_RxLp, carry):
    """One turn of the decode loop: choose token t of every row, then feed it (the loop's body).

    controls: the call's controls with stop_threshold_B already repeated to rows [R], and row_keys_R (each row's
    own key, common random numbers) when the call brought row_keys: token t of a row is then drawn from
    fold_in(its key, t), else from fold_in(rng, t)."""
    N, Lp = self.max_new_tokens, prompt_valid_RxLp.shape[1]
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
      conf_R = filters.deepconf_confidence(logp_RxV, self.confidence_k)
      confidence = confidence.at[:, t].set(jnp.where(live, conf_R, 0.0))
      # DeepConf online: the mean confidence of the last stop_window tokens (once there are that many).
      in_window_N = (jnp.arange(N) <= t) & (jnp.arange(N) > t - stop_window)
      window_R = jnp.sum(jnp.where(in_window_N[None, :], confidence, 0.0), axis=1) / stop_window
      stop = live & (t + 1 >= stop_window) & (window_R < stop_R) & ~is_eos_V[token_R]
    st = _RowState(tokens=st.tokens.at[:, t].set(jnp.where(live, token_R, pad_id)),
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

  # ---- the call --------------------------------------------------------------------------------------
  def __call__(self, params, prompts: Sequence[Sequence[int]], *, rng, temperature: float = 0.0,
               top_p: float = 1.0, top_k: int = 0, eos_id=None, pad_id: int = 0,
               penalty: penalties.ThoughtSwitchPenalty | None = None, stop_threshold=None,
               stop_window: int = 1, row_keys=None) -> SampleOutput:
    """Samples ``num_samples`` continuations of each prompt.

    params: the model (nnx.Module) or its state from ``nnx.split(model)`` (same structure as at build).
    prompts: up to ``batch_size`` ragged lists of token ids, each 1..max_prompt_len long.
    rng: a JAX PRNG key (or an int seed). temperature 0 is greedy.
    eos_id: None, an id, or a list of ids that end a row. pad_id: written after the end.
    penalty: the TIP thought-switch penalty (off by default).
    stop_threshold: DeepConf online stopping (needs return_confidence): float32 [len(prompts)], one
      threshold per prompt (or a float for all); a row ends once the mean confidence of its last
      ``stop_window`` tokens is below its prompt's threshold (SampleOutput.stopped). None: off. Both are
      traced inputs: turning stopping on or off, or changing them, compiles nothing.
    row_keys: None, or raw key data [len(prompts), ...] (jax.random.key_data of one key per prompt, of
      `rng`'s implementation): every row draws from its own key (module docstring); `rng` is then unused
      for tokens. A Sampler is called either always with row_keys or always without (one compile each).
    Rows beyond ``len(prompts) * num_samples`` are inactive: length 0, all pad.
    """
    (args, kwargs), local = self._arguments(params, prompts, rng=rng, temperature=temperature, top_p=top_p,
                                            top_k=top_k, eos_id=eos_id, pad_id=pad_id, penalty=penalty,
                                            stop_threshold=stop_threshold, stop_window=stop_window,
                                            row_keys=row_keys)
    with platform.targeting(self.mesh):
      out, cache = self._fn(*args, **kwargs)
    if self.donate_cache:
      self._cache = cache
    return out.replace(prompt_ids=local[0], prompt_valid=local[1])

  def lower(self, params, prompts, **controls) -> jax.stages.Lowered:
    """The lowered program for these arguments (same keywords as a call), for cost/memory analysis or
    for reading the compiled HLO: ``sampler.lower(model, prompts, rng=key).compile().as_text()``."""
    (args, kwargs), _ = self._arguments(params, prompts, **controls)
    with platform.targeting(self.mesh):
      return self._fn.lower(*args, **kwargs)

  # ---- ahead of time: lowering from shapes alone -------------------------------------------------------
  def abstract_arguments(self, params, key_impl: str = "threefry2x32", row_keys: bool = False):
    """(args, kwargs) of a call as ShapeDtypeStructs with their shardings (params: abstract or real).

    Nothing is placed on a device, so a program for another machine's devices (a TPU slice compiled on a
    CPU host, jaxghpo/aot) lowers from these; the values a real call would bring do not change the program."""
    if isinstance(params, nnx.Module):
      params = nnx.split(params)[1]
    B, Lp, V = self.batch_size, self.max_prompt_len, self.cfg.vocab_size
    key_data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=key_impl)))
    args = (params, self._abstract((B, Lp), np.int32, ("batch", None)), self._abstract((B, Lp), bool, ("batch", None)),
            self._abstract((B,), bool, ("batch",)), self._abstract(key_data.shape, key_data.dtype, None), key_impl,
            {k: self._abstract(np.shape(v), np.asarray(v).dtype, None)
             for k, v in self._controls(V, B, np.float32(1.0), 1.0, 0, None, 0, None, None, 1).items()})
    if row_keys:  # the training sampler's calls bring one key per prompt (common random numbers)
      args[-1]["row_key_data_B"] = self._abstract((B,) + key_data.shape, key_data.dtype, None)
    kwargs = {}
    if self.donate_cache:
      kwargs["cache"] = jax.eval_shape(self._empty_cache)
    return args, kwargs

  def lower_abstract(self, params, key_impl: str = "threefry2x32", row_keys: bool = False) -> jax.stages.Lowered:
    """The whole sampling program (prefill and the decode loop) lowered from shapes (see abstract_arguments)."""
    args, kwargs = self.abstract_arguments(params, key_impl, row_keys)
    with platform.targeting(self.mesh):
      return self._fn.lower(*args, **kwargs)

  def lower_parts(self, params, key_impl: str = "threefry2x32", row_keys: bool = False) -> dict[str, jax.stages.Lowered]:
    """{"prefill", "decode_step"}: the two parts of the program, each lowered alone from shapes.

    The decode loop's trip count is data (it ends when every row has), so a cost analysis of the whole
    program counts its body once; one decode step lowered alone is what N steps repeat."""
    (params, ids, valid, active, key_data, key_impl, controls), _ = self.abstract_arguments(params, key_impl)
    R, Lp = self.num_rows, self.max_prompt_len

    def prefill(params, ids, valid):
      return self._prefill(nnx.merge(self.graphdef, params), ids, valid)

    def decode_step(params, key_data, controls, prompt_len_R, prompt_valid_RxLp, carry):
      rng = jax.random.wrap_key_data(key_data, impl=key_impl)
      return self._decode_step(nnx.merge(self.graphdef, params), rng, controls, prompt_len_R, prompt_valid_RxLp,
                               carry)

    cache = jax.eval_shape(self._empty_cache)
    cache = self._map_cache(lambda field, x: self._abstract(x.shape, x.dtype, self._cache_names[field]), cache)
    rows = jax.eval_shape(lambda: self._initial_rows(jnp.zeros((R,), bool), jnp.int32(0)))
    rows = jax.tree.map(lambda x: self._abstract(x.shape, x.dtype, ("batch",) + (None,) * (x.ndim - 1)), rows)
    carry = (self._abstract((), np.int32, None), self._abstract((R, self.cfg.vocab_size), np.float32,
                                                                ("batch", "vocab")), cache, rows)
    row_controls = dict(controls, stop_threshold_B=self._abstract((R,), np.float32, ("batch",)))
    if row_keys:
      row_controls["row_keys_R"] = self._abstract((R,), jax.random.key(0, impl=key_impl).dtype, ("batch",))
    with platform.targeting(self.mesh):
      return {"prefill": jax.jit(prefill).lower(params, ids, valid),
              "decode_step": jax.jit(decode_step, donate_argnums=(5,)).lower(
                  params, key_data, row_controls, self._abstract((R,), np.int32, ("batch",)),
                  self._abstract((R, Lp), bool, ("batch", None)), carry)}

  def _abstract(self, shape, dtype, names):
    """A ShapeDtypeStruct sharded by logical `names` on this sampler's mesh; names None: no sharding, as the
    numpy values a call passes (the key and the controls) have none."""
    shape = tuple(shape)
    if self.mesh is None or names is None:
      return jax.ShapeDtypeStruct(shape, dtype)
    return jax.ShapeDtypeStruct(shape, dtype, sharding=self._sharding(shape, names))

  def _global_prompts(self, prompts, pad_id: int):
    """(global, local): left-padded ids/valid/active for the whole batch, and this process's rows.

    With several processes each brings its own ``batch_size / process_count`` prompts (rows in process
    order, as parallel.hosts lays out batches)."""
    n = jax.process_count()
    if n == 1:
      local = _pad_prompts(prompts, self.batch_size, self.max_prompt_len, pad_id)
      return local, local
    if self.mesh is None or self.batch_size % n:
      raise ValueError(f"with {n} processes the Sampler needs mesh= and a batch_size ({self.batch_size}) "
                       f"divisible by the process count; each process passes its batch_size / {n} prompts")
    local = _pad_prompts(prompts, self.batch_size // n, self.max_prompt_len, pad_id)
    return tuple(hosts.allgather(x) for x in local), local

  def _stop_thresholds(self, stop_threshold, num_prompts: int) -> np.ndarray:
    """float32 [B] (global): each prompt's DeepConf stop threshold; -inf (never stops) when off."""
    n = jax.process_count()
    local = np.full((self.batch_size // n,), -np.inf, np.float32)
    if stop_threshold is not None:
      if not self.return_confidence:
        raise ValueError("stop_threshold (DeepConf online stopping) needs a Sampler built with return_confidence=True")
      values = np.broadcast_to(np.asarray(stop_threshold, np.float32), (num_prompts,))
      local[:num_prompts] = values
    return local if n == 1 else hosts.allgather(local)

  def _row_keys(self, row_keys, num_prompts: int, key_data: np.ndarray) -> np.ndarray:
    """uint32 [B, ...] (global): each prompt's raw key data; zeros for inactive rows."""
    n = jax.process_count()
    row_keys = np.asarray(row_keys)
    if row_keys.shape != (num_prompts,) + key_data.shape or row_keys.dtype != key_data.dtype:
      raise ValueError(f"row_keys has shape {row_keys.shape} and dtype {row_keys.dtype}; expected one raw key "
                       f"per prompt, {(num_prompts,) + key_data.shape} {key_data.dtype} (jax.random.key_data of "
                       "keys of rng's implementation)")
    local = np.zeros((self.batch_size // n,) + key_data.shape, key_data.dtype)
    local[:num_prompts] = row_keys
    return local if n == 1 else hosts.allgather(local)

  def _arguments(self, params, prompts, *, rng, temperature=0.0, top_p=1.0, top_k=0, eos_id=None, pad_id=0,
                 penalty=None, stop_threshold=None, stop_window=1, row_keys=None):
    """Checks the inputs and turns them into the jitted function's fixed-shape (sharded) arguments."""
    if isinstance(params, nnx.Module):
      params = nnx.split(params)[1]
    if not 0.0 < float(top_p) <= 1.0:
      raise ValueError(f"top_p={top_p} must be in (0, 1]")
    if float(temperature) < 0 or int(top_k) < 0:
      raise ValueError(f"temperature={temperature} and top_k={top_k} must be >= 0")
    if isinstance(rng, int):
      rng = jax.random.key(rng)
    V = self.cfg.vocab_size
    (ids, valid, active), local = self._global_prompts(prompts, int(pad_id))
    if int(stop_window) < 1:
      raise ValueError(f"stop_window={stop_window} must be >= 1 tokens")
    controls = self._controls(V, len(prompts), temperature, top_p, top_k, eos_id, pad_id, penalty, stop_threshold,
                              stop_window)
    # The key travels as raw data (its implementation is part of the traced program) and the controls as
    # numpy values, so that neither is tied to one device (several processes share one mesh).
    key_impl = str(jax.random.key_impl(rng)) if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key) else None
    key_data = np.asarray(jax.random.key_data(rng) if key_impl else rng)
    if row_keys is not None:
      controls["row_key_data_B"] = self._row_keys(row_keys, len(prompts), key_data)
    args = (params, self._put(ids, ("batch", None)), self._put(valid, ("batch", None)),
            self._put(active, ("batch",)), key_data, key_impl, controls)
    if not self.donate_cache:
      return (args, {}), local
    if self._cache is None:
      self._cache = jax.jit(self._empty_cache)()
    return (args, {"cache": self._cache}), local


  def _controls(self, V, num_prompts, temperature, top_p, top_k, eos_id, pad_id, penalty, stop_threshold,
                stop_window) -> dict:
    """The sampling controls as numpy values (traced inputs of the program: changing them compiles nothing)."""
    return {"temperature": np.float32(temperature), "top_p": np.float32(top_p), "top_k": np.int32(top_k),
            "is_eos_V": _eos_mask(eos_id, V), "pad_id": np.int32(pad_id),
            "stop_threshold_B": self._stop_thresholds(stop_threshold, num_prompts),
            "stop_window": np.int32(stop_window),
            **(penalty or penalties.ThoughtSwitchPenalty()).arrays(V)}


def _mesh_context(mesh):
  """The mesh as the abstract mesh of the traced code (a no-op context for None)."""
  return contextlib.nullcontext() if mesh is None else jax.sharding.use_abstract_mesh(mesh.abstract_mesh)


_SAMPLERS: "collections.OrderedDict[tuple, Sampler]" = collections.OrderedDict()
_MAX_SAMPLERS = 8


def prompt_bucket(longest: int, minimum: int = 8) -> int:
  """The prompt bucket for a longest prompt: the next power of two, at least ``minimum``."""
  return max(minimum, 1 << max(0, int(longest) - 1).bit_length())


def sampler_for(model: nnx.Module, *, batch_size: int, max_prompt_len: int, max_new_tokens: int,
                num_samples: int = 1, return_confidence: bool = False, confidence_k: int = 20,
                mesh: jax.sharding.Mesh | None = None, cache_dtype=None) -> Sampler:
  """The kept :class:`Sampler` for this model structure and these sizes (built on first use; the last
  eight are kept). ``generate`` draws its samplers from here, so both share compiled programs."""
  graphdef, _ = nnx.split(model)
  key = (graphdef, int(batch_size), int(max_prompt_len), int(max_new_tokens), int(num_samples),
         bool(return_confidence), int(confidence_k), mesh, None if cache_dtype is None else jnp.dtype(cache_dtype).name)
  sampler = _SAMPLERS.pop(key, None)
  if sampler is None:
    sampler = Sampler(model, batch_size=batch_size, max_prompt_len=max_prompt_len, max_new_tokens=max_new_tokens,
                      num_samples=num_samples, cache_dtype=cache_dtype, mesh=mesh,
                      return_confidence=return_confidence, confidence_k=confidence_k)
  _SAMPLERS[key] = sampler
  while len(_SAMPLERS) > _MAX_SAMPLERS:
    _SAMPLERS.popitem(last=False)
  return sampler


def generate(model: nnx.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, rng,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, eos_id=None, pad_id: int = 0,
             num_samples: int = 1, max_prompt_len: int | None = None, return_confidence: bool = False,
             confidence_k: int = 20, penalty: penalties.ThoughtSwitchPenalty | None = None,
             mesh: jax.sharding.Mesh | None = None, cache_dtype=None) -> SampleOutput:
  """Samples continuations of ragged prompts (docs/DESIGN.md contract); see :class:`Sampler`.

  Uses the kept :class:`Sampler` (see :func:`sampler_for`) with batch_size ``len(prompts)`` and prompt
  bucket ``max_prompt_len`` (default: the next power of two >= the longest prompt, at least 8), so
  repeated calls of the same shape do not compile again.
  Returns tokens int32 [B*G, N], logprobs float32 [B*G, N], lengths int32 [B*G] (rows prompt-major).
  """
  if not prompts:
    raise ValueError("generate() got no prompts")
  bucket = max_prompt_len or prompt_bucket(max(len(p) for p in prompts))
  sampler = sampler_for(model, batch_size=len(prompts), max_prompt_len=bucket, max_new_tokens=max_new_tokens,
                        num_samples=num_samples, return_confidence=return_confidence, confidence_k=confidence_k,
                        mesh=mesh, cache_dtype=cache_dtype)
  return sampler(model, prompts, rng=rng, temperature=temperature, top_p=top_p, top_k=top_k, eos_id=eos_id,
                 pad_id=pad_id, penalty=penalty)
