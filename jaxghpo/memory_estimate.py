"""The analytic per-device memory of a run (bytes): parameters, optimizer state, gradients, train-step
activations, KV cache. tools/estimate_memory.py prints it (and compares it with XLA's compiled programs);
jaxghpo/memory_check.py checks it against the device's memory at start.

What is counted, per device, in bytes (d, f, t: the mesh's data, fsdp and tensor sizes):
  params      exact: each parameter's shard under parallel.rules (embed -> fsdp; heads, kv_heads, mlp,
              vocab -> tensor; a mapping is dropped where the axis does not divide the dimension).
  optimizer   exact: optax's AdamW state (mu and nu like the params, in the params' dtype) + scalars.
  gradients   params-sized, x2 with config.rl.micro_batches > 1 (the scan's accumulator and the
              micro-batch's gradients are both live).
  train activations, for b = P*G / (d*f) / micro_batches rows of T = max_prompt_len + max_new_tokens
              tokens per device. With config.model.remat = "none" every layer's terms below are live at
              once; with "full" one layer's plus every layer's block input (b T D c); with
              "dots_saveable" one layer's plus every layer's weight-matmul outputs. With
              config.model.attention = "splash" or "cudnn" (flash) the attention term is 0. The logits
              term is one block of rl.logprob_chunk_tokens / (global micro-batch rows) response positions
              (K_LOGITS copies). The terms, as first fitted without remat:
                attention   L * b * H_t * T^2 * (K_SCORES * 4 + c')   float32 scores and softmax
                            (this implementation materialises them) + a compute-dtype copy of the
                            probabilities (c' = compute bytes, 0 when computing in float32)
                mlp         L * b * T * F_t * K_MLP * c             gate, up, silu, product, backward
                hidden      L * b * T * D * K_HIDDEN * 4            residual stream and float32 norms
                qkv         L * b * T * (H_t + 2 KV_t) * hd * K_QKV * c
                logits      b * V_t * 4 * (K_LOGITS * T + K_LOGITS * N)   float32 logits of the whole
                            sequence and of the response slice, and their gradients
                gathered    with fsdp > 1: every layer's weights all-gathered in the compute dtype
                            (L * layer params / t * c), kept for the backward pass
              where H_t, KV_t, F_t, V_t are heads, KV heads, MLP width and vocabulary divided by t when
              t divides them, and c the compute dtype's bytes.
  KV cache    exact: 2 * L * R * S * KV_t * hd * cache bytes, R = P*G rows / (d*f), S = prompt + new
              tokens slots (the sampler's cache layout; evaluation samplers with longer sizes are
              counted too, the larger wins).
  sampler activations: prefill of B = P/(d*f) prompts: float32 logits [B, P, V_t] + one layer's float32
              attention scores [B, H_t, P, P] x K_PREFILL_SCORES + the prompts' own cache (2 L B P KV_t hd c);
              added to the KV cache this is an upper bound (XLA frees some prefill buffers before the
              decode loop); decode temporaries ([R, V] logits) are small.

The K constants were fitted to XLA's buffer assignment on CPU (compiled.memory_analysis().temp_size of
the train step over a grid of small models: layers, length, rows, width, heads, vocabulary, bfloat16,
micro-batches, all within 12%; configs/default.py with 1 micro-batch: 1.19 GB measured, 1.24 GB estimated (it
now trains in 4: 324 MB estimated); configs/smoke.py:
112 MB and 116 MB; tests/test_estimate_memory.py checks two shapes within 30%). At full
scale, compiling (not running) the train step of configs/qwen25_math_7b_ghpo.py on 32 fake CPU devices
with mesh (1, 8, 4) gave 60.8 GB of temporaries + 2.9 GB of arguments per device against 64.1 + 2.9 GB
estimated, but only with the residual stream constrained to batch sharding (see below). Not measured
on TPU, whose XLA backend fuses more: the attention term there is probably an over-estimate. A run
also needs the compiled programs and XLA's scratch: keep ~10% of the device's memory free.

FSDP caveat: the model sets no sharding constraint on its activations, and with fsdp > 1 XLA's
partitioner then gathers some of them over the batch (the embedding table's "embed" dim is
fsdp-sharded, so the residual stream can come out sharded on the model dim instead of the batch).
Measured on CPU for the 7B config at 2 and 4 layers: 8.7 GB more temporaries per device than with the
residual stream constrained to batch sharding (the same at both depths: the logits and their inputs
are gathered, f32 [8, 4096, V/4]), and redundant logits work. This estimate assumes the batch-sharded
layout (jax.lax.with_sharding_constraint on the residual stream in the model).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from flax import nnx

from jaxghpo import derived, models, parallel, rl
from jaxghpo.rl import losses as rl_losses

# Live copies per element, fitted to XLA's buffer assignment on CPU (see the module docstring).
K_SCORES = 2.75     # float32 [b, H, T, T]: scores, probabilities, masked/transposed copies
K_MLP = 6.5         # [b, T, F] in compute dtype: gate, up, silu, product and their backward temporaries
K_HIDDEN = 4.0      # float32 [b, T, D]: residual stream, norm inputs and outputs
K_QKV = 2.5         # [b, T, (H + 2 KV) hd] in compute dtype: rotated q and k, v, attention output
K_LOGITS = 4.0      # float32 [b, C, V] logits of one block of C response positions: values, softmax, gradients
K_PREFILL_SCORES = 1.5  # float32 prefill scores [B, H, P, P] of one layer

# XLA:TPU (libtpu, tools/compile_tpu.py; BENCHMARKS.md "XLA:TPU"), calibrated on three compiles, not a model
# validated beyond them: configs/smoke.py (remat none, v5p-8: 25.3 MB), the 7B config with dots_saveable
# (8 x 4096 tokens per device: 60.35 GB) and with qkv_context (16 x 4096: 38.32 GB). One layer's working set
# (the attention, mlp, hidden and qkv terms) is x TPU_WORKING_SET[remat] of XLA:CPU's: XLA:TPU fuses more,
# except where the backward recomputes the MLP (qkv_context). Under dots_saveable XLA:TPU also keeps, per layer
# and token, the block's input (c bytes x D: the checkpoint's argument, not a dot) and the o and down
# projections' outputs in float32 (2 x 2 more bytes x D): TPU_DOTS_EXTRA_BYTES + c bytes per element of
# [b, T, D] (the 7B step's per-layer growth, 1.95 GB a layer, against the dots' 1.17 GB).
TPU_WORKING_SET = {"none": 0.65, "full": 0.65, "dots_saveable": 0.65, "qkv_context": 1.5,
                   "qkv_context_offload_mlp": 1.5}
TPU_DOTS_EXTRA_BYTES = 4
PLATFORMS = ("cpu", "tpu")

GB = 1e9


@dataclasses.dataclass
class MemoryEstimate:
  """Bytes per device; the train step and the sampler run one after the other, never together."""
  mesh_shape: tuple
  num_params: int
  params: int
  optimizer: int
  gradients: int
  train_activations: int
  train_parts: dict            # name -> bytes (the terms of train_activations)
  train_rows_per_device: int   # b: rows of one micro-batch on one device
  seq_len: int                 # T of the train step
  kv_cache: int
  sampler_activations: int
  sampler_parts: dict
  sampler_sizes: tuple         # (prompts, samples, prompt slots, new-token slots, "training"|"eval"): the largest

  @property
  def persistent(self) -> int:
    return self.params + self.optimizer

  @property
  def train_total(self) -> int:
    return self.persistent + self.gradients + self.train_activations

  @property
  def sampler_total(self) -> int:
    return self.persistent + self.kv_cache + self.sampler_activations

  @property
  def total(self) -> int:
    return max(self.train_total, self.sampler_total)


# ------------------------------------------------------------------------------------------- pieces
def abstract_mesh(mesh_shape) -> jax.sharding.AbstractMesh:
  """A device-free mesh of the given (data, fsdp, tensor) sizes: shardings without devices."""
  return jax.sharding.AbstractMesh(tuple(int(s) for s in mesh_shape), parallel.MESH_AXES)


def _shard_bytes(shape, dtype, sharding) -> int:
  return int(np.prod(sharding.shard_shape(tuple(shape)), dtype=np.int64)) * np.dtype(dtype).itemsize


def abstract_params(model_cfg: models.ModelConfig, mesh_shape):
  """(abstract params with their NamedShardings on an abstract mesh, shardings)."""
  mesh = abstract_mesh(mesh_shape)
  _, state = nnx.split(models.abstract_model(model_cfg))
  shardings = parallel.param_shardings(state, mesh)
  params = jax.tree.map(lambda s, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shardings, state)
  return params, shardings, mesh


def param_bytes_per_device(model_cfg: models.ModelConfig, mesh_shape) -> int:
  """Exact bytes of this device's shards of every parameter."""
  params, _, _ = abstract_params(model_cfg, mesh_shape)
  return sum(_shard_bytes(x.shape, x.dtype, x.sharding) for x in jax.tree.leaves(params))


