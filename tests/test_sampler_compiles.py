"""After one warm-up call, new prompts (any length up to the bucket), seeds and sampling controls compile nothing."""
import contextlib

import jax
import numpy as np
from jax import monitoring

from jaxghpo import models, parallel, rollout
from jaxghpo.rollout import penalties

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


@contextlib.contextmanager
def count_compiles():
  """Yields a list that collects one entry per XLA backend compilation inside the block."""
  seen = []

  def listener(event, duration_secs, **kwargs):
    if event == _COMPILE_EVENT:
      seen.append(duration_secs)

  monitoring.register_event_duration_secs_listener(listener)
  try:
    yield seen
  finally:
    monitoring.unregister_event_duration_listener(listener)


def _model():
  cfg = models.ModelConfig(model_type="llama", vocab_size=50, hidden_size=64, intermediate_size=128, num_layers=2,
                           num_heads=4, num_kv_heads=2, head_dim=16, tie_word_embeddings=True)
  return models.init_model(cfg, seed=1)


def test_counter_sees_compilations():
  with count_compiles() as seen:
    jax.jit(lambda x: x * 3 + 1)(np.arange(7.0))
  assert len(seen) == 1


def test_no_compilation_after_warm_up():
  model = _model()
  # generate() below draws the same kept Sampler (same structure and sizes): one compiled program.
  sampler = rollout.sampler_for(model, batch_size=4, max_prompt_len=12, max_new_tokens=6, num_samples=2,
                                return_confidence=True)
  rng = np.random.default_rng(0)

  def prompts(n_prompts, max_len):
    return [rng.integers(1, 50, rng.integers(1, max_len + 1)).tolist() for _ in range(n_prompts)]

  sampler(model, prompts(4, 3), rng=jax.random.key(0))  # warm-up: compiles once
  calls = [
      dict(temperature=0.0),
      dict(temperature=1.0, top_k=5),
      dict(temperature=0.6, top_p=0.8, eos_id=7, pad_id=2),
      dict(temperature=1.3, top_k=3, top_p=0.5, eos_id=[1, 2, 3]),
      dict(temperature=1.0, penalty=penalties.ThoughtSwitchPenalty((4, 9), alpha=3.0, beta=2)),
  ]
  with count_compiles() as seen:
    for i, controls in enumerate(calls):
      batch = prompts(4 - i % 2, 12)  # new lengths up to the bucket, sometimes fewer prompts
      out = sampler(model, batch, rng=jax.random.key(i + 1), **controls)
      np.asarray(out.tokens)
    # The contract wrapper reuses the kept Sampler: same number of prompts, lengths within the bucket.
    for seed in range(3):
      out = rollout.generate(model, prompts(4, 12), 6, rng=jax.random.key(seed), temperature=0.9, top_k=4,
                             num_samples=2, max_prompt_len=12, return_confidence=True)
      np.asarray(out.tokens)
  assert seen == [], f"{len(seen)} compilations after warm-up"


def test_lowering_from_shapes_is_the_program_a_call_runs():
  """Sampler.lower_abstract (ShapeDtypeStructs only: what a TPU slice's compile on a CPU host gets) lowers the
  very program a call with real prompts lowers, on a sharded mesh too; its parts run and agree with it."""
  model = _model()
  mesh = jax.make_mesh((1, 4, 1), ("data", "fsdp", "tensor"), axis_types=(jax.sharding.AxisType.Auto,) * 3,
                       devices=jax.devices()[:4])
  for m in (None, mesh):
    params = model if m is None else parallel.shard_model(model, m)
    sampler = rollout.Sampler(model, batch_size=4, max_prompt_len=8, max_new_tokens=5, num_samples=2, mesh=m)
    concrete = sampler.lower(params, [[1, 2, 3], [4], [5, 6], [7, 8, 9, 10]], rng=jax.random.key(0), temperature=1.0)
    abstract = sampler.lower_abstract(params)
    assert abstract.as_text() == concrete.as_text()
    parts = sampler.lower_parts(params)
    assert set(parts) == {"prefill", "decode_step"}
    for lowered in parts.values():
      lowered.compile()
