"""Memory savers give the same numbers: logprobs/entropies in token blocks (rl.token_logprobs) and
rematerialised blocks (model.remat); XLA's compiled memory shows what each saves."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxghpo import models, parallel, rl

FAST_COMPILE = {"xla_backend_optimization_level": 0}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _full_vocab(hidden, head, targets, temperature):
  """The old computation: every position's float32 logits at once."""
  z = (hidden @ head).astype(jnp.float32) / temperature
  logp_all = jax.nn.log_softmax(z, -1)
  logp = jnp.take_along_axis(logp_all, targets[..., None], -1)[..., 0]
  return logp, -jnp.sum(jnp.exp(logp_all) * logp_all, -1)


@pytest.mark.parametrize("chunk_tokens", [0, 8, 12, 1000])  # 12 over 3 rows: 4 positions, 11 = 2 x 4 + 3
def test_token_logprobs_in_blocks_equal_the_whole(chunk_tokens):
  rng = np.random.default_rng(0)
  B, N, D, V = 3, 11, 16, 50
  hidden = jnp.asarray(rng.normal(size=(B, N, D)), jnp.float32)
  head = jnp.asarray(rng.normal(size=(D, V)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, V, (B, N)), jnp.int32)
  w1, w2 = (jnp.asarray(rng.normal(size=(B, N)), jnp.float32) for _ in range(2))
  loss = lambda fn: lambda h, w: sum(jnp.sum(x * y) for x, y in zip(fn(h, w), (w1, w2)))
  chunked = lambda h, w: rl.token_logprobs(h, w, targets, 0.7, chunk_tokens)
  whole = lambda h, w: _full_vocab(h, w, targets, 0.7)
  for got, want in zip(chunked(hidden, head), whole(hidden, head)):
    np.testing.assert_allclose(got, want, atol=2e-5)
  for got, want in zip(jax.grad(loss(chunked), (0, 1))(hidden, head), jax.grad(loss(whole), (0, 1))(hidden, head)):
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-5)


def test_logprob_blocks_lower_the_compiled_peak():
  """The gradient of a logprob loss over 8 rows x 256 positions x 8192 vocabulary (67 MB of float32 logits
  per copy): in blocks of 256 tokens (8.4 MB of logits) XLA keeps a few block-sized temporaries instead of
  several whole-sized ones (measured: 35 MB against 268 MB)."""
  rng = np.random.default_rng(0)
  B, N, D, V = 8, 256, 64, 8192
  hidden = jax.ShapeDtypeStruct((B, N, D), jnp.float32)
  head = jax.ShapeDtypeStruct((D, V), jnp.float32)
  targets = jnp.asarray(rng.integers(0, V, (B, N)), jnp.int32)

  def temp_bytes(chunk_tokens):
    def loss(h, w):
      logp, ent = rl.token_logprobs(h, w, targets, 1.0, chunk_tokens)
      return jnp.sum(logp) + 0.01 * jnp.sum(ent)
    compiled = jax.jit(jax.grad(loss, (0, 1))).lower(hidden, head).compile(FAST_COMPILE)
    return compiled.memory_analysis().temp_size_in_bytes

  whole, blocks = temp_bytes(0), temp_bytes(256)
  logits_bytes = B * N * V * 4
  assert whole >= 2 * logits_bytes, whole  # values and their gradient at least
  block_bytes = 256 * V * 4
  assert blocks < 5 * block_bytes and blocks < 0.2 * whole, (blocks, whole)


CFG = models.ModelConfig(model_type="qwen2", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=3,
                         num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True, tie_word_embeddings=True)


def _grad_fn(cfg, rl_cfg):
  mesh = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  graphdef, params = nnx.split(models.init_model(cfg, seed=0))
  shardings = parallel.param_shardings(params, mesh)
  return rl.make_grad_fn(graphdef, rl_cfg, mesh, shardings, FAST_COMPILE), params


