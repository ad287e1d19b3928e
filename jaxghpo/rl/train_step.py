"""The sharded functional train step: (params, opt_state, batch, rng) -> (params, opt_state, metrics).

    optimizer = rl.make_optimizer(cfg, total_steps)          # AdamW, warm-up + cosine, clip by global norm
    graphdef, params = nnx.split(parallel.shard_model(model, mesh))
    shardings = parallel.param_shardings(params, mesh)
    opt_state = rl.init_opt_state(optimizer, params, shardings, mesh)
    step = rl.make_train_step(graphdef, cfg, mesh, optimizer, shardings)
    params, opt_state, metrics = step(params, opt_state, batch, rng)   # params/opt_state are donated
    ref_logp = rl.make_logprob_fn(graphdef, cfg, mesh, shardings)(ref_params, batch)   # when kl_coef != 0

Inside one step, for each of cfg.ppo_epochs updates: the policy's logprobs are recomputed from the
logits of the padded batch at the sampling temperature, the batch is cut into cfg.micro_batches
micro-batches (gradients accumulated in a lax.scan against the whole batch's loss denominators, so
the result equals the unsplit batch), and the update is applied only when the loss, every gradient,
and the params and optimizer state it would produce are finite (otherwise params and optimizer state
stay as they were and `skipped_updates` counts it; `skipped_nonfinite_params` counts the ones whose
gradient was finite but whose update was not, e.g. weight decay at a huge learning rate).

Placement: pass params placed by `param_shardings` (as shard_model or jax.device_put(params, shardings)
leave them; arrays placed otherwise make jit compile again). The step's outputs keep that placement.
With several JAX processes the batch must be a global jax.Array (jax.make_array_from_process_local_data
with parallel.batch_sharding); in one process numpy arrays are placed by the step itself.
"""
from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxghpo import models, parallel
from jaxghpo.parallel import platform
from jaxghpo.rl.batch import PAD, RLBatch
from jaxghpo.rl.losses import finalize, loss_counts, policy_loss_terms, token_logprobs, weighted_loss


# ----------------------------------------------------------------------------------------- logprobs
def sequence_logprobs(model, tokens_BxT, segment_ids_BxT, prompt_len: int, temperature: float,
                      chunk_tokens: int = 0):
  """Per-token logprobs and entropies of a padded batch under `model` at `temperature`.

  Returns (logp_BxT, entropy_BxT), float32, aligned like RLBatch.old_logp: [:, t] is about token t
  (log_softmax(logits[:, t - 1] / temperature)[tokens[:, t]]; the entropy of that distribution).
  Only columns t >= max(prompt_len, 1) are computed (the response region); the rest are 0. The LM head
  runs on the response positions only, in blocks of about chunk_tokens tokens (rl.token_logprobs;
  config.rl.logprob_chunk_tokens, 0 = all at once), so no [B, T, V] float32 logits exist.
  """
  B, T = tokens_BxT.shape
  valid_BxT = segment_ids_BxT != PAD
  hidden_BxTxD, _ = model.hidden_states(tokens_BxT, models.positions_from_valid(valid_BxT),
                                        segment_ids_BxT=models.padding_segments(valid_BxT))
  start = max(prompt_len - 1, 0)  # the hidden state at `start` predicts the first response token
  logp_BxN, entropy_BxN = token_logprobs(hidden_BxTxD[:, start:T - 1], model.head(),
                                         tokens_BxT[:, start + 1:], temperature, chunk_tokens)
  pad = jnp.zeros((B, start + 1), jnp.float32)
  return jnp.concatenate([pad, logp_BxN], axis=1), jnp.concatenate([pad, entropy_BxN], axis=1)


def _chunk_tokens(cfg) -> int:
  return int(cfg.get("logprob_chunk_tokens", 0))