def optimizer_bytes_per_device(model_cfg: models.ModelConfig, rl_cfg, mesh_shape, total_steps: int = 1) -> int:
  """Exact bytes of this device's shards of the optimizer state (rl.make_optimizer, rl.optimizer_shardings)."""
  params, shardings, mesh = abstract_params(model_cfg, mesh_shape)
  optimizer = rl.make_optimizer(rl_cfg, max(int(total_steps), 1))
  state = jax.eval_shape(optimizer.init, params)
  opt_shardings = rl.optimizer_shardings(optimizer, params, shardings, mesh)
  return sum(_shard_bytes(x.shape, x.dtype, s)
             for x, s in zip(jax.tree.leaves(state), jax.tree.leaves(opt_shardings)))


def _divided(n: int, by: int) -> int:
  """n / by when `by` divides n (the rules table drops a mapping that does not divide)."""
  return n // by if by > 1 and n % by == 0 else n


def _rows_per_device(rows: int, batch_shards: int) -> int:
  return _divided(rows, batch_shards)


def kv_cache_bytes_per_device(model_cfg: models.ModelConfig, rows: int, slots: int, mesh_shape,
                              cache_dtype=None) -> int:
  """Exact bytes of the sampler's KV cache shard: k and v per layer, [R, S, KV, hd]."""
  d, f, t = mesh_shape
  dtype = np.dtype(cache_dtype or model_cfg.compute_dtype)
  per_row_slot = model_cfg.num_kv_heads * model_cfg.head_dim
  if model_cfg.num_kv_heads % t == 0:
    per_row_slot //= t
  return 2 * model_cfg.num_layers * _rows_per_device(rows, d * f) * slots * per_row_slot * dtype.itemsize