def _batch():
  rng = np.random.default_rng(1)
  B, P, N = 4, 8, 12
  prompt_valid = np.arange(P)[None] >= np.array([0, 3, 6, 1])[:, None]
  response_valid = np.arange(N)[None] < np.array([12, 5, 9, 2])[:, None]
  return rl.make_batch(rng.integers(1, 64, (B, P)), prompt_valid, rng.integers(1, 64, (B, N)), response_valid,
                       rng.normal(size=B).astype(np.float32), np.log(rng.uniform(0.01, 0.2, (B, N))) * response_valid)


@pytest.mark.parametrize("micro_batches", [1, 2])
def test_remat_policies_give_the_same_gradients(micro_batches):
  batch = _batch()
  rl_cfg = rl.resolve_config(dict(entropy_coef=0.01, micro_batches=micro_batches))
  results = {}
  for remat in ("none", "dots_saveable", "full", "qkv_context"):
    fn, params = _grad_fn(CFG.replace(remat=remat), rl_cfg)
    results[remat] = fn(params, batch)
  for remat in ("dots_saveable", "full", "qkv_context"):
    np.testing.assert_allclose(results[remat][1]["loss"], results["none"][1]["loss"], rtol=1e-6)
    for got, want in zip(jax.tree.leaves(results[remat][0]), jax.tree.leaves(results["none"][0])):
      np.testing.assert_allclose(got, want, atol=1e-6, rtol=1e-5)
  with pytest.raises(ValueError, match="config.model.remat"):
    CFG.replace(remat="everything")