def _split_micro(tree, micro_batches: int):
  """[B, ...] -> [M, B / M, ...]; micro-batch m holds rows m, m + M, m + 2M, ... so that each data
  shard's contiguous block contributes equally to every micro-batch (no cross-device shuffle)."""
  def split(x):
    B = x.shape[0]
    return x.reshape(B // micro_batches, micro_batches, *x.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(split, tree)


def _merge_micro(x_MxBmx):
  M, Bm = x_MxBmx.shape[:2]
  return x_MxBmx.swapaxes(0, 1).reshape(M * Bm, *x_MxBmx.shape[2:])


def _constrain(tree, sharding):
  return tree if sharding is None else jax.lax.with_sharding_constraint(tree, sharding)


def batch_logprobs(graphdef, params, batch: RLBatch, cfg, batch_sharding=None):
  """float32 [B, T] logprobs of `batch` under `params` (no gradient), micro-batched like the step."""
  model = nnx.merge(graphdef, params)

  def one(mb):
    mb = _constrain(mb, batch_sharding)
    return sequence_logprobs(model, mb.tokens, mb.segment_ids, batch.prompt_len, cfg.temperature,
                             _chunk_tokens(cfg))[0]

  if cfg.micro_batches == 1:
    return jax.lax.stop_gradient(one(batch))
  logp = jax.lax.map(one, _split_micro(batch, cfg.micro_batches))
  return jax.lax.stop_gradient(_merge_micro(logp))


# ------------------------------------------------------------------------------------- gradients
def _micro_loss(params, mb: RLBatch, counts, graphdef, cfg):
  """One micro-batch's contribution to the whole batch's loss (whole-batch denominators)."""
  model = nnx.merge(graphdef, params)
  logp, entropy = sequence_logprobs(model, mb.tokens, mb.segment_ids, mb.prompt_len, cfg.temperature,
                                    _chunk_tokens(cfg))
  if cfg.entropy_coef == 0:
    entropy = jax.lax.stop_gradient(entropy)  # a metric only: no backward pass through the softmax
  ref_logp = mb.ref_logp if cfg.kl_coef != 0 else None
  sums, micro_counts = policy_loss_terms(logp, mb.old_logp, mb.advantages, mb.loss_mask(), cfg, ref_logp,
                                         entropy=entropy, hint_mask=mb.response_hint_mask(),
                                         norm_len=mb.response_len)
  return weighted_loss(sums, counts, cfg), (sums, micro_counts)


def _empty_sums(sums_shapes):
  def init(key, s):
    fill = -jnp.inf if key.startswith("max/") else jnp.inf if key.startswith("min/") else 0.0
    return jnp.full(s.shape, fill, s.dtype)
  return {k: init(k, s) for k, s in sums_shapes.items()}


def _merge_sums(a, b):
  out = {}
  for k in a:
    out[k] = (jnp.maximum if k.startswith("max/") else jnp.minimum if k.startswith("min/") else jnp.add)(a[k], b[k])
  return out


def loss_and_grads(graphdef, params, batch: RLBatch, cfg, batch_sharding=None):
  """Gradients of the whole batch's loss, accumulated over cfg.micro_batches micro-batches.

  Returns (grads like params, (sums, counts)); `rl.finalize(sums, counts, cfg)` gives loss and metrics.
  The denominators come from the whole batch's masks, so the result equals the unsplit computation
  up to float round-off (and across data shards: jnp.sum over a sharded array is global).
  """
  if cfg.kl_coef != 0 and batch.ref_logp is None:
    raise ValueError(f"kl_coef={cfg.kl_coef} but batch.ref_logp is None: compute it with rl.make_logprob_fn "
                     "on the reference params, or set config.rl.kl_coef=0")
  counts = loss_counts(batch.loss_mask(), batch.response_hint_mask())
  grad_fn = jax.grad(functools.partial(_micro_loss, graphdef=graphdef, cfg=cfg), has_aux=True)
  M = cfg.micro_batches
  if M == 1:
    grads, (sums, _) = grad_fn(params, _constrain(batch, batch_sharding), counts)
    return grads, (sums, counts)

  micro = _split_micro(batch, M)
  first = jax.tree.map(lambda x: x[0], micro)
  sums_shapes = jax.eval_shape(lambda p, b: grad_fn(p, b, counts)[1][0], params, first)

  def body(carry, mb):
    grads_acc, sums_acc = carry
    grads, (sums, _) = grad_fn(params, _constrain(mb, batch_sharding), counts)
    return (jax.tree.map(jnp.add, grads_acc, grads), _merge_sums(sums_acc, sums)), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  (grads, sums), _ = jax.lax.scan(body, (zeros, _empty_sums(sums_shapes)), micro)
  return grads, (sums, counts)


# ------------------------------------------------------------------------------------ the step
def _all_finite(tree):
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]
  return functools.reduce(jnp.logical_and, leaves, jnp.asarray(True))


