"""The rollout sampler: greedy parity with transformers, logprobs, EOS, samples per prompt, TIP, sharding."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxghpo import models, parallel, rollout
from jaxghpo.rollout import filters, penalties
from tests.hf_fixtures import make_hf_model

MAX_NEW = 10
PROMPT_LENGTHS = (5, 9, 1, 7, 12, 3)  # ragged, bucket 16


def _hf_model(family, path):
  """A tiny random HF model whose matrices are scaled up 8x, so that greedy decoding wanders over many
  tokens (at the default init every row repeats one or two tokens, a weak test of positions and cache)."""
  hf = make_hf_model(family, path)
  with torch.no_grad():
    for p in hf.parameters():
      if p.ndim == 2:
        p.mul_(8.0)
  hf.save_pretrained(path)
  return hf


@pytest.fixture(scope="module", params=["qwen2", "llama"])
def family_models(request, tmp_path_factory):
  path = str(tmp_path_factory.mktemp(request.param))
  hf = _hf_model(request.param, path)
  model, cfg = models.from_pretrained(path)
  return request.param, hf, model, cfg, path


@pytest.fixture(scope="module")
def prompts():
  rng = np.random.default_rng(0)
  return [rng.integers(3, 97, n).tolist() for n in PROMPT_LENGTHS]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("qwen2_sampler"))
  _hf_model("qwen2", path)
  model, cfg = models.from_pretrained(path)
  return model, cfg, path


G = 2  # samples per prompt of the shared sampler (one compiled program serves most tests)


@pytest.fixture(scope="module")
def sampler(qwen):
  model, _, _ = qwen
  return rollout.Sampler(model, batch_size=len(PROMPT_LENGTHS), max_prompt_len=16, max_new_tokens=MAX_NEW,
                         num_samples=G, return_confidence=True, confidence_k=5, donate_cache=True)


def _rows(prompts):
  """The prompt of each output row (rows are prompt-major: row p*G+g continues prompt p)."""
  return [p for p in prompts for _ in range(G)]


def _hf_greedy(hf, prompt, eos_id):
  with torch.no_grad():
    out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                      max_new_tokens=MAX_NEW, do_sample=False, eos_token_id=eos_id, pad_token_id=0)
  return out[0, len(prompt):].tolist()


def test_greedy_matches_transformers_generate(family_models, prompts):
  family, hf, model, cfg, _ = family_models
  free = rollout.generate(model, prompts, MAX_NEW, rng=jax.random.key(0))
  free_tokens = np.asarray(free.tokens)
  assert free_tokens.shape == (len(prompts), MAX_NEW) and free_tokens.dtype == np.int32
  for i, prompt in enumerate(prompts):
    assert free_tokens[i].tolist() == _hf_greedy(hf, prompt, None), f"{family} row {i}"
  # With an EOS id that row 0 produces at its 5th token: HF stops there; we stop and pad.
  eos = int(free_tokens[0, 4])
  out = rollout.generate(model, prompts, MAX_NEW, rng=jax.random.key(1), eos_id=eos, pad_id=0)
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  assert lengths[0] <= 5
  for i, prompt in enumerate(prompts):
    theirs = _hf_greedy(hf, prompt, eos)
    assert lengths[i] == len(theirs), f"{family} row {i}"
    assert tokens[i, :lengths[i]].tolist() == theirs
    assert (tokens[i, lengths[i]:] == 0).all()


def _recomputed_logp(model, prompts, out, P, temperature):
  """log_softmax(logits / T) of each sampled token from one forward pass over prompt + response."""
  tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
  B, N = tokens.shape
  ids = np.zeros((B, P + N), np.int32)
  valid = np.zeros((B, P + N), bool)
  for i, prompt in enumerate(prompts):
    ids[i, P - len(prompt):P] = prompt
    valid[i, P - len(prompt):P] = True
    ids[i, P:] = tokens[i]
    valid[i, P:P + lengths[i]] = True
  logits = models.logits_padded(model, ids, valid)[:, P - 1:P - 1 + N]  # logits that predict each new token
  logp = jax.nn.log_softmax(logits / temperature, axis=-1)
  return np.asarray(jnp.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]), np.asarray(logp)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, 5, 0.9), (1.3, 0, 1.0), (0.0, 0, 1.0)])
def test_logprobs_match_a_separate_forward_pass(qwen, sampler, prompts, temperature, top_k, top_p):
  model, _, _ = qwen
  out = sampler(model, prompts, rng=jax.random.key(3), temperature=temperature, top_k=top_k, top_p=top_p,
                eos_id=[5, 17, 40], pad_id=0)
  lengths = np.asarray(out.lengths)
  want, _ = _recomputed_logp(model, _rows(prompts), out, 16, temperature if temperature > 0 else 1.0)
  got = np.asarray(out.logprobs)
  live = np.arange(MAX_NEW)[None] < lengths[:, None]
  np.testing.assert_allclose(got[live], want[live], atol=1e-5, rtol=0)
  assert (got[~live] == 0).all()
  assert (got[live] < 0).all()


def test_eos_pads_counts_and_masks(qwen, sampler, prompts):
  model, _, _ = qwen
  eos_ids = [5, 17, 40, 61]
  out = sampler(model, prompts, rng=jax.random.key(7), temperature=1.0, eos_id=eos_ids, pad_id=1)
  tokens, lengths, logps = np.asarray(out.tokens), np.asarray(out.lengths), np.asarray(out.logprobs)
  assert lengths.dtype == np.int32
  ended = 0
  for i in range(len(prompts) * G):
    n = lengths[i]
    body = tokens[i, :n].tolist()
    if n < MAX_NEW:  # stopped: the last kept token is an EOS, the rest is pad with logprob 0
      ended += 1
      assert body[-1] in eos_ids
      assert (tokens[i, n:] == 1).all() and (logps[i, n:] == 0).all()
    assert not set(body[:-1]) & set(eos_ids), "nothing may follow an EOS token"
  assert ended >= 1, "the test needs at least one row that stops early; pick other eos ids"
  # Every token is an EOS: each row stops after one token, and the loop stops early.
  out = sampler(model, prompts, rng=jax.random.key(7), eos_id=list(range(97)), pad_id=0)
  assert np.asarray(out.lengths).tolist() == [1] * len(prompts) * G
  assert int(out.decode_steps) == 1
  assert (np.asarray(out.tokens)[:, 1:] == 0).all()


def test_fewer_prompts_than_batch_leaves_inactive_rows(qwen, sampler, prompts):
  model, _, _ = qwen
  full = sampler(model, prompts, rng=jax.random.key(0))
  part = sampler(model, prompts[:2], rng=jax.random.key(0), pad_id=3)
  assert np.array_equal(np.asarray(part.tokens)[:2 * G], np.asarray(full.tokens)[:2 * G])
  assert np.asarray(part.lengths).tolist() == [MAX_NEW] * 2 * G + [0] * 4 * G
  assert (np.asarray(part.tokens)[2 * G:] == 3).all()


def test_bad_inputs_name_the_fault(sampler, qwen):
  model, _, _ = qwen
  with pytest.raises(ValueError, match="prompt 1 has 17 tokens"):
    sampler(model, [[1], [2] * 17], rng=jax.random.key(0))
  with pytest.raises(ValueError, match="prompt 0 is empty"):
    sampler(model, [[]], rng=jax.random.key(0))
  with pytest.raises(ValueError, match="batch_size=6"):
    sampler(model, [[1]] * 7, rng=jax.random.key(0))
  with pytest.raises(ValueError, match="top_p"):
    sampler(model, [[1]], rng=jax.random.key(0), top_p=0.0)


def test_samples_per_prompt_and_confidence(qwen, sampler, prompts):
  model, cfg, _ = qwen
  single = rollout.generate(model, prompts, MAX_NEW, rng=jax.random.key(0))
  greedy = sampler(model, prompts, rng=jax.random.key(0))
  assert greedy.tokens.shape == (len(prompts) * G, MAX_NEW)
  # Rows are prompt-major: rows p*G .. p*G+G-1 continue prompt p; greedy copies are identical. The
  # prefill is computed once per prompt and its cache repeated, so this also checks that repetition.
  np.testing.assert_array_equal(np.asarray(greedy.tokens), np.repeat(np.asarray(single.tokens), G, axis=0))
  sampled = sampler(model, prompts, rng=jax.random.key(1), temperature=1.0)
  tokens = np.asarray(sampled.tokens).reshape(len(prompts), G, MAX_NEW)
  assert any(len({tuple(r) for r in group}) > 1 for group in tokens), "samples of a prompt must differ"
  # DeepConf confidence equals -mean(top-5 logprobs) recomputed from a full forward pass.
  _, logp_all = _recomputed_logp(model, _rows(prompts), sampled, 16, 1.0)
  want = -np.mean(np.sort(logp_all, axis=-1)[..., -5:], axis=-1)
  live = np.arange(MAX_NEW)[None] < np.asarray(sampled.lengths)[:, None]
  np.testing.assert_allclose(np.asarray(sampled.confidence)[live], want[live], atol=1e-5)
  assert (np.asarray(sampled.confidence)[~live] == 0).all()


def test_thought_switch_penalty(qwen, sampler, prompts):
  model, _, _ = qwen
  base = np.asarray(sampler(model, prompts, rng=jax.random.key(0)).tokens)
  switch = int(base[0, 0])
  pen = penalties.ThoughtSwitchPenalty(token_ids=(switch,), alpha=1e4, beta=3)
  out = np.asarray(sampler(model, prompts, rng=jax.random.key(0), penalty=pen).tokens)
  # Never chosen while fewer than 3 tokens passed since the start or the last switch token.
  for row in out.tolist():
    since = 0
    for token in row:
      if since < 3:
        assert token != switch
      since = 0 if token == switch else since + 1
  assert out[0, 0] != base[0, 0]
  always = penalties.ThoughtSwitchPenalty(token_ids=(switch,), alpha=1e4, beta=MAX_NEW)
  assert not (np.asarray(sampler(model, prompts, rng=jax.random.key(0), penalty=always).tokens) == switch).any()
  for off in (penalties.ThoughtSwitchPenalty(), penalties.ThoughtSwitchPenalty((switch,), alpha=1e4, beta=0)):
    np.testing.assert_array_equal(np.asarray(sampler(model, prompts, rng=jax.random.key(0), penalty=off).tokens), base)


def test_penalty_counter_hand_worked():
  # beta = 2, switch token S = 3: response a b c S d e f -> counters 0 1 2 3 0 1 2; a, b, d, e penalised.
  switch_V = jnp.zeros(8).at[3].set(1.0)
  since = jnp.zeros((1,), jnp.int32)
  seen, hit = [], []
  for token in [5, 6, 7, 3, 5, 6, 7]:
    logits = penalties.apply_thought_switch_penalty(jnp.zeros((1, 8)), since, switch_V, 2.5, 2)
    seen.append(int(since[0]))
    hit.append(float(logits[0, 3]))
    since = penalties.update_tokens_since_switch(since, jnp.array([token]), switch_V)
  assert seen == [0, 1, 2, 3, 0, 1, 2]
  assert hit == [-2.5, -2.5, 0.0, 0.0, -2.5, -2.5, 0.0]
  with pytest.raises(ValueError, match="outside the vocabulary"):
    penalties.ThoughtSwitchPenalty(token_ids=(9,), alpha=1.0, beta=1).arrays(8)


def test_filters_hand_worked():
  cut = jax.jit(filters.filter_top_k_top_p)
  logits = jnp.log(jnp.array([[0.5, 0.2, 0.15, 0.1, 0.05]]))
  kept = lambda k, p: np.isfinite(np.asarray(cut(logits, jnp.int32(k), jnp.float32(p))))[0]
  assert kept(0, 1.0).tolist() == [True] * 5
  assert kept(2, 1.0).tolist() == [True, True, False, False, False]
  # top-p 0.75: mass above the 3rd token is 0.7 < 0.75 (kept), above the 4th 0.85 (dropped).
  assert kept(0, 0.75).tolist() == [True, True, True, False, False]
  # top-k 3 first, then top-p 0.8 within it: renormalised (0.588, 0.235, 0.176); above the 3rd: 0.824.
  assert kept(3, 0.8).tolist() == [True, True, False, False, False]
  assert kept(0, 0.01).tolist() == [True, False, False, False, False]
  ties = jnp.array([[1.0, 3.0, 3.0, 2.0]])
  assert np.isfinite(np.asarray(cut(ties, jnp.int32(1), jnp.float32(1.0))))[0].tolist() == [False, True, True, False]
  assert filters.first_argmax(ties).tolist() == [1]
  logp = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
  np.testing.assert_allclose(filters.deepconf_confidence(logp, 2), [(np.log(2) + np.log(4)) / 2], rtol=1e-6)
  np.testing.assert_allclose(filters.log_probs(jnp.array([[0.0, 2.0]]), jnp.float32(0.0)),
                             jax.nn.log_softmax(jnp.array([[0.0, 2.0]])), rtol=1e-6)


def test_donated_cache_gives_the_same_tokens(qwen, sampler, prompts):
  model, _, _ = qwen
  want = np.repeat(np.asarray(rollout.generate(model, prompts, MAX_NEW, rng=jax.random.key(0)).tokens), G, axis=0)
  for _ in range(2):  # the second call runs on the cache the first one handed back
    got = np.asarray(sampler(model, prompts, rng=jax.random.key(4)).tokens)
    np.testing.assert_array_equal(got, want)
  assert sampler._cache is not None and not sampler._cache.k[0].is_deleted()


@pytest.mark.parametrize("mesh_shape", [(2, 2, 2), (1, 8, 1)])
def test_sharded_greedy_equals_single_device(qwen, sampler, mesh_shape):
  model, cfg, path = qwen
  rng = np.random.default_rng(1)
  batch = [rng.integers(3, 97, n).tolist() for n in (4, 11, 2, 16)]  # x G = 8 rows
  want = sampler(model, batch, rng=jax.random.key(0), eos_id=7)
  mesh = parallel.make_mesh(mesh_shape)
  sharded, _ = models.from_pretrained(path)
  parallel.shard_model(sharded, mesh)
  s = rollout.Sampler(sharded, batch_size=len(batch), max_prompt_len=16, max_new_tokens=MAX_NEW, num_samples=G,
                      mesh=mesh)
  out = s(sharded, batch, rng=jax.random.key(0), eos_id=7)
  assert out.tokens.sharding.spec[0] is not None, "rows must be sharded over the batch axes"
  R = len(batch) * G
  np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(want.tokens)[:R])
  np.testing.assert_array_equal(np.asarray(out.lengths), np.asarray(want.lengths)[:R])
  np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(want.logprobs)[:R], atol=1e-5)