def _local_dims(model_cfg: models.ModelConfig, t: int):
  heads_split = model_cfg.num_kv_heads % t == 0 and model_cfg.num_heads % t == 0
  H = model_cfg.num_heads // t if heads_split else model_cfg.num_heads
  KV = model_cfg.num_kv_heads // t if heads_split else model_cfg.num_kv_heads
  return H, KV, _divided(model_cfg.intermediate_size, t), _divided(model_cfg.vocab_size, t)


def layer_param_count(model_cfg: models.ModelConfig) -> int:
  embeds = model_cfg.vocab_size * model_cfg.hidden_size * (1 if model_cfg.tie_word_embeddings else 2)
  return (model_cfg.num_params() - embeds - model_cfg.hidden_size) // model_cfg.num_layers


def train_activation_parts(model_cfg: models.ModelConfig, rows: int, prompt_len: int, new_tokens: int,
                           mesh_shape, logprob_chunk_tokens: int = 0, global_rows: int | None = None,
                           platform: str = "cpu") -> dict:
  """The train step's activation terms (bytes per device) for `rows` rows of one micro-batch on one device.

  model_cfg.attention: "xla" materialises [H, T, T] float32 scores; "splash"/"cudnn" (flash) do not.
  model_cfg.remat: "none" keeps every layer's activations for the backward pass; "dots_saveable" keeps
  the weight matmuls' outputs of every layer and one layer's rest; "full" keeps each layer's input and
  one layer's activations (recomputed in the backward pass, one layer at a time).
  logprob_chunk_tokens / global_rows: the LM head runs on blocks of chunk / global_rows positions of the
  response (rl.token_logprobs), all N at once when 0. platform: whose compiler's constants ("cpu" | "tpu").
  """
  if platform not in PLATFORMS:
    raise ValueError(f"platform={platform!r} is not one of {PLATFORMS}")
  d, f, t = mesh_shape
  b, T, N = rows, prompt_len + new_tokens, new_tokens
  c = np.dtype(model_cfg.compute_dtype).itemsize
  H, KV, F, V = _local_dims(model_cfg, t)
  L, D, hd = model_cfg.num_layers, model_cfg.hidden_size, model_cfg.head_dim
  probs_copy = c if c != 4 else 0
  fused = model_cfg.attention in ("splash", "cudnn")
  per_layer = {
      "attention": 0 if fused else b * H * T * T * (K_SCORES * 4 + probs_copy),
      "mlp": b * T * F * K_MLP * c,
      "hidden": b * T * D * K_HIDDEN * 4,
      "qkv": b * T * (H + 2 * KV) * hd * K_QKV * c,
  }
  remat = model_cfg.remat
  layers_live = L if remat == "none" else 1  # layers whose whole activations are live at once
  working = TPU_WORKING_SET[model_cfg.remat] if platform == "tpu" else 1.0
  parts = {k: layers_live * v * working for k, v in per_layer.items()}
  if remat == "full":
    parts["saved block inputs"] = L * b * T * D * c
  elif remat == "dots_saveable":  # q, k, v, o, gate, up, down outputs of every layer
    parts["saved matmul outputs"] = L * b * T * ((H + 2 * KV) * hd + 2 * F + 2 * D) * c
  elif remat in ("qkv_context", "qkv_context_offload_mlp"):  # q, k, v, attention's output, the block input
    parts["saved q, k, v, context, inputs"] = L * b * T * ((H + 2 * KV) * hd + H * hd + D) * c
  if platform == "tpu" and remat == "dots_saveable":
    parts["block inputs, o/down in float32 (XLA:TPU)"] = L * b * T * D * (TPU_DOTS_EXTRA_BYTES + c)
  cols = rl_losses.chunk_columns(global_rows or b, N, logprob_chunk_tokens)
  parts["logits"] = b * cols * V * 4 * K_LOGITS
  if f > 1:
    parts["gathered weights"] = (L if remat == "none" else 2) * layer_param_count(model_cfg) / t * c
  return {k: int(v) for k, v in parts.items()}


