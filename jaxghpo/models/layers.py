"""Building blocks of the decoder: RMSNorm, rotary embeddings, grouped-query attention, SwiGLU MLP.

Every parameter is an ``nnx.Param`` annotated with logical axis names (``out_sharding``); created with
eager sharding off, so a model can be built without a mesh and placed later by ``parallel.shard_model``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from jaxghpo.models import attention as attention_lib
from jaxghpo.models.config import ModelConfig

_NEG_INF = -0.7 * float(jnp.finfo(jnp.float32).max)


def param(rngs: nnx.Rngs | None, init, shape, dtype, names) -> nnx.Param:
  """A parameter with logical axis names; ``rngs=None`` gives zeros (shape-only construction)."""
  value = init(rngs.params(), shape, dtype) if rngs is not None else jnp.zeros(shape, dtype)
  return nnx.Param(value, out_sharding=names, eager_sharding=False)


def matmul_2d(x_NxI, w_IxO):
  """x [..., I] @ w [I, O] -> [..., O], computed on x flattened to 2-D [tokens, I].

  Why flatten: the weight gradient of a matmul over several leading axes contracts all of them
  ("...i,...o->io"), and XLA:CPU then copies both operands into a transposed layout before its dot
  (measured: 22% of the 512-wide train step, copy fusions of [2048, tokens]); over one flattened
  token axis the dot takes them as they are. On TPU/GPU the reshape is free.
  """
  lead = x_NxI.shape[:-1]
  y = jnp.dot(x_NxI.reshape(-1, x_NxI.shape[-1]), w_IxO)
  return y.reshape(*lead, w_IxO.shape[-1])


class Linear(nnx.Module):
  """y = x @ kernel (+ bias); kernel [in, out] (the transpose of torch's weight)."""

  def __init__(self, d_in, d_out, names, *, bias: bool, cfg: ModelConfig, rngs):
    init = nnx.initializers.normal(0.02)
    self.kernel = param(rngs, init, (d_in, d_out), cfg.storage_dtype, names)
    self.bias = param(rngs, nnx.initializers.zeros, (d_out,), cfg.storage_dtype, names[1:]) if bias else None
    self.dtype = cfg.compute_dtype

  def __call__(self, x):
    y = matmul_2d(x.astype(self.dtype), self.kernel[...].astype(self.dtype))
    if self.bias is not None:
      y = y + self.bias[...].astype(self.dtype)
    return y


class RMSNorm(nnx.Module):
  """x / sqrt(mean(x^2) + eps) * scale, computed in float32 as transformers does."""

  def __init__(self, dim: int, cfg: ModelConfig, rngs):
    self.scale = param(rngs, nnx.initializers.ones, (dim,), cfg.storage_dtype, ("norm",))
    self.eps = cfg.rms_norm_eps

  def __call__(self, x):
    dtype = x.dtype
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.scale[...].astype(dtype) * x32.astype(dtype)


def rope_inv_freq(cfg: ModelConfig) -> jnp.ndarray:
  """Inverse frequencies [head_dim // 2], with Llama 3's wavelength-dependent scaling when configured."""
  d = cfg.head_dim
  inv = 1.0 / (cfg.rope_theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  scaling = cfg.rope_scaling_dict
  if scaling and scaling.get("rope_type", scaling.get("type")) == "llama3":
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv
    scaled = jnp.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    inv = jnp.where(medium, smoothed, scaled)
  return inv


def apply_rope(x_BxTxHxD, positions_BxT, inv_freq):
  """Rotary embedding in the rotate-half layout of transformers."""
  angles = positions_BxT.astype(jnp.float32)[..., None] * inv_freq  # [B, T, D/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x = x_BxTxHxD.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_BxTxHxD.dtype)


class Attention(nnx.Module):
  """Grouped-query attention with an optional KV cache slot range."""

  def __init__(self, cfg: ModelConfig, rngs):
    d, h, kv, hd = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    self.q_proj = Linear(d, h * hd, ("embed", "heads"), bias=cfg.attention_bias, cfg=cfg, rngs=rngs)
    self.k_proj = Linear(d, kv * hd, ("embed", "kv_heads"), bias=cfg.attention_bias, cfg=cfg, rngs=rngs)
    self.v_proj = Linear(d, kv * hd, ("embed", "kv_heads"), bias=cfg.attention_bias, cfg=cfg, rngs=rngs)
    self.o_proj = Linear(h * hd, d, ("heads", "embed"), bias=False, cfg=cfg, rngs=rngs)
    if cfg.qk_norm:
      self.q_norm = RMSNorm(hd, cfg, rngs)
      self.k_norm = RMSNorm(hd, cfg, rngs)
    else:
      self.q_norm = self.k_norm = None
    self.num_heads, self.num_kv_heads, self.head_dim = h, kv, hd
    self.impl = cfg.attention

  def __call__(self, x_BxTxD, positions_BxT, mask_BxTxS, inv_freq, cache_kv=None, cache_pos=None,
               segment_ids_BxT=None):
    """Returns (out [B, T, D], (k [B, KV, hd, S], v [B, KV, S, hd]) as stored for this layer).

    Without a cache, keys are this call's T tokens (S = T). With ``cache_kv`` = (k, v) in the layout of
    models.KVCache, this call's keys/values are written at slots [cache_pos, cache_pos + T). Keys and
    values are kept heads-major, keys transposed ([B, KV, hd, S]), so that neither attention product
    transposes the cache at each decode step.

    Who attends to whom: with ``segment_ids_BxT`` the queries attend causally to this call's own tokens
    of their segment through models.attention (the configured implementation; earlier cache slots are
    not read: a prefill or a training forward); otherwise over all S slots as ``mask_BxTxS`` allows
    (a decode step over the cache).
    """
    B, T, _ = x_BxTxD.shape
    KV, G, hd = self.num_kv_heads, self.num_heads // self.num_kv_heads, self.head_dim
    q = self.q_proj(x_BxTxD).reshape(B, T, self.num_heads, hd)
    k = self.k_proj(x_BxTxD).reshape(B, T, KV, hd)
    v = self.v_proj(x_BxTxD).reshape(B, T, KV, hd)
    if self.q_norm is not None:
      q, k = self.q_norm(q), self.k_norm(k)
    q = checkpoint_name(apply_rope(q, positions_BxT, inv_freq), "qkv")
    k = checkpoint_name(apply_rope(k, positions_BxT, inv_freq), "qkv")
    v = checkpoint_name(v, "qkv")
    if segment_ids_BxT is not None:
      out = checkpoint_name(attention_lib.attention(q, k, v, segment_ids_BxT, impl=self.impl), "context")
      out = out.reshape(B, T, -1)
      k, v = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)  # the cache layout
      if cache_kv is not None:
        k, v = self._write_cache(cache_kv, k, v, cache_pos)
      return self.o_proj(out), (k, v)
    k = k.transpose(0, 2, 3, 1)  # [B, KV, hd, T]
    v = v.transpose(0, 2, 1, 3)  # [B, KV, T, hd]
    if cache_kv is not None:
      k, v = self._write_cache(cache_kv, k, v, cache_pos)
    qg = q.reshape(B, T, KV, G, hd).transpose(0, 2, 3, 1, 4).reshape(B, KV, G * T, hd)
    scores = jnp.einsum("bkqd,bkds->bkqs", qg, k.astype(q.dtype)).astype(jnp.float32) / math.sqrt(hd)
    scores = jnp.where(mask_BxTxS[:, None, None], scores.reshape(B, KV, G, T, -1), _NEG_INF)
    probs = jax.nn.softmax(scores, axis=-1).astype(q.dtype).reshape(B, KV, G * T, -1)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, v.astype(q.dtype))
    out = out.reshape(B, KV, G, T, hd).transpose(0, 3, 1, 2, 4).reshape(B, T, -1)
    return self.o_proj(out), (k, v)

  @staticmethod
  def _write_cache(cache_kv, k_BxKVxhdxT, v_BxKVxTxhd, cache_pos):
    k_cache, v_cache = cache_kv
    k = jax.lax.dynamic_update_slice(k_cache, k_BxKVxhdxT.astype(k_cache.dtype), (0, 0, 0, cache_pos))
    v = jax.lax.dynamic_update_slice(v_cache, v_BxKVxTxhd.astype(v_cache.dtype), (0, 0, cache_pos, 0))
    return k, v


