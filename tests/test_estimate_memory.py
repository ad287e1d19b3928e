"""tools/estimate_memory.py against the real thing on CPU.

Exact: the parameter, optimizer-state and KV-cache bytes per device equal the shards that the trainer's
own placement produces on an 8-device mesh. Rough (30%): the train step's gradients + activations and the
sampler's KV cache + temporaries against XLA's buffer assignment (compiled.memory_analysis().temp_size).
"""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxghpo import models, parallel, rl
from jaxghpo.rollout import Sampler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import estimate_memory as em  # noqa: E402
from configs.base import get_base_config  # noqa: E402

TOLERANCE = 0.30  # activations: |estimate / measured - 1| <= 30%
FAST = {"xla_backend_optimization_level": 0}  # LLVM only: buffer assignment (and so temp sizes) unchanged


def small_model(**kw):
  fields = dict(model_type="qwen2", vocab_size=256, hidden_size=64, intermediate_size=256, num_layers=2, num_heads=8,
                num_kv_heads=4, head_dim=16, attention_bias=True)
  fields.update(kw)
  return models.ModelConfig(**fields)


def run_config(prompts, group, prompt_len, new_tokens, micro_batches=1, dtype="float32"):
  c = get_base_config()
  c.num_steps = 10
  c.data.prompts_per_step = prompts
  c.rollout.group_size = group
  c.rollout.max_prompt_len = prompt_len
  c.rollout.max_new_tokens = new_tokens
  c.rl.micro_batches = micro_batches
  c.model.dtype = dtype
  return c


def mesh_of(shape):
  return parallel.make_mesh(shape, devices=jax.devices()[:int(np.prod(shape))])


def shard_bytes(tree) -> int:
  """Bytes on device 0 of every array in `tree` (a replicated scalar counts once)."""
  total = 0
  for x in jax.tree.leaves(tree):
    total += sum(s.data.nbytes for s in x.addressable_shards if s.device == jax.devices()[0])
  return total


def placed_zeros(cfg, mesh):
  """Params placed exactly as the trainer places them (parallel.param_shardings), without a random init."""
  _, state = nnx.split(models.abstract_model(cfg))
  shardings = parallel.param_shardings(state, mesh)
  make = lambda: jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), state)
  return jax.jit(make, out_shardings=shardings)(), shardings


@pytest.mark.parametrize("mesh_shape,kv_heads", [((1, 2, 4), 4), ((2, 2, 2), 2)])
def test_params_and_optimizer_bytes_are_exact(mesh_shape, kv_heads):
  # vocab 250 is not divisible by 4: the embeddings stay unsplit on the tensor axis (the rules drop it).
  cfg = small_model(num_kv_heads=kv_heads, vocab_size=250)
  config = run_config(4, 4, 16, 16)
  mesh = mesh_of(mesh_shape)
  params, shardings = placed_zeros(cfg, mesh)
  rl_cfg = rl.resolve_config(config.rl)
  optimizer = rl.make_optimizer(rl_cfg, 10)
  opt_state = rl.init_opt_state(optimizer, params, shardings, mesh)

  assert em.param_bytes_per_device(cfg, mesh_shape) == shard_bytes(params)
  assert em.optimizer_bytes_per_device(cfg, rl_cfg, mesh_shape, 10) == shard_bytes(opt_state)
  # AdamW's two moments are params-sized, plus a few scalars.
  assert 2 * shard_bytes(params) <= shard_bytes(opt_state) <= 2 * shard_bytes(params) + 64
  if mesh_shape == (1, 2, 4):  # by hand: the 250 x 64 embeddings split only 2-way (fsdp) of the 8 devices
    embed = [x for x in jax.tree.leaves(params) if x.shape == (250, 64)][0]
    assert embed.addressable_shards[0].data.shape == (250, 32)


@pytest.mark.parametrize("mesh_shape,kv_heads,dtype", [((1, 2, 4), 4, "float32"), ((2, 4, 1), 2, "bfloat16"),
                                                        ((1, 2, 4), 2, "float32")])  # 2 KV heads: not split 4-way
def test_kv_cache_bytes_are_exact(mesh_shape, kv_heads, dtype):
  cfg = small_model(num_kv_heads=kv_heads, dtype=dtype)
  mesh = mesh_of(mesh_shape)
  model = models.abstract_model(cfg)  # the cache's layout needs the structure only
  sampler = Sampler(model, batch_size=4, max_prompt_len=24, max_new_tokens=8, num_samples=4, mesh=mesh)
  cache = jax.jit(sampler.layout.empty_cache)()  # the sampler's own cache layout and placement
  expected = em.kv_cache_bytes_per_device(cfg, rows=16, slots=32, mesh_shape=mesh_shape)
  assert expected == shard_bytes(cache)
  # By hand for the first case: 2 (k, v) x 2 layers x 16/2 rows x 32 slots x 4/4 heads x 16 x 4 bytes.
  if mesh_shape == (1, 2, 4) and kv_heads == 4:
    assert expected == 2 * 2 * 8 * 32 * 1 * 16 * 4