def sampler_activation_parts(model_cfg: models.ModelConfig, prompts: int, prompt_len: int, mesh_shape) -> dict:
  """The sampler's prefill temporaries (bytes per device) for `prompts` prompts (the whole batch)."""
  d, f, t = mesh_shape
  B = _rows_per_device(prompts, d * f)
  H, KV, F, V = _local_dims(model_cfg, t)
  c = np.dtype(model_cfg.compute_dtype).itemsize
  fused = model_cfg.attention in ("splash", "cudnn")
  parts = {
      "prefill logits": B * V * 4,  # the last position's only
      "prefill scores": 0 if fused else B * H * prompt_len * prompt_len * 4 * K_PREFILL_SCORES,
      "prompt cache": 2 * model_cfg.num_layers * B * prompt_len * KV * model_cfg.head_dim * c,
  }
  if f > 1:
    parts["gathered weights"] = layer_param_count(model_cfg) / t * c  # one layer at a time
  return {k: int(v) for k, v in parts.items()}


def _sampler_sizes(config) -> list[tuple]:
  """(prompts, samples, prompt slots, new slots, name) of the trainer's largest training and eval samplers."""
  P, G = int(config.data.prompts_per_step), int(config.rollout.group_size)
  train = (P, G, int(config.rollout.max_prompt_len), int(config.rollout.max_new_tokens), "training")
  ev = config.get("eval", {})
  eval_prompt = int(ev.get("max_prompt_len", 0) or 0) or train[2]
  eval_new = int(ev.get("max_new_tokens", 0) or 0) or train[3]
  return [train, (P, G, eval_prompt, eval_new, "eval")]


