"""Checkpointer: sharded params, optax state and host state round-trip exactly; keep-last-K; resume; kill."""
import os
import select
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tests.procs import wait_all
from flax import nnx

from jaxghpo import checkpoint, curriculum, models, parallel
from jaxghpo import rl as ts

CFG = models.ModelConfig(model_type="qwen2", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=1,
                         num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True)


def _sharded_params(mesh_shape=(2, 2, 2), seed=0):
  """The tiny model's nnx.State placed on a mesh by its logical axes (numpy init: no eager jax compiles)."""
  mesh = parallel.make_mesh(mesh_shape)
  abstract = nnx.state(models.abstract_model(CFG))
  shardings = parallel.param_shardings(abstract, mesh)
  rng = np.random.default_rng(seed)
  values = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(x.dtype), abstract)
  params = jax.tree.map(lambda s, sub: jax.tree.map(lambda x: jax.device_put(x, s), sub), shardings, values)
  return mesh, params


def _host_state():
  return {
      "ids": np.array([2**40 + 1, -5, 2**62], np.int64),   # needs int64 (jax x64 is off)
      "ema": np.array([[0.25, np.nan], [1.5, -np.inf]], np.float32),
      "empty": np.zeros((0, 3), np.int32),
      "nested": {"level": {"count": np.int64(7), "rate": np.float32(0.125), "flag": np.bool_(True)}},
      "py": {"int": 3, "float": 2.5, "nan": float("nan"), "str": "ghpo", "none": None, "bool": False},
      "tuple": (1, "a", [2, 3]),
  }


def _assert_same_host(a, b):
  assert type(a) is type(b), (a, b)
  if isinstance(a, dict):
    assert a.keys() == b.keys()
    for k in a:
      _assert_same_host(a[k], b[k])
  elif isinstance(a, (list, tuple)):
    assert len(a) == len(b)
    for x, y in zip(a, b):
      _assert_same_host(x, y)
  elif isinstance(a, (np.ndarray, np.generic)):
    assert a.dtype == b.dtype and np.shape(a) == np.shape(b)
    np.testing.assert_array_equal(a, b)
  elif isinstance(a, float) and np.isnan(a):
    assert np.isnan(b)
  else:
    assert a == b


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert x.dtype == y.dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_sharded_params_adamw_and_host_state(tmp_path):
  mesh, params = _sharded_params()
  shardings = parallel.param_shardings(params, mesh)
  # The project's optimizer: clip by global norm + AdamW masked to matrices + a schedule.
  optimizer = ts.make_optimizer(ts.resolve_config(), total_steps=10)
  opt_state = ts.init_opt_state(optimizer, params, shardings, mesh)
  # One update so the moments and the count are not at their initial values.
  @jax.jit
  def update(params, opt_state):
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.5), params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params, opt_state = update(params, opt_state)
  rng = jax.random.fold_in(jax.random.key(42), 3)
  host = {**_host_state(), "rng": rng, "data": {"step": 5, "seed": 1, "batch": 8}}

  with checkpoint.Checkpointer(tmp_path / "ckpt", max_to_keep=2) as ckpt:
    assert ckpt.latest_step() is None
    assert ckpt.save(3, params=params, opt_state=opt_state, host_state=host)
    assert not ckpt.save(3, params=params, opt_state=opt_state, host_state=host)  # already saved: no-op
    ckpt.wait()
    assert ckpt.latest_step() == 3

    # Restore onto the same layout and onto another one: leaves land where the target says.
    for target_mesh in (mesh, parallel.make_mesh((1, 4, 2))):
      p_sh = parallel.param_shardings(params, target_mesh)
      o_sh = ts.optimizer_shardings(optimizer, params, p_sh, target_mesh)
      p_target = checkpoint.abstract_target(params, p_sh)
      o_target = checkpoint.abstract_target(opt_state, o_sh)
      p2, o2, h2 = ckpt.restore(3, p_target, o_target)
      _assert_trees_equal(params, p2)
      _assert_trees_equal(opt_state, o2)
      for got, want in zip(jax.tree.leaves(p2), jax.tree.leaves(p_target)):
        assert got.sharding == want.sharding
      for got, want in zip(jax.tree.leaves(o2), jax.tree.leaves(o_target)):
        assert got.sharding == want.sharding
    assert isinstance(p2, nnx.State)
    assert any(s.spec != jax.sharding.PartitionSpec() for s in jax.tree.leaves(p_sh))  # really sharded

    rng2 = h2.pop("rng")
    assert jax.dtypes.issubdtype(rng2.dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.key_data(rng2), jax.random.key_data(rng))
    np.testing.assert_array_equal(jax.random.uniform(rng2, (4,)), jax.random.uniform(rng, (4,)))
    host.pop("rng")
    _assert_same_host(host, h2)
    # Host state only (e.g. for a tool): no targets.
    assert ckpt.restore(3)[:2] == (None, None)


