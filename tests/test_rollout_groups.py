"""Groups and the batch: rows copied field by field, the batch built from the sampler's own padding and
placed whole, hint masks, and the UFT hint-NLL term acting on response-placed hints only when asked."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxghpo import curriculum, models, parallel, rl
from jaxghpo.curriculum import driver
from jaxghpo.rollout import groups as groups_lib

MODEL_CFG = models.ModelConfig(model_type="qwen2", vocab_size=32, hidden_size=32, intermediate_size=64,
                               num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, attention_bias=True,
                               tie_word_embeddings=True)
B, G, Lp, N = 2, 2, 6, 4


def make_groups(seed=0, hint=(1, 3)):
  """Two groups; the first prompt (5 tokens) has hint tokens [hint[0], hint[0] + hint[1])."""
  rng = np.random.default_rng(seed)
  prompt_tokens = np.array([5, 4])
  prompt_valid = np.arange(Lp)[None, :] >= (Lp - prompt_tokens)[:, None]
  lengths = np.array([[4, 2], [3, 1]])
  valid = np.arange(N)[None, None, :] < lengths[:, :, None]
  return groups_lib.Groups(
      prompt_ids=np.where(prompt_valid, rng.integers(1, 32, (B, Lp)), 0).astype(np.int32),
      prompt_valid=prompt_valid,
      hint_mask=groups_lib.hint_mask(prompt_valid, np.array([hint[0], 0]), np.array([hint[1], 0])),
      tokens=np.where(valid, rng.integers(1, 32, (B, G, N)), 0).astype(np.int32),
      logprobs=np.where(valid, np.log(rng.uniform(0.05, 0.5, (B, G, N))), 0).astype(np.float32),
      lengths=lengths.astype(np.int32),
      rewards=np.array([[1.0, 0.0], [0.0, 0.0]], np.float32), accuracy=np.array([[1.0, 0.0], [0.0, 0.0]], np.float32),
      completions=np.array([["a", "b"], ["c", "d"]], object), hint_text=np.array(["h", ""], object))


def test_hint_mask_finds_the_span_in_left_padded_prompts():
  valid = np.arange(Lp)[None, :] >= np.array([[3], [5]])  # prompts of 3 and 1 tokens
  mask = groups_lib.hint_mask(valid, np.array([1, 0]), np.array([2, 4]))
  np.testing.assert_array_equal(mask[0], [0, 0, 0, 0, 1, 1])
  np.testing.assert_array_equal(mask[1], [0, 0, 0, 0, 0, 1])  # clipped to the prompt's one real token


def test_rows_move_field_by_field_so_a_new_field_travels():
  @dataclasses.dataclass
  class Wider(groups_lib.Groups):
    extra: np.ndarray = None

  a = Wider(**dataclasses.asdict(make_groups(0)), extra=np.array([1, 2]))
  b = Wider(**dataclasses.asdict(make_groups(1)), extra=np.array([7, 8]))
  taken = driver.take_rows(b, np.array([1]))
  driver.put_rows(a, np.array([0]), taken)
  for f in dataclasses.fields(a):
    if getattr(a, f.name) is not None:
      np.testing.assert_array_equal(getattr(a, f.name)[0], getattr(b, f.name)[1], err_msg=f.name)
  assert a.extra.tolist() == [8, 2]


def test_batch_uses_the_sampler_padding_and_masks_dropped_groups():
  g = make_groups()
  adv = np.asarray(rl.group_advantages(g.rewards, "grpo"))
  batch = groups_lib.to_batch(g, adv, np.array([True, False]), train_hint=False)
  assert batch.prompt_len == Lp and batch.tokens.shape == (B * G, Lp + N)
  np.testing.assert_array_equal(batch.tokens[:, :Lp], np.repeat(g.prompt_ids, G, 0))
  np.testing.assert_array_equal(batch.tokens[:, Lp:], g.tokens.reshape(B * G, N))
  np.testing.assert_array_equal(batch.old_logp[:, Lp:], g.logprobs.reshape(B * G, N))
  assert (np.asarray(batch.segment_ids[:2, :Lp]) == rl.HINT).sum(1).tolist() == [3, 3]
  assert np.asarray(batch.loss_mask())[2:].sum() == 0  # the dropped group trains on nothing
  np.testing.assert_array_equal(np.asarray(batch.loss_mask())[:2].sum(1), [4, 2])


def test_to_global_places_every_array_field():
  g = make_groups()
  batch = groups_lib.to_batch(g, np.zeros((B, G)), np.ones(B, bool), train_hint=False)
  batch = batch.replace(ref_logp=np.zeros_like(batch.old_logp))
  mesh = parallel.make_mesh((1, 4, 1), devices=jax.devices()[:4])  # 4 rows over 4 devices
  placed = batch.to_global(parallel.batch_sharding(mesh, 1))
  for f in dataclasses.fields(placed):
    value = getattr(placed, f.name)
    if f.metadata.get("pytree_node", True):
      assert isinstance(value, jax.Array) and value.sharding.mesh.shape == mesh.shape, f.name
      np.testing.assert_array_equal(np.asarray(value), getattr(batch, f.name))
  assert placed.prompt_len == batch.prompt_len


@pytest.fixture(scope="module")
def grad_fn():
  mesh = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  graphdef, params = nnx.split(models.init_model(MODEL_CFG, seed=0))
  shardings = parallel.param_shardings(params, mesh)

  def make(coef):
    cfg = rl.resolve_config(dict(hint_nll_coef=coef))
    return rl.make_grad_fn(graphdef, cfg, mesh, shardings, {"xla_backend_optimization_level": 0})
  return params, make


def test_hint_nll_trains_response_placed_hints_only_when_asked(grad_fn):
  """UFT: with hint_nll_coef > 0 the forced hint (the end of the sampler's prompt) is trained by likelihood;
  the policy-gradient tokens stay the same; with 0 the loss is the plain batch's."""
  params, make = grad_fn
  g = make_groups(hint=(2, 3))  # "response" placement: the forced prefix ends the sampler's prompt
  adv = np.asarray(rl.group_advantages(g.rewards, "grpo"))
  keep = np.ones(B, bool)
  plain = groups_lib.to_batch(g, adv, keep, train_hint=False)
  trained = groups_lib.to_batch(g, adv, keep, train_hint=True)
  assert trained.prompt_len == 1
  np.testing.assert_array_equal(np.asarray(trained.loss_mask()), np.asarray(plain.loss_mask()))
  assert np.asarray(trained.response_hint_mask()).sum() == 3 * G and np.asarray(plain.response_hint_mask()).sum() == 0

  grads0, m0 = make(0.0)(params, plain)
  grads0_wide, m0_wide = make(0.0)(params, trained)
  grads1, m1 = make(1.0)(params, trained)
  # coefficient 0: the loss and its gradient are those of today's batch (the wider logprob window changes nothing)
  np.testing.assert_allclose(float(m0_wide["loss"]), float(m0["loss"]), rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grads0_wide), jax.tree.leaves(grads0)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  # coefficient 1: the hint NLL is measured and moves the update
  assert float(m1["hint_nll"]) > 0 and float(m1["num_hint_tokens"]) == 3 * G
  np.testing.assert_allclose(float(m1["loss"]), float(m0["loss"]) + float(m1["hint_nll"]), rtol=1e-5)
  assert max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(jax.tree.leaves(grads1), jax.tree.leaves(grads0))) > 1e-4


def test_step_loop_agrees_widths_and_keeps_the_last_sample():
  """One host: widths equal the rows brought; the final group is the last sampled, with its ratio."""
  cfg = curriculum.default_config()
  cfg.mode = "ghpo"
  sched = curriculum.HintScheduler(cfg)
  calls = []

  def sample(rows, ratios, width):
    calls.append((rows.tolist(), width))
    acc = np.zeros((len(rows), 2), np.float32)
    acc[ratios >= 0.5] = 1.0  # solved from the second rung on
    return acc

  out = curriculum.step_loop(sched, np.arange(3), sample, step=0)
  assert calls == [([0, 1, 2], 3), ([0, 1, 2], 3), ([0, 1, 2], 3)]
  np.testing.assert_allclose(out.ratios, [0.5, 0.5, 0.5])
  assert out.retried.all() and out.groups.min() == 1.0 and len(out.sampled) == 3