def _apply_update(optimizer, params, opt_state, grads):
  updates, opt_state = optimizer.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def _update_is_finite(optimizer, params, opt_state, grads):
  """Whether the params and optimizer state after this update would be finite, without keeping them: with a
  huge learning rate, weight decay alone (lr * wd * p) turns params into inf/NaN from a finite gradient, and
  the squared gradient in Adam's second moment can overflow. Only a scalar leaves this function, so XLA
  fuses each leaf's update into its reduction; the update itself is applied (in place) by _apply_update."""
  new_params, new_state = _apply_update(optimizer, params, opt_state, grads)
  return _all_finite(new_params) & _all_finite(new_state)


def _false(params, opt_state, grads):
  del params, opt_state, grads
  return jnp.asarray(False)


def _keep(params, opt_state, grads):
  del grads
  return params, opt_state


def train_step(params, opt_state, batch: RLBatch, rng, *, graphdef, cfg, optimizer, batch_sharding=None):
  """The pure step (un-jitted). `rng` is reserved for stochastic extensions; the step is deterministic.

  Metrics are averaged over the cfg.ppo_epochs updates (ratio_max/min: extremes; skipped_updates:
  the count of updates skipped for a non-finite loss or gradient). grad_norm is before clipping.

  The skip is a lax.cond, not a jnp.where of new and old values: with the where, XLA:CPU kept the new
  params and moments as temporaries beside the old ones (about 3 x the params more at the step's peak;
  159.5 against 136.5 MB on an 8-layer test model), while the cond's update writes them in place.
  """
  del rng
  if cfg.recompute_old_logp:
    batch = batch.replace(old_logp=batch_logprobs(graphdef, params, batch, cfg, batch_sharding))

  def update(carry, _):
    params, opt_state = carry
    grads, (sums, counts) = loss_and_grads(graphdef, params, batch, cfg, batch_sharding)
    loss, metrics = finalize(sums, counts, cfg)
    grads_finite = jnp.isfinite(loss) & _all_finite(grads)
    finite = jax.lax.cond(grads_finite, functools.partial(_update_is_finite, optimizer), _false,
                          params, opt_state, grads)
    params, opt_state = jax.lax.cond(finite, functools.partial(_apply_update, optimizer), _keep,
                                     params, opt_state, grads)  # never write NaN into params
    metrics["grad_norm"] = optax.tree.norm(grads)
    metrics["skipped_updates"] = jnp.logical_not(finite).astype(jnp.float32)
    # Of those: updates whose loss and gradient were finite but whose new params or moments were not.
    metrics["skipped_nonfinite_params"] = (grads_finite & jnp.logical_not(finite)).astype(jnp.float32)
    return (params, opt_state), metrics

  if cfg.ppo_epochs == 1:
    (params, opt_state), metrics = update((params, opt_state), None)
    return params, opt_state, metrics
  (params, opt_state), per_epoch = jax.lax.scan(update, (params, opt_state), None, length=cfg.ppo_epochs)
  reduce = {"ratio_max": jnp.max, "ratio_min": jnp.min, "skipped_updates": jnp.sum, "skipped_nonfinite_params": jnp.sum}
  metrics = {k: reduce.get(k, jnp.mean)(v) for k, v in per_epoch.items()}
  return params, opt_state, metrics


