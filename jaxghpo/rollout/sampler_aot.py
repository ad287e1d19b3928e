"""A Sampler's programs lowered from shapes alone (ahead of time): nothing is placed on a device.

So a program for another machine's devices (a TPU slice compiled on a CPU host, jaxghpo/aot) lowers from
ShapeDtypeStructs carrying the sampler's shardings; the values a real call would bring do not change the
program. Functions of the Sampler ``s``; its abstract_arguments, lower_abstract and lower_parts call them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxghpo.parallel import platform
from jaxghpo.rollout import sampler_decode, sampler_inputs


def abstract_arguments(s, params, key_impl: str = "threefry2x32", row_keys: bool = False):
  """(args, kwargs) of a call as ShapeDtypeStructs with their shardings (params: abstract or real)."""
  if isinstance(params, nnx.Module):
    params = nnx.split(params)[1]
  B, Lp, V = s.batch_size, s.max_prompt_len, s.cfg.vocab_size
  sds = s.layout.abstract
  key_data = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0, impl=key_impl)))
  controls = sampler_inputs.sampling_controls(s, V, B, np.float32(1.0), 1.0, 0, None, 0, None, None, 1)
  args = (params, sds((B, Lp), np.int32, ("batch", None)), sds((B, Lp), bool, ("batch", None)),
          sds((B,), bool, ("batch",)), sds(key_data.shape, key_data.dtype, None), key_impl,
          {k: sds(np.shape(v), np.asarray(v).dtype, None) for k, v in controls.items()})
  if row_keys:  # the training sampler's calls bring one key per prompt (common random numbers)
    args[-1]["row_key_data_B"] = sds((B,) + key_data.shape, key_data.dtype, None)
  kwargs = {}
  if s.donate_cache:
    kwargs["cache"] = jax.eval_shape(s.layout.empty_cache)
  return args, kwargs


def lower_parts(s, params, key_impl: str = "threefry2x32", row_keys: bool = False) -> dict[str, jax.stages.Lowered]:
  """{"prefill", "decode_step"}: the two parts of the program, each lowered alone from shapes.

  The decode loop's trip count is data (it ends when every row has), so a cost analysis of the whole
  program counts its body once; one decode step lowered alone is what N steps repeat."""
  (params, ids, valid, active, key_data, key_impl, controls), _ = abstract_arguments(s, params, key_impl)
  R, Lp = s.num_rows, s.max_prompt_len
  sds = s.layout.abstract

  def prefill(params, ids, valid):
    return sampler_decode.prefill(s, nnx.merge(s.graphdef, params), ids, valid)

  def decode_step(params, key_data, controls, prompt_len_R, prompt_valid_RxLp, carry):
    rng = jax.random.wrap_key_data(key_data, impl=key_impl)
    return sampler_decode.decode_step(s, nnx.merge(s.graphdef, params), rng, controls, prompt_len_R,
                                      prompt_valid_RxLp, carry)

  cache = jax.eval_shape(s.layout.empty_cache)
  cache = s.layout.map_cache(lambda field, x: sds(x.shape, x.dtype, s.layout.cache_names[field]), cache)
  rows = jax.eval_shape(lambda: sampler_decode.initial_rows(s, jnp.zeros((R,), bool), jnp.int32(0)))
  rows = jax.tree.map(lambda x: sds(x.shape, x.dtype, ("batch",) + (None,) * (x.ndim - 1)), rows)
  carry = (sds((), np.int32, None), sds((R, s.cfg.vocab_size), np.float32, ("batch", "vocab")), cache, rows)
  row_controls = dict(controls, stop_threshold_B=sds((R,), np.float32, ("batch",)))
  if row_keys:
    row_controls["row_keys_R"] = sds((R,), jax.random.key(0, impl=key_impl).dtype, ("batch",))
  with platform.targeting(s.mesh):
    return {"prefill": jax.jit(prefill).lower(params, ids, valid),
            "decode_step": jax.jit(decode_step, donate_argnums=(5,)).lower(
                params, key_data, row_controls, sds((R,), np.int32, ("batch",)), sds((R, Lp), bool, ("batch", None)),
                carry)}
