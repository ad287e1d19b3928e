"""models.attention: every implementation that runs here against plain einsum attention, alone and inside the
model (logits, logprobs, gradients), with left padding and packed segments; splash in Pallas interpret mode,
also per device under a mesh (shard_map). cuDNN needs a GPU: only its refusal on CPU is checked here."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxghpo import models, parallel, rl
from jaxghpo.models import attention as attention_lib

CPU_IMPLS = ("xla", "splash")  # splash: the TPU kernel in Pallas interpret mode
FAST_COMPILE = {"xla_backend_optimization_level": 0}
CFG = models.ModelConfig(model_type="qwen2", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True, tie_word_embeddings=True)


def packed_and_padded_segments(B, T):
  """Row 0 left-padded by 7 (pad = segment 0); row 1 two packed sequences (1, 2) and right padding."""
  seg = np.ones((B, T), np.int32)
  seg[0, :7] = 0
  seg[1, 17:] = 2
  seg[1, T - 5:] = 0
  return jnp.asarray(seg)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_attention_equals_reference_with_padding_and_segments(impl):
  rng = np.random.default_rng(0)
  B, T, H, K, D = 2, 40, 4, 2, 16  # T = 40: splash pads it to its 128 tile inside
  q, k, v = (jnp.asarray(rng.normal(size=(B, T, n, D)), jnp.float32) for n in (H, K, K))
  seg = packed_and_padded_segments(B, T)
  out = attention_lib.attention(q, k, v, seg, impl=impl)
  np.testing.assert_allclose(out, attention_lib.reference_attention(q, k, v, seg), atol=2e-6)
  loss = lambda fn: lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v)))
  grads = jax.grad(loss(lambda q, k, v: attention_lib.attention(q, k, v, seg, impl=impl)), argnums=(0, 1, 2))
  ref = jax.grad(loss(lambda q, k, v: attention_lib.reference_attention(q, k, v, seg)), argnums=(0, 1, 2))
  for got, want in zip(grads(q, k, v), ref(q, k, v)):
    np.testing.assert_allclose(got, want, atol=1e-5)
  # Packed: segment 2 of row 1 sees nothing of segment 1 (the same output as alone).
  alone = attention_lib.reference_attention(q[1:, 17:T - 5], k[1:, 17:T - 5], v[1:, 17:T - 5],
                                            jnp.ones((1, T - 22), jnp.int32))
  np.testing.assert_allclose(out[1, 17:T - 5], alone[0], atol=2e-6)


def test_cudnn_and_unknown_implementations_are_refused_here():
  x = jnp.zeros((1, 8, 2, 8), jnp.float32)
  seg = jnp.ones((1, 8), jnp.int32)
  if jax.default_backend() != "gpu":
    with pytest.raises(ValueError, match="'cudnn' needs a GPU"):
      attention_lib.attention(x, x, x, seg, impl="cudnn")
  with pytest.raises(ValueError, match="model.attention='flash'"):
    attention_lib.attention(x, x, x, seg, impl="flash")
  with pytest.raises(ValueError, match="config.model.attention"):
    CFG.replace(attention="flash")


def _reference_logprobs(model, tokens_BxT, valid_BxT, prompt_len, temperature):
  """Logprobs as the step computed them before models.attention: the model's einsum path with a full
  [B, T, T] mask, full-vocabulary float32 logits of every position."""
  logits = model(tokens_BxT, models.positions_from_valid(valid_BxT), models.causal_mask(valid_BxT))[0]
  z = logits[:, prompt_len - 1:-1] / temperature
  logp = jnp.take_along_axis(jax.nn.log_softmax(z, -1), tokens_BxT[:, prompt_len:, None], -1)[..., 0]
  return logits, logp


def _batch(seed=0):
  rng = np.random.default_rng(seed)
  B, P, N = 4, 12, 20
  prompt_valid = np.arange(P)[None] >= np.array([0, 5, 9, 2])[:, None]  # left padding
  response_valid = np.arange(N)[None] < np.array([20, 7, 13, 1])[:, None]
  return rl.make_batch(rng.integers(1, 64, (B, P)), prompt_valid, rng.integers(1, 64, (B, N)), response_valid,
                       rng.normal(size=B).astype(np.float32))


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_model_logits_logprobs_and_gradients_per_implementation(impl):
  batch = _batch()
  P, temperature = batch.prompt_len, 0.8
  valid = np.asarray(batch.segment_ids) != rl.PAD
  graphdef, params = nnx.split(models.init_model(CFG.replace(attention=impl), seed=1))
  _, ref_params = nnx.split(models.init_model(CFG, seed=1))
  mask = jnp.asarray(batch.loss_mask()[:, P:], jnp.float32)
  weights = jnp.asarray(np.random.default_rng(2).normal(size=mask.shape), jnp.float32)

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def run(params):
    def loss(params):
      model = nnx.merge(graphdef, params)
      logp = rl.sequence_logprobs(model, batch.tokens, batch.segment_ids, P, temperature, chunk_tokens=16)[0]
      return jnp.sum(logp[:, P:] * mask * weights), (logp, models.logits_padded(model, batch.tokens, valid))
    return jax.grad(loss, has_aux=True)(params)

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def run_ref(params):
    def loss(params):
      logits, logp = _reference_logprobs(nnx.merge(graphdef, params), batch.tokens, valid, P, temperature)
      return jnp.sum(logp * mask * weights), (logp, logits)
    return jax.grad(loss, has_aux=True)(params)

  grads, (logp, logits) = run(params)
  ref_grads, (ref_logp, ref_logits) = run_ref(ref_params)
  np.testing.assert_allclose(np.asarray(logits)[valid], np.asarray(ref_logits)[valid], atol=1e-5)
  np.testing.assert_allclose(np.asarray(logp[:, P:]) * mask, np.asarray(ref_logp) * mask, atol=1e-5)
  for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_model_packed_segments_see_only_themselves(impl):
  """Two sequences packed in one row (positions restarting) give the logits of each alone."""
  model = models.init_model(CFG.replace(attention=impl), seed=3)
  rng = np.random.default_rng(3)
  a, b = rng.integers(1, 64, 11), rng.integers(1, 64, 9)
  tokens = jnp.asarray(np.concatenate([a, b])[None], jnp.int32)
  positions = jnp.asarray(np.concatenate([np.arange(11), np.arange(9)])[None], jnp.int32)
  segments = jnp.asarray(np.r_[np.ones(11), 2 * np.ones(9)][None], jnp.int32)
  packed = model(tokens, positions, segment_ids_BxT=segments)[0][0]
  np.testing.assert_allclose(packed[:11], models.logits(model, a[None])[0], atol=1e-5)
  np.testing.assert_allclose(packed[11:], models.logits(model, b[None])[0], atol=1e-5)


def test_splash_under_a_mesh_matches_xla():
  """The train step's gradients with splash run per device (shard_map: rows over fsdp, heads over tensor)."""
  mesh = parallel.make_mesh((1, 2, 2), devices=jax.devices()[:4])
  batch = _batch(1)
  cfg = rl.resolve_config(dict(micro_batches=1, logprob_chunk_tokens=32, entropy_coef=0.01))
  results = {}
  for impl in ("xla", "splash"):
    model = parallel.shard_model(models.init_model(CFG.replace(attention=impl), seed=4), mesh)
    graphdef, params = nnx.split(model)
    shardings = parallel.param_shardings(params, mesh)
    fn = rl.make_grad_fn(graphdef, cfg, mesh, shardings, FAST_COMPILE)
    with jax.set_mesh(mesh):
      results[impl] = fn(params, batch)
      if impl == "splash":  # the kernel runs per device: a manual computation in the lowered program
        assert "manual_computation" in fn.lower(params, batch).as_text()
  (g_xla, m_xla), (g_splash, m_splash) = results["xla"], results["splash"]
  np.testing.assert_allclose(m_splash["loss"], m_xla["loss"], atol=1e-6)
  np.testing.assert_allclose(m_splash["entropy"], m_xla["entropy"], atol=1e-5)
  for got, want in zip(jax.tree.leaves(g_splash), jax.tree.leaves(g_xla)):
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)
