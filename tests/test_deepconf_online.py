"""DeepConf online: per-row stopping inside the sampler's while_loop at a per-prompt threshold (data, no
recompilation), agreeing token for token with the offline simulation of the same stops on the full
traces; and the evaluation-side thresholds, votes and token counts."""
import jax
import ml_collections
import numpy as np
import pytest

from jaxghpo import evaluation, models, rollout
from jaxghpo import deepconf

V, N, G, W = 24, 24, 8, 4
PROMPTS = [[3, 1, 4, 1, 5], [2, 7, 1, 8]]


@pytest.fixture(scope="module")
def setup():
  cfg = models.ModelConfig(model_type="qwen2", vocab_size=V, hidden_size=32, intermediate_size=64, num_layers=2,
                           num_heads=2, num_kv_heads=2, head_dim=16, tie_word_embeddings=True, attention_bias=True)
  model = models.init_model(cfg, seed=5)
  sampler = rollout.Sampler(model, batch_size=2, max_prompt_len=8, max_new_tokens=N, num_samples=G,
                            return_confidence=True, confidence_k=8)
  return model, sampler


def test_stops_where_the_offline_simulation_says_and_never_recompiles(setup):
  model, sampler = setup
  call = lambda **kw: sampler(model, PROMPTS, rng=jax.random.key(0), temperature=1.0, **kw)
  full = call()
  base_tokens, conf = np.asarray(full.tokens), np.asarray(full.confidence)
  assert not np.asarray(full.stopped).any() and (np.asarray(full.lengths) == N).all()
  compiled = sampler._fn._cache_size()

  # Off (-inf) is the same as no threshold.
  off = call(stop_threshold=[-np.inf, -np.inf], stop_window=W)
  np.testing.assert_array_equal(np.asarray(off.tokens), base_tokens)
  # +inf stops every row as soon as it has a full window.
  on = call(stop_threshold=np.inf, stop_window=W)
  assert np.asarray(on.stopped).all() and (np.asarray(on.lengths) == W).all() and int(on.decode_steps) == W

  # A threshold per prompt, between its traces' window means: the same tokens up to each row's stop, which
  # is the end of its first window below the threshold (evaluation.early_stop_savings on the full traces).
  windows = [evaluation.group_confidence(c, W) for c in conf]
  lowest = np.array([w.min() for w in windows])  # about half of each prompt's traces dip below the median
  thresholds = np.array([np.median(lowest[b * G:(b + 1) * G]) + 1e-4 for b in range(2)], np.float32)
  part = call(stop_threshold=thresholds, stop_window=W)
  lengths, stopped = np.asarray(part.lengths), np.asarray(part.stopped)
  for r in range(2 * G):
    sim = evaluation.early_stop_savings([windows[r]], [N], float(thresholds[r // G]), window=W)
    assert lengths[r] == sim["tokens_kept"], r
    assert stopped[r] == (windows[r] < thresholds[r // G]).any()  # also when the low window is the last one
    np.testing.assert_array_equal(np.asarray(part.tokens)[r, :lengths[r]], base_tokens[r, :lengths[r]])
    assert (np.asarray(part.tokens)[r, lengths[r]:] == 0).all()
  assert 0 < stopped.sum() < 2 * G
  assert sampler._fn._cache_size() == compiled  # thresholds and windows are data

  with pytest.raises(ValueError, match="return_confidence=True"):
    rollout.Sampler(model, batch_size=2, max_prompt_len=8, max_new_tokens=N)(model, PROMPTS, rng=0,
                                                                            stop_threshold=0.0)


def dc_config(**kw):
  c = ml_collections.ConfigDict({"deepconf": dict(enabled=True, warmup_traces=2, window=2, percentile=50.0)})
  c.deepconf.update(kw)
  return c


def test_config_and_thresholds():
  dc = deepconf.from_config(dc_config(), num_samples=4)
  assert dc == deepconf.DeepConfOnline(2, 2, 50.0) and dc.keep_frac == 0.5
  assert deepconf.from_config(dc_config(enabled=False, warmup_traces=4), num_samples=4) is None
  with pytest.raises(ValueError, match="warmup_traces=4 must be in"):  # no trace left to sample online
    deepconf.from_config(dc_config(warmup_traces=4), num_samples=4)
  # Problem 0: warm-up lowest windows 1.0 and 3.0 -> median 2.0; problem 1: warm-up traces empty -> -inf.
  conf = np.array([[1, 1, 5, 5], [3, 3, 4, 4], [0, 0, 0, 0], [0, 0, 0, 0],
                   [9, 9, 9, 9], [9, 9, 9, 9], [9, 9, 9, 9], [9, 9, 9, 9]], np.float32)
  lengths = np.array([4, 4, 4, 4, 0, 0, 4, 4])
  np.testing.assert_array_equal(deepconf.warmup_thresholds(conf, lengths, 4, dc), [2.0, -np.inf])


def test_record_and_summary_hand_worked():
  dc = deepconf.DeepConfOnline(warmup_traces=2, window=2, percentile=50.0)
  conf = [np.array([5, 5, 5.0]), np.array([1, 1, 1.0]), np.array([4, 4, 4.0]), np.array([1, 1, 1.0])]
  kw = dict(offline_answers=["7", "3", "7", "3"], offline_correct=[True, False, True, False], offline_conf_N=conf,
            offline_lengths=np.array([3, 3, 3, 3]), threshold=2.0)
  rec = deepconf.problem_record(dc, online_answers=["3", "7"], online_correct=[False, True],
                                online_stopped=[True, False], online_lengths=np.array([2, 3]), **kw)
  # Offline keeps the 2 most confident (both "7"); online votes 7, 3 (warm-up) + 7 (the finished one).
  assert rec["offline_vote_correct"] and rec["online_vote_correct"]
  assert rec["offline_tokens"] == 12 and rec["online_tokens"] == 6 + 5 and rec["online_stopped"] == 1
  # A second problem where the online traces both stop: the warm-up tie (7 then 3) votes 7.
  rec2 = deepconf.problem_record(dc, online_answers=["3", "3"], online_correct=[False, False],
                                 online_stopped=[True, True], online_lengths=np.array([2, 2]), **kw)
  assert rec2["online_vote_correct"] and rec2["online_tokens"] == 10
  out = deepconf.summarize([rec, rec2])
  assert out["tokens_saved_frac"] == pytest.approx(1 - 21 / 24) and out["traces_stopped_frac"] == 0.75
  assert out["offline_vote_acc"] == 1.0 and out["online_vote_acc"] == 1.0
  assert set(deepconf.RECORD_NUMBERS) <= set(rec)
  with pytest.raises(ValueError, match="expected 2"):
    deepconf.problem_record(dc, online_answers=["3"], online_correct=[False], online_stopped=[True],
                            online_lengths=np.array([2]), **kw)
