"""Causal self-attention over one call's tokens, by one of three implementations (``model.attention``).

    out_BxTxHxD = attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, impl="xla")

q has H heads, k and v K heads (grouped-query attention: H a multiple of K). Query t attends key s when
s <= t (slot order, which left padding keeps) and ``segment_ids[b, t] == segment_ids[b, s]``: padding
carries its own id (0 by convention, real tokens 1), and packed sequences carry 1, 2, ... so that they
never see each other. Every query sees at least itself, so no softmax row is empty. Scores are
scaled by 1/sqrt(D) and normalised in float32; the output has q's dtype.

Implementations:
  "xla"     jax.nn.dot_product_attention(implementation="xla"): materialises the float32 scores
            [B, H, T, T] (the default; the only one that runs natively on CPU).
  "cudnn"   jax.nn.dot_product_attention(implementation="cudnn"): cuDNN's fused flash attention
            (GPU only; bfloat16/float16 inputs); the segment mask is passed as a boolean mask.
  "splash"  Pallas splash attention (jax.experimental.pallas.ops.tpu.splash_attention): block-sparse
            flash attention for TPU, never holding a [T, T] block larger than its tiles. Inside a mesh
            (``jax.set_mesh`` / ``jax.sharding.use_abstract_mesh``) it runs per device through
            ``jax.shard_map``, batch split over ("data", "fsdp") and heads over "tensor" as the rules table
            splits them (one kernel per device, vmapped over its rows). For a TPU mesh the kernel is compiled
            by Mosaic, also when the program is compiled ahead of time on a CPU host (the platform is the
            mesh's: parallel.platform.current()); for a CPU mesh it runs in Pallas interpret mode (tests); on
            GPU it is refused.
            T is padded inside to a multiple of 128 (the kernel's tile) with a segment of its own.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxghpo.models.config import ATTENTION_IMPLEMENTATIONS as IMPLEMENTATIONS
from jaxghpo.parallel import platform
SPLASH_TILE = 128  # the kernel's lane width: T must be a multiple of it
SPLASH_BLOCKS = (512, 256, 128)  # tile sizes tried, the largest dividing the (padded) length wins


def check_impl(impl: str) -> None:
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"model.attention={impl!r} is not one of {IMPLEMENTATIONS}")


def segment_mask(segment_ids_BxT):
  """bool [B, 1, T, T]: True where query t and key s are in the same segment (causality not included)."""
  return (segment_ids_BxT[:, :, None] == segment_ids_BxT[:, None, :])[:, None]


def reference_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT):
  """Plain einsum attention in float32 (the tests' reference): same masking as `attention`."""
  B, T, H, D = q_BxTxHxD.shape
  G = H // k_BxTxKxD.shape[2]
  k = jnp.repeat(k_BxTxKxD, G, axis=2).astype(jnp.float32)
  v = jnp.repeat(v_BxTxKxD, G, axis=2).astype(jnp.float32)
  s = jnp.einsum("bthd,bshd->bhts", q_BxTxHxD.astype(jnp.float32), k) / math.sqrt(D)
  allowed = segment_mask(segment_ids_BxT) & jnp.tril(jnp.ones((T, T), bool))[None, None]
  p = jax.nn.softmax(jnp.where(allowed, s, -jnp.inf), axis=-1)
  return jnp.einsum("bhts,bshd->bthd", p, v).astype(q_BxTxHxD.dtype)


def attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT, *, impl: str = "xla"):
  """[B, T, H, D] causal attention of this call's tokens within their segments (see the module docstring)."""
  check_impl(impl)
  if impl == "splash":
    return splash_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT)
  if impl == "cudnn" and platform.current() != "gpu":
    raise ValueError(f"model.attention='cudnn' needs a GPU (the program is for {platform.current()!r}); "
                     "use 'xla' on CPU or 'splash' on TPU")
  return jax.nn.dot_product_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, mask=segment_mask(segment_ids_BxT),
                                      is_causal=True, implementation=impl)


