"""The jitted train step on 8 fake CPU devices in three mesh layouts equals the one-device step;
the one-device step skips non-finite updates and learns a tiny preference."""
import jax
import numpy as np
import pytest
from flax import nnx

from jaxghpo import models, parallel, rl

MODEL_CFG = models.ModelConfig(model_type="qwen2", vocab_size=32, hidden_size=32, intermediate_size=64,
                               num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True,
                               tie_word_embeddings=True)
G, P, N = 8, 5, 6
# XLA's backend optimisation off for these tests' jits: half the CPU compile time, same program.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
B = 2 * G  # two prompts; 16 rows: 2 per batch shard on 8 devices, so 2 micro-batches split evenly
# Every feature of the step at once: micro-batches, two PPO epochs on recomputed old logprobs, KL to a
# reference, entropy bonus, AdamW with weight decay and gradient clipping. adam_eps is large because
# some gradients are zero in exact arithmetic (the key bias: softmax ignores a constant shift) and
# Adam's g / sqrt(v) would blow their ~1e-9 round-off up to a full +-lr step that differs per layout.
CFG = rl.resolve_config(dict(micro_batches=2, ppo_epochs=2, recompute_old_logp=True, kl_coef=0.05,
                             entropy_coef=0.01, learning_rate=1e-2, lr_schedule="constant", max_grad_norm=1.0,
                             adam_eps=1e-3))


def make_batch(seed=0):
  """Two groups of G responses to two prompts; rewards 1 for a few responses; ragged lengths."""
  rng = np.random.default_rng(seed)
  prompts = np.repeat(rng.integers(1, 32, (2, P)), G, axis=0)
  prompt_valid = np.repeat(np.arange(P)[None, :] >= np.array([[0], [2]]), G, axis=0)
  rewards = np.zeros((2, G), np.float32)
  rewards[0, [0, 3]] = 1.0
  rewards[1, 5] = 1.0
  resp_len = np.where(rewards.reshape(-1) > 0, N, rng.integers(1, N + 1, B))  # right answers run to N
  response_valid = np.arange(N)[None, :] < resp_len[:, None]
  adv = rl.group_advantages(rewards, "grpo").reshape(-1)
  hint = np.zeros((B, P), bool)
  hint[G:, 3] = True  # the second prompt carries a (one-token) hint inside it
  return rl.make_batch(prompts, prompt_valid, rng.integers(1, 32, (B, N)), response_valid, adv,
                       old_logp=np.zeros((B, N)), ref_logp=np.log(rng.uniform(0.02, 0.1, (B, N))),
                       prompt_hint=hint)


def build(mesh_shape, cfg=CFG):
  """Model (seed 0) placed on a mesh of the first prod(mesh_shape) devices, its optimizer state and step."""
  mesh = parallel.make_mesh(mesh_shape, devices=jax.devices()[:int(np.prod(mesh_shape))])
  graphdef, params = nnx.split(parallel.shard_model(models.init_model(MODEL_CFG, seed=0), mesh))
  shardings = parallel.param_shardings(params, mesh)
  optimizer = rl.make_optimizer(cfg, total_steps=20)
  opt_state = rl.init_opt_state(optimizer, params, shardings, mesh)
  step = rl.make_train_step(graphdef, cfg, mesh, optimizer, shardings, compiler_options=FAST_COMPILE)
  return mesh, graphdef, shardings, optimizer, step, params, opt_state


def to_host(tree):
  return jax.tree.map(np.asarray, tree)


@pytest.fixture(scope="module")
def one_device():
  """The reference: the step on one device (compiled once, shared by every test here)."""
  mesh, graphdef, shardings, optimizer, step, params, opt_state = build((1, 1, 1))
  start = to_host(params)
  params, opt_state, metrics = step(params, opt_state, make_batch(), jax.random.key(0))
  return dict(mesh=mesh, graphdef=graphdef, shardings=shardings, optimizer=optimizer, step=step, start=start,
              result=to_host((params, opt_state)), metrics=to_host(metrics))


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (1, 8, 1), (2, 2, 2)], ids=["data", "fsdp", "fsdp+tensor"])
def test_sharded_step_equals_one_device(one_device, mesh_shape):
  mesh, _, shardings, _, step, params, opt_state = build(mesh_shape)
  np.testing.assert_array_equal(params["embed_tokens"][...], one_device["start"]["embed_tokens"])
  params, opt_state, metrics = step(params, opt_state, make_batch(), jax.random.key(0))
  # Params and optimizer state stay where the sharding rules put them (fsdp/tensor really shard).
  q = params["layers"][0]["self_attn"]["q_proj"]["kernel"]
  assert q.sharding == shardings["layers"][0]["self_attn"]["q_proj"]["kernel"]
  expected_spec = jax.sharding.PartitionSpec("fsdp" if mesh.shape["fsdp"] > 1 else None,
                                             "tensor" if mesh.shape["tensor"] > 1 else None)
  assert q.sharding.spec == expected_spec
  ref = one_device["metrics"]
  assert float(metrics["skipped_updates"]) == 0.0
  for k in ("loss", "pg_loss", "kl", "entropy", "approx_kl", "grad_norm", "ratio_mean", "num_tokens"):
    np.testing.assert_allclose(metrics[k], ref[k], rtol=1e-5, atol=1e-6, err_msg=k)
  # Adam's moments after the two updates are linear (mu) and quadratic (nu) in the gradients: equal
  # moments at this tolerance mean equal gradients, micro-batched and sharded, to ~1e-6.
  ref_params, ref_opt = one_device["result"]
  for name, got, want, atol in (("params", params, ref_params, 2e-6), ("opt_state", opt_state, ref_opt, 1e-7)):
    for x, y in zip(jax.tree.leaves(to_host(got)), jax.tree.leaves(want)):
      np.testing.assert_allclose(x, y, atol=atol, rtol=1e-5, err_msg=name)


