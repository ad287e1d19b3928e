"""Batch layout, logprob alignment, micro-batch exactness and hint masking of the step's gradients (one device)."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxghpo import models, parallel, rl

MODEL_CFG = models.ModelConfig(model_type="qwen2", vocab_size=32, hidden_size=32, intermediate_size=64,
                               num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True,
                               tie_word_embeddings=True)
B, P, N = 8, 5, 6  # sequences, prompt columns, response columns
# XLA's backend optimisation off for these tests' jits: half the CPU compile time, same program.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def setup():
  mesh = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  graphdef, params = nnx.split(models.init_model(MODEL_CFG, seed=0))
  return mesh, graphdef, params, parallel.param_shardings(params, mesh)


def make_test_batch(seed=0, *, response_hint_rows=(), prompt_hint_rows=(1, 2)):
  """Ragged prompts and responses; hints inside some prompts, at the start of some responses."""
  rng = np.random.default_rng(seed)
  prompt_len = np.array([5, 3, 4, 2, 5, 1, 3, 4])
  resp_len = np.array([6, 4, 1, 6, 3, 5, 0, 2])  # row 6: no response (a padding row)
  prompt_valid = np.arange(P)[None, :] >= (P - prompt_len)[:, None]
  response_valid = np.arange(N)[None, :] < resp_len[:, None]
  prompt_hint = np.zeros((B, P), bool)
  for r in prompt_hint_rows:  # the middle of the prompt: the template's text follows the hint
    prompt_hint[r, P - 2:P - 1] = True
  hint_len = np.zeros(B, np.int64)
  for r in response_hint_rows:
    hint_len[r] = 2
  return rl.make_batch(
      rng.integers(1, 32, (B, P)), prompt_valid, rng.integers(1, 32, (B, N)), response_valid,
      advantages=rng.normal(size=B).astype(np.float32),
      old_logp=np.log(rng.uniform(0.01, 0.2, (B, N))) * response_valid,
      ref_logp=np.log(rng.uniform(0.01, 0.2, (B, N))) * response_valid,
      prompt_hint=prompt_hint, response_hint_len=hint_len if response_hint_rows else None)


def test_make_batch_layout_and_errors():
  batch = make_test_batch(response_hint_rows=(3,))
  assert batch.tokens.shape == (B, P + N) and batch.prompt_len == P and batch.response_len == N
  np.testing.assert_array_equal(batch.segment_ids[1], [0, 0, 1, 2, 1, 3, 3, 3, 3, 0, 0])
  np.testing.assert_array_equal(batch.segment_ids[3], [0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3])
  np.testing.assert_array_equal(batch.segment_ids[6], [0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0])
  assert np.all(batch.old_logp[:, :P] == 0.0) and batch.old_logp[0, P] != 0.0
  np.testing.assert_array_equal(np.asarray(batch.loss_mask()).sum(1), [6, 4, 1, 4, 3, 5, 0, 2])
  np.testing.assert_array_equal(np.asarray(batch.response_hint_mask()).sum(1), [0, 0, 0, 2, 0, 0, 0, 0])
  ones = np.ones((2, 3), bool)
  with pytest.raises(ValueError, match="prompt_valid row 1 is not left-padded"):
    rl.make_batch(np.ones((2, 3)), [[1, 1, 1], [1, 0, 1]], np.ones((2, 2)), np.ones((2, 2), bool), np.zeros(2))
  with pytest.raises(ValueError, match="response_valid row 0 is not right-padded"):
    rl.make_batch(np.ones((2, 3)), ones, np.ones((2, 2)), [[0, 1], [1, 1]], np.zeros(2))
  with pytest.raises(ValueError, match=r"old_logp has shape \(2, 3\)"):
    rl.make_batch(np.ones((2, 3)), ones, np.ones((2, 2)), np.ones((2, 2), bool), np.zeros(2),
                  old_logp=np.zeros((2, 3)))


def test_sequence_logprobs_alignment_and_temperature(setup):
  _, graphdef, params, _ = setup
  batch = make_test_batch()
  real3 = batch.tokens[3, 3:]  # row 3 is left-padded by 3 (prompt of 2, response of 6)

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def run(params, batch):  # one compile for the three forward passes
    model = nnx.merge(graphdef, params)
    logp, ent = rl.sequence_logprobs(model, batch.tokens, batch.segment_ids, P, 0.7)
    return logp, ent, models.logits(model, batch.tokens[:1])[0] / 0.7, models.logits(model, real3[None])[0] / 0.7

  logp, ent, logits0, logits3 = run(params, batch)
  # Row 0 has no padding: compare against an unpadded forward pass by hand (logits at t-1 score token t).
  ref = jax.nn.log_softmax(logits0, axis=-1)
  t = np.arange(P, P + N)
  np.testing.assert_allclose(logp[0, P:], ref[t - 1, batch.tokens[0, t]], atol=1e-5)
  p0 = np.exp(np.asarray(ref[t - 1]))
  np.testing.assert_allclose(ent[0, P:], -(p0 * np.asarray(ref[t - 1])).sum(-1), atol=1e-5)
  assert np.all(np.asarray(logp[:, :P]) == 0.0)
  # Row 3: its logprobs equal those of the same tokens without the left padding.
  ref3 = jax.nn.log_softmax(logits3, axis=-1)
  np.testing.assert_allclose(logp[3, P:], ref3[np.arange(2, 8) - 1, real3[2:8]], atol=1e-5)


def assert_trees_close(a, b, atol, rtol=0.0):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=rtol)


@pytest.fixture(scope="module")
def grad_fns(setup):
  """Gradient functions of the whole batch at once and in 4 micro-batches (KL, entropy and the hint
  NLL term all on, so every part of the loss is covered)."""
  mesh, graphdef, _, shardings = setup
  kw = dict(loss_agg="seq-mean-token-mean", kl_coef=0.1, entropy_coef=0.01, hint_nll_coef=0.3)
  whole = rl.make_grad_fn(graphdef, rl.resolve_config(dict(micro_batches=1, **kw)), mesh, shardings, FAST_COMPILE)
  micro = rl.make_grad_fn(graphdef, rl.resolve_config(dict(micro_batches=4, **kw)), mesh, shardings, FAST_COMPILE)
  return whole, micro


def test_micro_batches_equal_the_whole_batch(setup, grad_fns):
  params = setup[2]
  batch = make_test_batch(response_hint_rows=(3,))
  grads, metrics = grad_fns[0](params, batch)
  micro_grads, micro_metrics = grad_fns[1](params, batch)
  assert float(metrics["hint_nll"]) > 0 and float(metrics["num_hint_tokens"]) == 2
  for k in metrics:
    np.testing.assert_allclose(micro_metrics[k], metrics[k], atol=1e-6, rtol=1e-6, err_msg=k)
  assert_trees_close(micro_grads, grads, atol=1e-6)
  assert max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads)) > 1e-3  # not trivially zero


def test_hint_tokens_never_reach_the_loss(setup, grad_fns):
  params, fn = setup[2], grad_fns[0]
  batch = make_test_batch(response_hint_rows=(3,))
  grads, metrics = fn(params, batch)
  hint = np.asarray(batch.segment_ids == rl.HINT)
  pad = np.asarray(batch.segment_ids == rl.PAD)
  # Change the logprobs carried for hint and pad tokens (NaN on pads) and the advantage of the row
  # that has no loss tokens: neither the loss nor the gradients move.
  changed = batch.replace(
      old_logp=np.where(hint, -30.0, np.where(pad, np.nan, batch.old_logp)).astype(np.float32),
      ref_logp=np.where(hint, 5.0, np.where(pad, np.inf, batch.ref_logp)).astype(np.float32),
      advantages=batch.advantages.copy())
  changed.advantages[6] = 1e4
  grads2, metrics2 = fn(params, changed)
  for k in metrics:
    np.testing.assert_allclose(metrics2[k], metrics[k], rtol=1e-6, err_msg=k)
  assert_trees_close(grads2, grads, atol=1e-7)
  # Moving one token from hint to response does change them (a new loss token, one hint token fewer).
  seg = np.array(batch.segment_ids)
  seg[3, P] = rl.RESPONSE
  grads3, metrics3 = fn(params, batch.replace(segment_ids=seg))
  assert abs(float(metrics3["loss"] - metrics["loss"])) > 1e-5
  assert float(metrics3["num_tokens"]) == float(metrics["num_tokens"]) + 1
  assert float(metrics3["num_hint_tokens"]) == 1
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grads3), jax.tree.leaves(grads))) > 1e-5


def test_lr_schedule_and_weight_decay_mask():
  cfg = rl.resolve_config(dict(learning_rate=1.0, warmup_steps=4, end_lr_ratio=0.1))
  lr = rl.make_lr_schedule(cfg, total_steps=14)
  # Warm-up (count + 1) / 4: the first update already moves; then a half cosine from 1 to 0.1 over 10.
  np.testing.assert_allclose([lr(0), lr(3), lr(4), lr(9), lr(14), lr(100)],
                             [0.25, 1.0, 1.0, 0.1 + 0.9 * 0.5, 0.1, 0.1], rtol=1e-6)
  cfg = rl.resolve_config(dict(learning_rate=0.1, weight_decay=0.5, lr_schedule="constant"))
  opt = rl.make_optimizer(cfg, total_steps=1)
  params = {"kernel": jnp.ones((2, 2)), "scale": jnp.ones(2)}
  zeros = jax.tree.map(jnp.zeros_like, params)

  @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
  def update(params):
    updates, _ = opt.update(zeros, opt.init(params), params)
    return jax.tree.map(jnp.add, params, updates)

  new = update(params)
  np.testing.assert_allclose(new["kernel"], 1.0 - 0.1 * 0.5, rtol=1e-6)  # decayed: lr * wd * w
  np.testing.assert_allclose(new["scale"], 1.0)  # norms are not decayed
  with pytest.raises(ValueError, match="lr_schedule='linear'"):
    rl.resolve_config(dict(lr_schedule="linear"))