# ------------------------------------------------------------------------------------------ estimate
def resolve_mesh_shape(config, mesh=None, num_devices: int | None = None) -> tuple[int, int, int]:
  shape = tuple(int(x) for x in (mesh if mesh is not None else config.mesh.shape))
  if -1 in shape:
    if num_devices is None:
      raise ValueError(f"mesh shape {shape} has a -1 entry: pass --num_devices (or --mesh=d,f,t) to size it")
    return parallel.validate_mesh_shape(shape, int(num_devices))
  return parallel.validate_mesh_shape(shape, math.prod(shape))


def run_model_config(config, model_cfg: models.ModelConfig) -> models.ModelConfig:
  """`model_cfg` as the trainer runs it: config.model's dtypes, attention and remat."""
  return model_cfg.replace(dtype=config.model.dtype, param_dtype=config.model.param_dtype,
                           attention=config.model.get("attention", "xla"), remat=config.model.get("remat", "none"))


def estimate(config, model_cfg: models.ModelConfig, mesh_shape, platform: str = "cpu") -> MemoryEstimate:
  """Per-device memory of `config` with `model_cfg` (dtypes as the trainer loads it) on `mesh_shape`, with the
  constants of `platform`'s compiler ("cpu": fitted to XLA:CPU; "tpu": to XLA:TPU)."""
  model_cfg = run_model_config(config, model_cfg)
  mesh_shape = tuple(int(x) for x in mesh_shape)
  d, f, t = mesh_shape
  rl_cfg = derived.rl_config(config)
  P, G = int(config.data.prompts_per_step), int(config.rollout.group_size)
  M = int(rl_cfg.micro_batches)
  rows = _rows_per_device(P * G, d * f)
  if rows % M:
    raise ValueError(f"{rows} rows per device are not divisible by config.rl.micro_batches={M}")
  b = rows // M
  prompt_len, new_tokens = int(config.rollout.max_prompt_len), int(config.rollout.max_new_tokens)

  params = param_bytes_per_device(model_cfg, mesh_shape)
  optimizer = optimizer_bytes_per_device(model_cfg, rl_cfg, mesh_shape,
                                         int(config.num_steps) * int(rl_cfg.ppo_epochs))
  gradients = params * (2 if M > 1 else 1)
  train_parts = train_activation_parts(model_cfg, b, prompt_len, new_tokens, mesh_shape,
                                       int(rl_cfg.logprob_chunk_tokens), P * G // M, platform)

  best = None
  for sizes in _sampler_sizes(config):
    prompts, samples, slots_p, slots_n, _ = sizes
    kv = kv_cache_bytes_per_device(model_cfg, prompts * samples, slots_p + slots_n, mesh_shape)
    parts = sampler_activation_parts(model_cfg, prompts, slots_p, mesh_shape)
    if best is None or kv + sum(parts.values()) > best[1] + sum(best[2].values()):
      best = (sizes, kv, parts)
  sizes, kv, sampler_parts = best
  return MemoryEstimate(mesh_shape=mesh_shape, num_params=model_cfg.num_params(), params=params,
                        optimizer=optimizer, gradients=gradients, train_activations=sum(train_parts.values()),
                        train_parts=train_parts, train_rows_per_device=b, seq_len=prompt_len + new_tokens,
                        kv_cache=kv, sampler_activations=sum(sampler_parts.values()), sampler_parts=sampler_parts,
                        sampler_sizes=sizes)