# ------------------------------------------------------------------------------------------- splash
def _splash_block(length: int) -> int:
  return next(b for b in SPLASH_BLOCKS if length % b == 0)


def _splash_kernel(num_heads: int, length: int):
  """The splash kernel for one sequence of `num_heads` query heads (keys with fewer heads: GQA)."""
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
  backend = platform.current()  # the mesh's devices, not the host's backend: a TPU program compiles on CPU hosts
  if backend not in ("tpu", "cpu"):
    raise ValueError(f"model.attention='splash' is a TPU kernel (interpreted on CPU for tests); on {backend!r} "
                     "use 'cudnn' (GPU) or 'xla'")
  block = _splash_block(length)
  sizes = sk.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block, block_q_dkv=block,
                        block_kv_dkv=block, block_kv_dkv_compute=block, block_q_dq=block, block_kv_dq=block)
  mask = sm.MultiHeadMask([sm.CausalMask((length, length)) for _ in range(num_heads)])
  kernel = sk.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                              interpret=backend != "tpu")
  return kernel, sk.SegmentIds


def _splash_local(q_BxHxTxD, k_BxKxTxD, v_BxKxTxD, seg_BxT):
  """Splash attention of the rows and heads this device holds (arguments already scaled and padded)."""
  kernel, segment_ids = _splash_kernel(q_BxHxTxD.shape[1], q_BxHxTxD.shape[2])
  one = lambda q, k, v, s: kernel(q, k, v, segment_ids=segment_ids(s, s))
  return jax.vmap(one)(q_BxHxTxD, k_BxKxTxD, v_BxKxTxD, seg_BxT)


def _splash_specs(mesh, B: int, H: int, K: int):
  """shard_map specs: rows over ("data", "fsdp") and heads over "tensor" where they divide (as the rules do)."""
  from jax.sharding import PartitionSpec as P
  batch_axes = tuple(a for a in ("data", "fsdp") if a in mesh.axis_names and mesh.shape[a] > 1)
  batch_size = math.prod(mesh.shape[a] for a in batch_axes)
  batch = batch_axes if batch_axes and B % batch_size == 0 else None
  t = mesh.shape.get("tensor", 1)
  heads = "tensor" if t > 1 and H % t == 0 and K % t == 0 else None
  return P(batch, heads, None, None), P(batch, None)


def splash_attention(q_BxTxHxD, k_BxTxKxD, v_BxTxKxD, segment_ids_BxT):
  """`attention` by the Pallas splash kernel, per device under the ambient mesh (see the module docstring)."""
  B, T, H, D = q_BxTxHxD.shape
  K = k_BxTxKxD.shape[2]
  padded = -(-T // SPLASH_TILE) * SPLASH_TILE
  extra = padded - T

  def heads_major(x):  # [B, T, n, D] -> [B, n, padded, D]
    x = x.transpose(0, 2, 1, 3)
    return jnp.pad(x, ((0, 0), (0, 0), (0, extra), (0, 0))) if extra else x

  q = heads_major(q_BxTxHxD * jnp.asarray(1.0 / math.sqrt(D), q_BxTxHxD.dtype))
  k, v = heads_major(k_BxTxKxD), heads_major(v_BxTxKxD)
  seg = segment_ids_BxT.astype(jnp.int32)
  if extra:  # the padding is a segment of its own: it neither sees nor is seen by real tokens
    seg = jnp.pad(seg, ((0, 0), (0, extra)), constant_values=np.iinfo(np.int32).min)
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    out = _splash_local(q, k, v, seg)
  else:
    qspec, segspec = _splash_specs(mesh, B, H, K)
    out = jax.shard_map(_splash_local, mesh=mesh, in_specs=(qspec, qspec, qspec, segspec), out_specs=qspec,
                        check_vma=False)(q, k, v, seg)
  return out[:, :, :T].transpose(0, 2, 1, 3).astype(q_BxTxHxD.dtype)