class MLP(nnx.Module):
  """SwiGLU: down(silu(gate(x)) * up(x))."""

  def __init__(self, cfg: ModelConfig, rngs):
    d, f = cfg.hidden_size, cfg.intermediate_size
    self.gate_proj = Linear(d, f, ("embed", "mlp"), bias=False, cfg=cfg, rngs=rngs)
    self.up_proj = Linear(d, f, ("embed", "mlp"), bias=False, cfg=cfg, rngs=rngs)
    self.down_proj = Linear(f, d, ("mlp", "embed"), bias=False, cfg=cfg, rngs=rngs)

  def __call__(self, x):
    gate, up = checkpoint_name(self.gate_proj(x), "mlp_gate"), checkpoint_name(self.up_proj(x), "mlp_up")
    return self.down_proj(jax.nn.silu(gate) * up)


class Block(nnx.Module):
  def __init__(self, cfg: ModelConfig, rngs):
    self.input_layernorm = RMSNorm(cfg.hidden_size, cfg, rngs)
    self.self_attn = Attention(cfg, rngs)
    self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg, rngs)
    self.mlp = MLP(cfg, rngs)

  def __call__(self, x, positions, mask, inv_freq, cache_kv=None, cache_pos=None, segment_ids=None):
    h, kv = self.self_attn(self.input_layernorm(x), positions, mask, inv_freq, cache_kv, cache_pos, segment_ids)
    x = x + h
    x = x + self.mlp(self.post_attention_layernorm(x))
    return x, kv
