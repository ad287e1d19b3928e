"""The decoder-only transformer (Qwen2/2.5, Qwen3, Llama 3) in flax.nnx, with an optional KV cache."""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxghpo.models.config import ModelConfig
from jaxghpo.models.layers import Block, RMSNorm, matmul_2d, param, rope_inv_freq


@struct.dataclass
class KVCache:
  """Per-layer keys [B, num_kv_heads, head_dim, S] and values [B, num_kv_heads, S, head_dim]; S = cache slots.

  Keys are stored transposed so that both attention products are plain batched matmuls: q @ k is
  [G, hd] x [hd, S] and probs @ v is [G, S] x [S, hd]. With keys as [S, hd] the decode step's q @ k^T
  ran 3x slower on XLA:CPU (the dot library takes a transposed right operand on a slow path).
  """
  k: tuple
  v: tuple

  @classmethod
  def zeros(cls, cfg: ModelConfig, batch: int, slots: int, dtype=None) -> "KVCache":
    dtype = dtype or cfg.compute_dtype
    k_shape = (batch, cfg.num_kv_heads, cfg.head_dim, slots)
    v_shape = (batch, cfg.num_kv_heads, slots, cfg.head_dim)
    return cls(k=tuple(jnp.zeros(k_shape, dtype) for _ in range(cfg.num_layers)),
               v=tuple(jnp.zeros(v_shape, dtype) for _ in range(cfg.num_layers)))


def constrain_batch(x):
  """Shards activations' batch axis over ("data", "fsdp") when a mesh is set (``jax.set_mesh``).

  Without it XLA may gather FSDP activations (and the logits) over the batch: measured +8.7 GB per
  device for the 7B config. A no-op without a mesh, or when the batch does not divide.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or not {"data", "fsdp"} <= set(mesh.axis_names):
    return x
  shards = mesh.shape["data"] * mesh.shape["fsdp"]
  if shards == 1 or x.shape[0] % shards:
    return x
  return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(("data", "fsdp")))


class Transformer(nnx.Module):
  """tokens -> logits. Parameter names follow transformers' so that import/export is a name map."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs | None):
    self.cfg = cfg
    self.embed_tokens = param(rngs, nnx.initializers.normal(0.02), (cfg.vocab_size, cfg.hidden_size),
                              cfg.storage_dtype, ("vocab", "embed"))
    self.layers = nnx.List([Block(cfg, rngs) for _ in range(cfg.num_layers)])
    self.norm = RMSNorm(cfg.hidden_size, cfg, rngs)
    if cfg.tie_word_embeddings:
      self.lm_head = None
    else:
      self.lm_head = param(rngs, nnx.initializers.normal(0.02), (cfg.hidden_size, cfg.vocab_size),
                           cfg.storage_dtype, ("embed", "vocab"))

  def __call__(self, tokens_BxT, positions_BxT, mask_BxTxS, cache: KVCache | None = None, cache_pos=None):
    """Returns (logits float32 [B, T, V], updated cache or None).

    positions_BxT: RoPE positions of the tokens (left padding makes them differ from slot indices).
    mask_BxTxS: bool, True where query t may attend key slot s (S = T without a cache, cache slots with one).
    cache/cache_pos: write this call's keys/values at slots [cache_pos, cache_pos + T) of ``cache``.
    """
    cfg = self.cfg
    inv_freq = rope_inv_freq(cfg)
    x = constrain_batch(jnp.take(self.embed_tokens[...], tokens_BxT, axis=0).astype(cfg.compute_dtype))
    new_k, new_v = [], []
    for i, block in enumerate(self.layers):
      kv = None if cache is None else (cache.k[i], cache.v[i])
      x, (k, v) = block(x, positions_BxT, mask_BxTxS, inv_freq, kv, cache_pos)
      x = constrain_batch(x)
      new_k.append(k)
      new_v.append(v)
    x = self.norm(x)
    head = self.embed_tokens[...].T if self.lm_head is None else self.lm_head[...]
    logits = matmul_2d(x, head.astype(cfg.compute_dtype)).astype(jnp.float32)
    new_cache = None if cache is None else KVCache(k=tuple(new_k), v=tuple(new_v))
    return logits, new_cache


def causal_mask(valid_BxT):
  """bool [B, T, T]: causal, and keys restricted to valid (non-pad) tokens."""
  T = valid_BxT.shape[1]
  causal = jnp.tril(jnp.ones((T, T), dtype=bool))
  return causal[None] & valid_BxT[:, None, :].astype(bool)


def positions_from_valid(valid_BxT):
  """RoPE positions for a left-padded (or right-padded) batch: 0 at the first valid token."""
  return jnp.maximum(jnp.cumsum(valid_BxT.astype(jnp.int32), axis=1) - 1, 0)


def logits(model: Transformer, tokens_BxT):
  """float32 [B, T, V] logits of an unpadded causal batch (docs/DESIGN.md contract)."""
  tokens_BxT = jnp.asarray(tokens_BxT, jnp.int32)
  B, T = tokens_BxT.shape
  positions = jnp.broadcast_to(jnp.arange(T, dtype=jnp.int32), (B, T))
  out, _ = model(tokens_BxT, positions, causal_mask(jnp.ones((B, T), bool)))
  return out


def logits_padded(model: Transformer, tokens_BxT, valid_BxT):
  """float32 [B, T, V] logits of a padded batch: pads are neither attended to nor counted in positions."""
  out, _ = model(tokens_BxT, positions_from_valid(valid_BxT), causal_mask(valid_BxT))
  return out


def init_model(cfg: ModelConfig, seed: int = 0) -> Transformer:
  """A randomly initialised model (normal(0.02) weights, unit norms), unsharded."""
  return Transformer(cfg, rngs=nnx.Rngs(seed))


def abstract_model(cfg: ModelConfig) -> Transformer:
  """The model's structure with ShapeDtypeStruct leaves: no weights are materialised."""
  # jax.eval_shape rather than nnx.eval_shape: the latter would read the logical axis names as mesh
  # axes when a mesh is set; placement is the job of parallel.param_shardings.
  graphdef = None

  def build():
    nonlocal graphdef
    graphdef, state = nnx.split(Transformer(cfg, rngs=None))
    return state

  state = jax.eval_shape(build)
  return nnx.merge(graphdef, state)