def optimizer_shardings(optimizer, params, param_shardings, mesh):
  """Shardings of `optimizer.init(params)`: moment trees like the params, scalars replicated."""
  abstract = jax.eval_shape(optimizer.init, params)
  return optax.tree_map_params(optimizer, lambda _, s: s, abstract, param_shardings,
                               transform_non_params=lambda _: parallel.replicated(mesh),
                               is_leaf=lambda x: isinstance(x, nnx.Variable))


def init_opt_state(optimizer, params, param_shardings, mesh):
  """optimizer.init(params), born sharded like the params (no replicated copy first)."""
  out = optimizer_shardings(optimizer, params, param_shardings, mesh)
  return jax.jit(optimizer.init, in_shardings=(param_shardings,), out_shardings=out)(params)


class TrainStep:
  """`step(params, opt_state, batch, rng) -> (params, opt_state, metrics)`, jitted once per batch shape.

  params and opt_state are donated (do not reuse the arrays passed in); the batch is sharded over
  ("data", "fsdp") by its leading axis; metrics come back replicated. The jit is built at the first
  call, when the optimizer state's structure is known (`lower(...)` does the same without running).
  """

  def __init__(self, graphdef, cfg, mesh, optimizer, param_shardings, compiler_options=None):
    self.graphdef, self.cfg, self.mesh = graphdef, cfg, mesh
    self.optimizer, self.param_shardings = optimizer, param_shardings
    self.compiler_options = compiler_options
    self.batch_sharding = parallel.batch_sharding(mesh, 1)  # a prefix: leading axis only, any rank
    self._jitted = None

  def _build(self, params):
    rep = parallel.replicated(self.mesh)
    opt_sh = optimizer_shardings(self.optimizer, params, self.param_shardings, self.mesh)
    fn = functools.partial(train_step, graphdef=self.graphdef, cfg=self.cfg, optimizer=self.optimizer,
                           batch_sharding=self.batch_sharding)
    return jax.jit(fn, in_shardings=(self.param_shardings, opt_sh, self.batch_sharding, rep),
                   out_shardings=(self.param_shardings, opt_sh, rep), donate_argnums=(0, 1),
                   compiler_options=self.compiler_options)

  def _check(self, batch: RLBatch):
    B = batch.tokens.shape[0]
    shards = self.mesh.shape["data"] * self.mesh.shape["fsdp"]
    if B % self.cfg.micro_batches:
      raise ValueError(f"batch size {B} is not divisible by config.rl.micro_batches={self.cfg.micro_batches}")
    if B % shards:
      raise ValueError(f"batch size {B} is not divisible by the mesh's data x fsdp = {shards} batch shards "
                       "(config.mesh.shape)")
    if (B // self.cfg.micro_batches) % shards:
      raise ValueError(f"a micro-batch of {B // self.cfg.micro_batches} rows (batch {B} / config.rl.micro_batches="
                       f"{self.cfg.micro_batches}) does not divide over the {shards} batch shards; lower "
                       "micro_batches")

  def lower(self, params, opt_state, batch, rng):
    self._check(batch)
    if self._jitted is None:
      self._jitted = self._build(params)
    with jax.set_mesh(self.mesh), platform.targeting(self.mesh):  # activations constrained to the batch shards
      return self._jitted.lower(params, opt_state, batch, rng)

  def __call__(self, params, opt_state, batch: RLBatch, rng):
    self._check(batch)
    if self._jitted is None:
      self._jitted = self._build(params)
    with jax.set_mesh(self.mesh), platform.targeting(self.mesh):  # activations constrained to the batch shards
      return self._jitted(params, opt_state, batch, rng)


def make_train_step(graphdef, cfg, mesh, optimizer, param_shardings, compiler_options=None) -> TrainStep:
  """The jitted, sharded train step (see TrainStep).

  compiler_options: XLA options for this jit only (e.g. {"xla_backend_optimization_level": 0} halves
  CPU compile time in tests; TPU scheduler flags on pods).
  """
  return TrainStep(graphdef, cfg, mesh, optimizer, param_shardings, compiler_options)


class LogprobFn:
  """`fn(params, batch) -> float32 [B, T]` logprobs (aligned like batch.old_logp), jitted and sharded by batch.

  Traced under the mesh (as the train step is), so the model's activation constraints and platform
  decisions (splash by Mosaic on TPU) follow the mesh's devices; `lower` does the same without running."""

  def __init__(self, graphdef, cfg, mesh, param_shardings, compiler_options=None):
    self.mesh = mesh
    batch_sh = parallel.batch_sharding(mesh, 1)
    fn = functools.partial(batch_logprobs, graphdef, cfg=cfg, batch_sharding=batch_sh)
    self._jitted = jax.jit(lambda params, batch: fn(params, batch), in_shardings=(param_shardings, batch_sh),
                           out_shardings=batch_sh, compiler_options=compiler_options)

  def lower(self, params, batch):
    with jax.set_mesh(self.mesh), platform.targeting(self.mesh):
      return self._jitted.lower(params, batch)

  def __call__(self, params, batch):
    with jax.set_mesh(self.mesh), platform.targeting(self.mesh):
      return self._jitted(params, batch)


def make_logprob_fn(graphdef, cfg, mesh, param_shardings, compiler_options=None) -> LogprobFn:
  """jitted `fn(params, batch) -> float32 [B, T]` logprobs (aligned like batch.old_logp), sharded by batch.

  Call it with the reference params for batch.ref_logp (only when kl_coef != 0), or with the current
  params for old logprobs outside the step.
  """
  return LogprobFn(graphdef, cfg, mesh, param_shardings, compiler_options)


def make_grad_fn(graphdef, cfg, mesh, param_shardings, compiler_options=None):
  """jitted `fn(params, batch) -> (grads, metrics)` (no update): the step's gradients, for checks and tools."""
  batch_sh = parallel.batch_sharding(mesh, 1)

  def fn(params, batch):
    grads, (sums, counts) = loss_and_grads(graphdef, params, batch, cfg, batch_sh)
    return grads, finalize(sums, counts, cfg)[1]

  return jax.jit(fn, in_shardings=(param_shardings, batch_sh),
                 out_shardings=(param_shardings, parallel.replicated(mesh)), compiler_options=compiler_options)


# ------------------------------------------------------------------------------------- optimizer
def make_lr_schedule(cfg, total_steps: int):
  """Learning rate per optimizer update (count 0, 1, ...).

  warmup: lr * (count + 1) / warmup_steps for count < warmup_steps (the first update is not wasted
  at lr 0); then "warmup_cosine" decays by a half cosine to lr * end_lr_ratio at total_steps,
  "warmup_constant" stays at lr. total_steps counts optimizer updates (steps x ppo_epochs).
  """
  lr, warmup, kind = float(cfg.learning_rate), int(cfg.warmup_steps), cfg.lr_schedule
  end = lr * float(cfg.end_lr_ratio)
  decay_steps = max(int(total_steps) - warmup, 1)

  def schedule(count):
    step = jnp.asarray(count, jnp.float32)
    if kind == "constant":
      return jnp.full_like(step, lr)
    warm = lr * jnp.minimum(1.0, (step + 1.0) / max(warmup, 1))
    if kind == "warmup_constant":
      return warm
    progress = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
    cosine = end + (lr - end) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
    return jnp.where(step < warmup, warm, cosine)

  return schedule


def _decay_mask(params):
  return jax.tree.map(lambda x: x.ndim >= 2, params)  # matrices only; norms and biases are not decayed


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
  """AdamW with the cfg's schedule, weight decay on matrices, gradients clipped by global norm."""
  if cfg.lr_schedule == "warmup_cosine" and total_steps < 1:
    raise ValueError(f"total_steps={total_steps}: the cosine schedule needs the number of optimizer updates "
                     "(num_steps x rl.ppo_epochs) >= 1")
  parts = [optax.clip_by_global_norm(cfg.max_grad_norm)] if cfg.max_grad_norm > 0 else []
  parts.append(optax.adamw(make_lr_schedule(cfg, total_steps), b1=cfg.b1, b2=cfg.b2, eps=cfg.adam_eps,
                           weight_decay=cfg.weight_decay, mask=_decay_mask))
  return optax.chain(*parts)