def test_scheduler_state_round_trips_exactly(tmp_path):
  sched = curriculum.HintScheduler(curriculum.default_config())
  ids = np.array([3, 2**40, 17, 5], np.int64)
  rng = np.random.default_rng(0)
  for step in range(3):
    ratios = sched.plan(ids, step=step)
    sched.update(ids, ratios, rng.integers(0, 2, (4, 4)).astype(np.float32), step=step)
  state = sched.state_dict()
  with checkpoint.Checkpointer(tmp_path, async_save=False) as ckpt:
    ckpt.save(1, host_state={"scheduler": state})
    _, _, host = ckpt.restore(1)
  _assert_same_host(state, host["scheduler"])
  restored = curriculum.HintScheduler(curriculum.default_config())
  restored.load_state_dict(host["scheduler"])
  np.testing.assert_array_equal(restored.plan(ids, step=3), sched.plan(ids, step=3))


def test_keep_last_k_and_resume_in_a_new_checkpointer(tmp_path):
  mesh, params = _sharded_params((8, 1, 1))
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    for step in (10, 20, 30, 40):
      ckpt.save(step, params=params, host_state={"step": step})
    ckpt.wait()
    assert ckpt.all_steps() == [30, 40]
    with pytest.raises(ValueError, match="later step 40"):
      ckpt.save(35, params=params)
  assert sorted(d for d in os.listdir(tmp_path) if d.isdigit()) == ["30", "40"]
  with checkpoint.Checkpointer(tmp_path, max_to_keep=2) as again:  # a rerun with the same workdir
    assert again.latest_step() == 40
    p, opt, host = again.restore(None, checkpoint.abstract_target(params))
    assert opt is None and host == {"step": 40}
    _assert_trees_equal(params, p)
    with pytest.raises(FileNotFoundError, match="saved steps: \\[30, 40\\]"):
      again.restore(10, checkpoint.abstract_target(params))
    with pytest.raises(ValueError, match="holds no opt_state"):
      again.restore(40, None, checkpoint.abstract_target(params))


def test_async_save_then_wait_is_independent_of_later_changes(tmp_path):
  """save() returns before writing; the caller may donate the arrays and mutate host arrays right away."""
  mesh, params = _sharded_params()
  expected = jax.tree.map(np.asarray, params)
  counts = np.arange(1000, dtype=np.int64)
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, params=params, host_state={"counts": counts})
    target = checkpoint.abstract_target(params)
    jax.tree.map(lambda x: x.delete(), params)  # what a donated train step does to its inputs
    counts[:] = -1
    ckpt.wait()
    assert ckpt.latest_step() == 1
    p, _, host = ckpt.restore(1, target)
  _assert_trees_equal(expected, p)
  np.testing.assert_array_equal(host["counts"], np.arange(1000))


def test_errors_name_the_problem(tmp_path):
  with checkpoint.Checkpointer(tmp_path) as ckpt:
    with pytest.raises(TypeError, match=r"host_state\['bad'\]: dict key 1"):
      ckpt.save(1, host_state={"bad": {1: 2}})
    with pytest.raises(TypeError, match="object"):
      ckpt.save(1, host_state={"x": np.array([None])})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
      ckpt.restore()
    with pytest.raises(ValueError, match="no sharding"):
      ckpt.save(1, params={"w": jnp.ones(2)})
      ckpt.restore(1, {"w": jax.ShapeDtypeStruct((2,), jnp.float32)})