def fresh(one_device):
  mesh, optimizer, shardings = one_device["mesh"], one_device["optimizer"], one_device["shardings"]
  params = jax.device_put(one_device["start"], shardings)  # placed as the step expects: no recompilation
  return params, rl.init_opt_state(optimizer, params, shardings, mesh)


def test_nan_in_the_batch_skips_the_update(one_device):
  params, opt_state = fresh(one_device)
  before = to_host((params, opt_state))
  batch = make_batch()
  bad = batch.replace(ref_logp=batch.ref_logp.copy())
  bad.ref_logp[0, P] = np.nan  # on a loss token (row 0 has at least one response token)
  params, opt_state, metrics = one_device["step"](params, opt_state, bad, jax.random.key(0))
  assert float(metrics["skipped_updates"]) == 2.0  # both PPO epochs skipped and counted
  assert not np.isfinite(float(metrics["loss"]))
  for x, y in zip(jax.tree.leaves(to_host((params, opt_state))), jax.tree.leaves(before)):
    np.testing.assert_array_equal(x, y)
  # A NaN where no loss token is (a pad column) is harmless: the update happens.
  ok = batch.replace(ref_logp=batch.ref_logp.copy())
  ok.ref_logp[:, 0] = np.nan
  params, opt_state, metrics = one_device["step"](params, opt_state, ok, jax.random.key(0))
  assert float(metrics["skipped_updates"]) == 0.0 and np.isfinite(float(metrics["grad_norm"]))
  np.testing.assert_allclose(metrics["loss"], one_device["metrics"]["loss"], rtol=1e-6)


def test_weight_decay_that_would_make_params_nonfinite_skips_the_update():
  """A finite loss and gradient, but lr * weight_decay * p overflows: the update is skipped and counted,
  params and moments stay as they were (before, the step wrote inf/NaN params with skipped_updates=0)."""
  cfg = rl.resolve_config(dict(learning_rate=1e38, weight_decay=1e6, lr_schedule="constant", max_grad_norm=1.0))
  _, _, _, _, step, params, opt_state = build((1, 1, 1), cfg)
  before = to_host((params, opt_state))
  params, opt_state, metrics = step(params, opt_state, make_batch(), jax.random.key(0))
  assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
  assert float(metrics["skipped_updates"]) == 1.0 and float(metrics["skipped_nonfinite_params"]) == 1.0
  for x, y in zip(jax.tree.leaves(to_host((params, opt_state))), jax.tree.leaves(before)):
    np.testing.assert_array_equal(x, y)


def test_a_few_steps_raise_the_rewarded_responses(one_device):
  """Responses with reward 1 (positive advantage) gain logprob over three steps; the others lose it."""
  params, opt_state = fresh(one_device)
  batch = make_batch()
  logprob_fn = rl.make_logprob_fn(one_device["graphdef"], CFG, one_device["mesh"], one_device["shardings"],
                                  compiler_options=FAST_COMPILE)
  seq_logp = lambda p: np.asarray(logprob_fn(p, batch)).sum(axis=1)
  start = seq_logp(params)
  for i in range(3):
    params, opt_state, metrics = one_device["step"](params, opt_state, batch, jax.random.key(i))
    assert float(metrics["skipped_updates"]) == 0.0
  change = seq_logp(params) - start
  positive = np.asarray(batch.advantages) > 0
  assert positive.sum() == 3
  assert np.all(change[positive] > 1.0), change
  assert change[positive].min() > change[~positive].max(), change
  assert change[~positive].mean() < 0.0, change  # a wrong answer may share tokens with a right one
