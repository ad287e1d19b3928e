"""The decoder-only transformer (Qwen2/2.5, Qwen3, Llama 3) in flax.nnx, with an optional KV cache."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, struct

from jaxghpo.models.config import ModelConfig
from jaxghpo.models.layers import Block, RMSNorm, matmul_2d, param, rope_inv_freq
from jaxghpo.parallel import platform


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

  def __call__(self, tokens_BxT, positions_BxT, mask_BxTxS=None, cache: KVCache | None = None, cache_pos=None,
               *, segment_ids_BxT=None):
    """Returns (logits float32 [B, T, V], updated cache or None).

    positions_BxT: RoPE positions of the tokens (left padding makes them differ from slot indices).
    Who attends to whom, one of:
      segment_ids_BxT: int [B, T]; causal attention among this call's tokens of the same segment through
        models.attention with cfg.attention (padding: a segment of its own, e.g. 0; a prefill or a
        training forward; earlier cache slots are not read).
      mask_BxTxS: bool, True where query t may attend key slot s (S = T without a cache, cache slots with
        one): the plain einsum path of a decode step.
    cache/cache_pos: write this call's keys/values at slots [cache_pos, cache_pos + T) of ``cache``.
    """
    x, new_cache = self.hidden_states(tokens_BxT, positions_BxT, mask_BxTxS, cache, cache_pos,
                                      segment_ids_BxT=segment_ids_BxT)
    return self.project(x), new_cache

  def hidden_states(self, tokens_BxT, positions_BxT, mask_BxTxS=None, cache: KVCache | None = None,
                    cache_pos=None, *, segment_ids_BxT=None):
    """(final-norm hidden states [B, T, D] in the compute dtype, updated cache or None); arguments as __call__.

    Without a cache each block runs under cfg.remat's policy (nnx.remat), so the backward pass keeps
    only what the policy saves and recomputes the rest.
    """
    cfg = self.cfg
    if (mask_BxTxS is None) == (segment_ids_BxT is None):
      raise ValueError("Transformer: pass exactly one of mask_BxTxS (decode over a cache) and segment_ids_BxT "
                       "(causal attention within segments)")
    inv_freq = rope_inv_freq(cfg)
    x = constrain_batch(jnp.take(self.embed_tokens[...], tokens_BxT, axis=0).astype(cfg.compute_dtype))
    new_k, new_v = [], []
    policy = remat_policy(cfg.remat)
    if cache is None and policy is not None:
      for block in self.layers:
        x = constrain_batch(remat_block(block, policy, x, positions_BxT, mask_BxTxS, inv_freq, segment_ids_BxT))
      return self.norm(x), None
    for i, block in enumerate(self.layers):
      kv = None if cache is None else (cache.k[i], cache.v[i])
      x, (k, v) = block(x, positions_BxT, mask_BxTxS, inv_freq, kv, cache_pos, segment_ids=segment_ids_BxT)
      x = constrain_batch(x)
      new_k.append(k)
      new_v.append(v)
    new_cache = None if cache is None else KVCache(k=tuple(new_k), v=tuple(new_v))
    return self.norm(x), new_cache

  def head(self):
    """The LM head [D, V] in the compute dtype (the tied embeddings transposed, or lm_head)."""
    head = self.embed_tokens[...].T if self.lm_head is None else self.lm_head[...]
    return head.astype(self.cfg.compute_dtype)

  def project(self, x_BxTxD):
    """float32 logits [B, T, V] of hidden states."""
    return matmul_2d(x_BxTxD, self.head()).astype(jnp.float32)


def remat_block(block, policy, x, positions, mask, inv_freq, segment_ids):
  """block(x, ...)'s output under jax.checkpoint(policy): the backward pass recomputes what the policy did
  not save, in this block's turn only (`recompute_after_cotangent`).

  Why the ordering: nothing else ties a block's backward work to its place in the backward pass. XLA:CPU's
  sequential scheduler ran the activation-gradient chain through every layer first and every layer's
  weight-gradient dots afterwards, so all layers' recomputed activations were live at once: the
  Qwen2.5-0.5B-shaped update (16 rows x 560 tokens, remat full, one micro-batch) compiled to 34.0 GB of
  temporaries, 1.2 GB more per layer; 4.85 GB with the ordering and the step's lax.cond skip
  (tools/bench_update_memory.py; BENCHMARKS.md).
  """
  graphdef, state = nnx.split(block)

  def run(state, x, consts):
    positions, mask, inv_freq, segment_ids = consts
    return nnx.merge(graphdef, state)(x, positions, mask, inv_freq, segment_ids=segment_ids)[0]

  fn = jax.checkpoint(run, policy=policy, prevent_cse=True)
  return recompute_after_cotangent(fn)(state, x, (positions, mask, inv_freq, segment_ids))


def _zero_cotangent(x):
  """The cotangent of an input that has none: float0 zeros for integer/bool arrays, zeros otherwise."""
  if x is None:
    return None
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.inexact):
    return jnp.zeros_like(x)
  return np.zeros(x.shape, jax.dtypes.float0)


def recompute_after_cotangent(fn):
  """fn(params, x, consts) -> out with the same value and gradients (w.r.t. params and x; consts get none),
  whose backward work happens in its turn: it starts once the cotangent of `out` exists, and the cotangent
  it passes down exists only once its params' gradients do.

  fn is normally jax.checkpoint'ed: its pullback then recomputes the unsaved activations. The forward saves
  the pullback's residuals (what the policy keeps: the block's input, and the matmuls' outputs under
  dots_saveable). The backward (1) makes every residual other than the params depend on the incoming
  cotangent, so no recomputation is hoisted ahead of its layer, and (2) makes the outgoing input cotangent
  depend on the weight gradients, so the layer below waits for this layer's weight-gradient dots and
  their operands (recomputed activations) die in this layer's turn. (2) is what lowered XLA:CPU's peak;
  (1) alone changed nothing there but keeps a scheduler from hoisting recomputations. Both go through
  `in_turn`: on CPU an exact 0 computed from the arrays waited for (`cotangent_token`), because XLA:CPU
  deletes optimization barriers (OptimizationBarrierExpander) before it schedules, and on TPU (where a barrier cost
  11.5 GB per device on the 7B step: order_by_data); elsewhere an
  optimization_barrier (a token from a sharded array would cost a collective per layer).
  """
  is_param = []  # per pullback residual leaf: one of the params (set when fwd is traced)

  @jax.custom_vjp
  def wrapped(params, x, consts):
    return fn(params, x, consts)

  def fwd(params, x, consts):
    out, pullback = jax.vjp(lambda p, h: fn(p, h, consts), params, x)
    param_ids = {id(leaf) for leaf in jax.tree.leaves(params)}
    is_param[:] = [id(leaf) in param_ids for leaf in jax.tree.leaves(pullback)]
    return out, (pullback, consts)

  def bwd(res, g):
    pullback, consts = res
    leaves, treedef = jax.tree.flatten(pullback)
    saved = in_turn([leaf for leaf, param in zip(leaves, is_param) if not param], g)
    leaves = [leaf if param else saved.pop(0) for leaf, param in zip(leaves, is_param)]
    d_params, d_x = jax.tree.unflatten(treedef, leaves)(g)
    d_x = in_turn(d_x, d_params)  # the layer below starts once this layer's weight gradients exist
    return d_params, d_x, jax.tree.map(_zero_cotangent, consts)

  wrapped.defvjp(fwd, bwd)
  return wrapped


def order_by_data() -> bool:
  """True on CPU and TPU: `in_turn` orders by a data dependency there; elsewhere (GPU, not measured) an
  optimization_barrier, which needs no collective for sharded arrays.

  XLA:CPU drops optimization barriers before scheduling. On XLA:TPU the barrier is kept but costs memory:
  the 7B step of configs/qwen25_math_7b_ghpo.py compiled for v5p-64 to 71.89 GB per device with barriers
  and 60.35 GB with the data dependency (BENCHMARKS.md, XLA:TPU). The dependency's token reads one element
  of a sharded cotangent: a scalar collective per layer and micro-batch."""
  return platform.current() in ("cpu", "tpu")


def in_turn(values, deps):
  """`values` unchanged, but available only once every array of `deps` exists."""
  if order_by_data():
    token = sum(cotangent_token(d) for d in jax.tree.leaves(deps))
    return jax.tree.map(lambda v: after(v, token), values)
  values, _ = jax.lax.optimization_barrier((values, deps))
  return values


def cotangent_token(g):
  """A float32 scalar 0 computed from one element of `g`: a data dependency on g that XLA cannot fold away
  (0 * v is not simplified for floats); exactly 0 even when g is NaN or inf."""
  g0 = g.reshape(-1)[0].astype(jnp.float32)
  return 0.0 * jnp.where(jnp.abs(g0) < 1.0, g0, 0.0)


def after(x, token):
  """x unchanged (x + 0), but computed only once `token` exists; non-float arrays are returned as they are."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.inexact):
    return x
  return x + token.astype(x.dtype)