_WORKER = textwrap.dedent("""
    import sys, time
    import jax
    import numpy as np
    from flax import nnx
    sys.path.insert(0, {root!r})
    from jaxghpo import checkpoint, models, parallel
    CFG = models.ModelConfig(model_type="qwen2", vocab_size=64, hidden_size=32, intermediate_size=64,
                             num_layers=1, num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True)
    mesh = parallel.make_mesh((2, 2, 2))
    ckpt = checkpoint.Checkpointer({dir!r}, max_to_keep=3)
    abstract = nnx.state(models.abstract_model(CFG))
    shardings = parallel.param_shardings(abstract, mesh)
    for step in (1, 2):
      rng = np.random.default_rng(step)
      values = jax.tree.map(lambda x: rng.standard_normal(x.shape).astype(x.dtype), abstract)
      params = jax.tree.map(lambda s, sub: jax.tree.map(lambda x: jax.device_put(x, s), sub), shardings, values)
      ckpt.save(step, params=params, host_state={{"ids": np.arange(step, dtype=np.int64) + 2**40}})
    ckpt.wait()
    print("saved", flush=True)
    time.sleep(600)
""")


def test_sigkill_after_save_then_restore_in_a_new_process(tmp_path):
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  code = _WORKER.format(root=root, dir=str(tmp_path / "ckpt"))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env, cwd=root)
  try:
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    assert ready, "the saving process printed nothing within 120 s"
    line = proc.stdout.readline()
    assert line.strip() == "saved", proc.stderr.read() if proc.poll() is not None else line
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  mesh, params = _sharded_params((2, 2, 2), seed=2)
  ckpt = checkpoint.Checkpointer(tmp_path / "ckpt")
  assert ckpt.latest_step() == 2
  p, _, host = ckpt.restore(2, checkpoint.abstract_target(params))
  ckpt.close()
  _assert_trees_equal(params, p)
  assert host["ids"].dtype == np.int64
  np.testing.assert_array_equal(host["ids"], np.arange(2, dtype=np.int64) + 2**40)


_HOST_WORKER = textwrap.dedent("""
    import sys
    import jax
    jax.distributed.initialize(coordinator_address="127.0.0.1:{port}", num_processes=2, process_id={pid})
    import numpy as np
    sys.path.insert(0, {root!r})
    from jaxghpo import checkpoint, parallel
    mesh = parallel.make_mesh((1, 4, 1))   # 2 devices per process: fsdp spans both processes
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp", None))
    full = np.arange(32, dtype=np.float32).reshape(8, 4)
    params = {{"w": jax.make_array_from_callback(full.shape, sharding, lambda idx: full[idx])}}
    ckpt = checkpoint.Checkpointer({dir!r})
    ckpt.save(1, params=params, host_state={{"ids": np.arange(3, dtype=np.int64) + 2**40, "step": 1}})
    ckpt.wait()
    restored, _, host = ckpt.restore(1, checkpoint.abstract_target(params))
    ckpt.close()
    for shard in restored["w"].addressable_shards:
      np.testing.assert_array_equal(np.asarray(shard.data), full[shard.index])
    assert restored["w"].sharding == sharding
    assert host["ids"].dtype == np.int64 and host["step"] == 1
    print("ok", jax.process_index(), flush=True)
""")


@pytest.mark.slow
def test_two_processes_save_and_restore_together(tmp_path):
  """No process-0-only step deadlocks; each process restores its shards; one process reads it all back."""
  import portpicker  # noqa: PLC0415
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  port = portpicker.pick_unused_port()
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu")
  procs = [subprocess.Popen([sys.executable, "-c", _HOST_WORKER.format(port=port, pid=i, root=root,
                                                                        dir=str(tmp_path / "ckpt"))],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=root)
           for i in range(2)]
  logs = wait_all(procs)
  for i, p in enumerate(procs):
    assert p.returncode == 0 and f"ok {i}" in logs[i], f"process {i} failed:\n{logs[i][-4000:]}"
  mesh = parallel.make_mesh((1, 8, 1))
  target = {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32,
                                      sharding=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp")))}
  with checkpoint.Checkpointer(tmp_path / "ckpt") as ckpt:
    params, _, host = ckpt.restore(1, target)
  np.testing.assert_array_equal(np.asarray(params["w"]), np.arange(32, dtype=np.float32).reshape(8, 4))
  assert host["step"] == 1