def _train_step_temp(cfg, config, mesh_shape):
  mesh = mesh_of(mesh_shape)
  graphdef, state = nnx.split(models.abstract_model(cfg))
  shardings = parallel.param_shardings(state, mesh)
  params = jax.tree.map(lambda s, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shardings, state)
  rl_cfg = rl.resolve_config(config.rl)
  optimizer = rl.make_optimizer(rl_cfg, 10)
  opt_sh = rl.optimizer_shardings(optimizer, params, shardings, mesh)
  opt_state = jax.tree.map(lambda s, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), opt_sh,
                           jax.eval_shape(optimizer.init, params))
  B = config.data.prompts_per_step * config.rollout.group_size
  P, N = config.rollout.max_prompt_len, config.rollout.max_new_tokens
  rng = np.random.default_rng(0)
  batch = rl.make_batch(rng.integers(0, cfg.vocab_size, (B, P)), np.ones((B, P), bool),
                        rng.integers(0, cfg.vocab_size, (B, N)), np.ones((B, N), bool), rng.normal(size=B),
                        rng.normal(size=(B, N)))
  step = rl.make_train_step(graphdef, rl_cfg, mesh, optimizer, shardings, compiler_options=FAST)
  return step.lower(params, opt_state, batch, jax.random.key(0)).compile().memory_analysis()


def test_train_step_activations_within_tolerance():
  """Attention-heavy shape (T = 160), float32, 2-way fsdp x 4-way tensor: 16 rows -> 8 per device."""
  cfg = small_model()
  config = run_config(prompts=4, group=4, prompt_len=96, new_tokens=64)
  mesh_shape = (1, 2, 4)
  measured = _train_step_temp(cfg, config, mesh_shape)
  est = em.estimate(config, cfg, mesh_shape)
  # Arguments: params + optimizer state (exact) + the batch (4 arrays of [16, T] / 2, and advantages).
  batch_bytes = 16 * 160 * 4 * 3 // 2 + 16 * 4 // 2
  assert measured.argument_size_in_bytes - batch_bytes == pytest.approx(est.params + est.optimizer, abs=64)
  predicted = est.gradients + est.train_activations
  ratio = predicted / measured.temp_size_in_bytes
  assert abs(ratio - 1) <= TOLERANCE, (f"estimate {predicted / 1e6:.2f} MB vs measured "
                                       f"{measured.temp_size_in_bytes / 1e6:.2f} MB: {est.train_parts}")


def test_sampler_memory_within_tolerance():
  cfg = small_model(num_layers=1, vocab_size=512)
  mesh_shape = (1, 1, 1)
  config = run_config(prompts=8, group=4, prompt_len=64, new_tokens=64)
  mesh = mesh_of(mesh_shape)
  params, _ = placed_zeros(cfg, mesh)
  sampler = Sampler(models.abstract_model(cfg), batch_size=8, max_prompt_len=64, max_new_tokens=64, num_samples=4,
                    mesh=mesh)
  measured = sampler.lower(params, [[1, 2, 3]] * 8, rng=jax.random.key(0)).compile().memory_analysis()
  est = em.estimate(config, cfg, mesh_shape)
  predicted = est.kv_cache + est.sampler_activations
  ratio = predicted / measured.temp_size_in_bytes
  assert abs(ratio - 1) <= TOLERANCE, (f"estimate {predicted / 1e6:.2f} MB vs measured "
                                       f"{measured.temp_size_in_bytes / 1e6:.2f} MB: {est.sampler_parts}")


def test_report_names_every_part():
  cfg = small_model()
  config = run_config(prompts=4, group=4, prompt_len=96, new_tokens=64, micro_batches=2)
  est = em.estimate(config, cfg, (1, 2, 4))
  assert est.train_rows_per_device == 4 and est.gradients == 2 * est.params  # 16 rows / 2 shards / 2 micro
  assert est.total == max(est.train_total, est.sampler_total)
  report = em.format_report(est, config, cfg, hbm_bytes=1e9)
  for word in ("params", "optimizer", "gradients (+ accumulator)", "activations", "attention", "KV cache",
               "sampler total", "peak"):
    assert word in report, word


def test_mesh_with_minus_one_needs_a_device_count():
  config = run_config(4, 4, 16, 16)
  config.mesh.shape = (1, -1, 1)
  with pytest.raises(ValueError, match="num_devices"):
    em.resolve_mesh_shape(config)
  assert em.resolve_mesh_shape(config, num_devices=8) == (1, 8, 1)


def test_compile_tool_ends_with_the_contract_line():
  """`estimate_memory.py --compile` (the contract the 7B config is checked by, on a small config): it compiles
  the sampler and the train step on fake devices of the mesh's size and ends with one JSON line."""
  import json
  import subprocess
  args = ["--config=configs/smoke.py", "--mesh=1,2,2"]
  out = subprocess.run([sys.executable, "tools/estimate_memory.py", *args, "--compile"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 0, out.stderr[-3000:]
  last = json.loads(out.stdout.strip().splitlines()[-1])
  assert set(last) == {"compiled_bytes_per_device", "hbm_bytes_per_device", "sequences_per_device_per_microbatch",
                       "tokens_per_sequence"}
  config = em.load_config_module(os.path.join(ROOT, "configs/smoke.py")).get_config()
  est = em.estimate(config, em.resolve_model_config(config), (1, 2, 2))
  assert last["sequences_per_device_per_microbatch"] == est.train_rows_per_device
  assert last["tokens_per_sequence"] == config.rollout.max_prompt_len + config.rollout.max_new_tokens
  assert last["hbm_bytes_per_device"] is None  # smoke.py names no chip
  assert 0.5 < est.train_total / last["compiled_bytes_per_device"] < 1.5, (est.train_total, last)
  assert "compiled sampler:" in out.stdout and "compiled train step:" in out.stdout