def remat_policy(name: str):
  """The jax.checkpoint policy of ModelConfig.remat, or None for no rematerialisation.

  "dots_saveable" saves the matmuls without batch dimensions: every weight projection (q, k, v, o,
  gate, up, down: flattened to 2-D by matmul_2d) but not the attention products, whose [T, T] scores
  are the largest activations; "full" saves nothing inside a block (only its input is kept).
  "qkv_context" saves what attention needs and what it made, by name (models/layers.py): the rotated
  q, k, v ("qkv") and attention's output ("context"), so the backward pass recomputes the norms and the
  MLP's gate and up projections, never the attention itself; per token and layer it keeps
  (H + 2 KV) hd + H hd values against dots_saveable's (H + 2 KV) hd + 2 F + 2 D (Qwen2.5-7B: 8,192
  against 49,664 before the tensor split). "qkv_context_offload_mlp" keeps the same on the device and
  moves the MLP's gate and up outputs to host memory (pinned_host) instead of recomputing them.
  """
  names = jax.checkpoint_policies
  policies = {"none": None, "dots_saveable": names.dots_with_no_batch_dims_saveable,
              "full": names.nothing_saveable,
              "qkv_context": names.save_only_these_names("qkv", "context"),
              "qkv_context_offload_mlp": names.save_and_offload_only_these_names(
                  names_which_can_be_saved=["qkv", "context"], names_which_can_be_offloaded=["mlp_gate", "mlp_up"],
                  offload_src="device", offload_dst="pinned_host")}
  if name not in policies:
    raise ValueError(f"config.model.remat={name!r} is not one of {tuple(policies)}")
  return policies[name]


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
  out, _ = model(tokens_BxT, positions, segment_ids_BxT=jnp.ones((B, T), jnp.int32))
  return out


def padding_segments(valid_BxT):
  """int32 [B, T] segment ids of a padded batch: 1 for real tokens, 0 for padding (its own segment)."""
  return jnp.asarray(valid_BxT).astype(jnp.int32)


def logits_padded(model: Transformer, tokens_BxT, valid_BxT):
  """float32 [B, T, V] logits of a padded batch: pads are neither attended to nor counted in positions.

  Logits at pad positions are meaningless (pads attend only to pads)."""
  out, _ = model(tokens_BxT, positions_from_valid(valid_BxT), segment_ids_BxT=padding_segments(valid_BxT))
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