def test_block_ordering_by_barrier_gives_the_same_gradients(monkeypatch):
  """Off CPU and TPU (GPU) the backward's order is kept by optimization barriers instead of a data dependency
  (transformer.in_turn): the same gradients either way, and the same as without remat."""
  from jaxghpo.models import transformer
  batch = _batch()
  rl_cfg = rl.resolve_config(dict(entropy_coef=0.01, micro_batches=1))
  fn, params = _grad_fn(CFG.replace(remat="none"), rl_cfg)
  want = fn(params, batch)[0]
  by_data = _grad_fn(CFG.replace(remat="full"), rl_cfg)[0](params, batch)[0]
  monkeypatch.setattr(transformer, "order_by_data", lambda: False)
  by_barrier = _grad_fn(CFG.replace(remat="full"), rl_cfg)[0](params, batch)[0]
  for a, b, c in zip(jax.tree.leaves(by_data), jax.tree.leaves(by_barrier), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, c, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(b, c, atol=1e-6, rtol=1e-5)


REMAT_PEAK_SCRIPT = """
import sys, json
sys.path.insert(0, "tools")
import estimate_memory as em
em.set_cpu_devices(1)  # and XLA:CPU's sequential (memory-minimising) scheduler, as the --compile tool uses
import jax, numpy as np
from flax import nnx
from jaxghpo import models, parallel, rl
cfg = models.ModelConfig(model_type="qwen2", vocab_size=128, hidden_size=64, intermediate_size=256, num_layers=8,
                         num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True, tie_word_embeddings=True)
B, P, N = 4, 128, 128
rng = np.random.default_rng(0)
batch = rl.make_batch(rng.integers(1, 128, (B, P)), np.ones((B, P), bool), rng.integers(1, 128, (B, N)),
                      np.ones((B, N), bool), rng.normal(size=B).astype(np.float32))
mesh = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
out = {}
for remat in ("none", "dots_saveable", "full"):
  graphdef, state = nnx.split(models.abstract_model(cfg.replace(remat=remat)))
  shardings = parallel.param_shardings(state, mesh)
  params = jax.tree.map(lambda s, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shardings, state)
  fn = rl.make_grad_fn(graphdef, rl.resolve_config({}), mesh, shardings, {"xla_backend_optimization_level": 0})
  out[remat] = fn.lower(params, batch).compile().memory_analysis().temp_size_in_bytes
print(json.dumps(out))
"""


def test_remat_lowers_the_compiled_peak():
  """The step's gradients, 8 layers, 4 rows x 256 tokens (xla attention: [4, 4, 256, 256] float32 scores
  per layer): with remat only one layer's activations are live in the backward pass. In a subprocess:
  the XLA:CPU scheduler flag must be set before the backend starts."""
  out = subprocess.run([sys.executable, "-c", REMAT_PEAK_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": ""})
  assert out.returncode == 0, out.stderr[-3000:]
  temp = json.loads(out.stdout.strip().splitlines()[-1])
  assert temp["full"] < 0.4 * temp["none"], temp
  assert temp["full"] <= temp["dots_saveable"] < temp["none"], temp


STEP_DEPTH_SCRIPT = """
import sys, json
sys.path.insert(0, "tools")
import estimate_memory as em
em.set_cpu_devices(1)
import jax, numpy as np
from flax import nnx
from jaxghpo import models, parallel, rl
cfg = models.ModelConfig(model_type="qwen2", vocab_size=128, hidden_size=64, intermediate_size=256, num_layers=2,
                         num_heads=4, num_kv_heads=2, head_dim=16, attention_bias=True, tie_word_embeddings=True,
                         remat="full")
B, P, N = 4, 128, 128
rng = np.random.default_rng(0)
batch = rl.make_batch(rng.integers(1, 128, (B, P)), np.ones((B, P), bool), rng.integers(1, 128, (B, N)),
                      np.ones((B, N), bool), rng.normal(size=B).astype(np.float32))
mesh = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
rl_cfg = rl.resolve_config({})
optimizer = rl.make_optimizer(rl_cfg, 10)
out = {}
for layers in (2, 6):
  graphdef, state = nnx.split(models.abstract_model(cfg.replace(num_layers=layers)))
  shardings = parallel.param_shardings(state, mesh)
  params = jax.tree.map(lambda s, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shardings, state)
  opt = jax.tree.map(lambda s, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                     rl.optimizer_shardings(optimizer, params, shardings, mesh), jax.eval_shape(optimizer.init, params))
  step = rl.make_train_step(graphdef, rl_cfg, mesh, optimizer, shardings, {"xla_backend_optimization_level": 0})
  compiled = step.lower(params, opt, batch, jax.random.key(0)).compile()
  out[layers] = compiled.memory_analysis().temp_size_in_bytes
  out[f"params_{layers}"] = cfg.replace(num_layers=layers).num_params()
print(json.dumps(out))
"""


def test_one_micro_batch_step_holds_one_layer_of_activations():
  """The whole train step (gradients, norm, AdamW, skip test) in one micro-batch with remat full, 4 rows x
  256 tokens: going from 2 to 6 layers adds only the new layers' gradients and optimizer work, not their
  activations ([4, 4, 256, 256] float32 scores alone are 4.2 MB a layer). Before the backward pass's
  order was tied to the data (transformer.recompute_after_cotangent), XLA:CPU's sequential scheduler kept
  every layer's recomputed activations live: measured 9.4 MB a layer here (32.2 MB at 2 layers, 70.0 MB at
  6); now 1.6 MB (24.4, 30.7 MB)."""
  out = subprocess.run([sys.executable, "-c", STEP_DEPTH_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                       timeout=600, env={**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": ""})
  assert out.returncode == 0, out.stderr[-3000:]
  temp = json.loads(out.stdout.strip().splitlines()[-1])
  per_layer = (temp["6"] - temp["2"]) / 4
  param_bytes_per_layer = (temp["params_6"] - temp["params_2"]) / 4 * 4
  scores_bytes = 4 * 4 * 256 * 256 * 4
  assert per_layer < 8 * param_bytes_per_layer and per_layer < 0.5 * scores_bytes, (per_layer, temp)
