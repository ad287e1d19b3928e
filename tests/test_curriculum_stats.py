"""Statistics tables, the pure decision rules, the counter RNG and the config: hand-worked numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from jaxghpo import curriculum
from jaxghpo.curriculum import counter_rng, modes
from jaxghpo.curriculum.stats import LevelStats, ProblemStats, beta_posterior_update, ema_update, last_occurrence

NB = 9  # ratio buckets at grid 0.125


def _record(stats, ids, buckets, successes, samples, step, levels=None):
  ids = np.asarray(ids, np.int64)
  slots, evicted = stats.ensure(ids)
  levels = np.full(ids.size, -1, np.int32) if levels is None else np.asarray(levels, np.int32)
  stats.record(slots, np.asarray(buckets, np.int32), np.asarray(successes, np.int32),
               np.asarray(samples, np.int32), step, levels, ema_decay=0.8, prior_alpha=1.0, prior_beta=1.0,
               posterior_decay=0.5)
  return slots, evicted


# --- pure helpers ----------------------------------------------------------------------------
def test_last_occurrence():
  np.testing.assert_array_equal(last_occurrence(np.array([5, 3, 5, 2, 3])), [3, 4, 2])  # keys 2, 3, 5


def test_ema_update():
  np.testing.assert_allclose(ema_update(np.array([0.5, 0.5]), np.array([1.0, 1.0]), 0.8, np.array([False, True])),
                             [0.6, 1.0], rtol=1e-6)


def test_beta_posterior_update_keeps_discounted_evidence_only_at_same_bucket():
  a, b = beta_posterior_update(np.array([3.0, 3.0]), np.array([5.0, 5.0]), np.array([True, False]),
                               np.array([2.0, 2.0]), np.array([6.0, 6.0]), prior_alpha=1.0, prior_beta=1.0,
                               decay=0.5)
  np.testing.assert_allclose(a, [1 + 0.5 * 2 + 2, 1 + 2])  # 4, 3
  np.testing.assert_allclose(b, [1 + 0.5 * 4 + 6, 1 + 6])  # 9, 7


def test_group_tests_use_threshold():
  rewards = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.5]])
  np.testing.assert_array_equal(modes.group_successes(rewards, 0.0), [0, 1, 3, 1])
  np.testing.assert_array_equal(modes.is_difficult(rewards, 0.0), [True, False, False, False])
  np.testing.assert_array_equal(modes.is_difficult(rewards, 0.5), [True, False, False, True])
  np.testing.assert_array_equal(modes.has_signal(rewards), [False, True, False, True])


def test_ladder_next():
  got = modes.ladder_next(np.array([0.0, 0.25, 0.3, 0.5, 0.75, np.nan], np.float32), (0.25, 0.5, 0.75))
  np.testing.assert_array_equal(got, np.array([0.25, 0.5, 0.5, 0.75, np.nan, np.nan], np.float32))
  # float32 noise on a rung does not skip or repeat it
  np.testing.assert_array_equal(modes.ladder_next(np.array([0.25 - 1e-8, 0.25 + 1e-8]), (0.25, 0.5)), [0.5, 0.5])


def test_snap_to_grid_and_bucket():
  np.testing.assert_array_equal(modes.snap_to_grid(np.array([0.06, 0.07, 0.8, -0.1, 0.7]), 0.125, 0.7),
                                np.array([0.0, 0.125, 0.625, 0.0, 0.625], np.float32))
  np.testing.assert_array_equal(modes.ratio_bucket(np.array([0.0, 0.124, 0.25, 0.74, 1.0]), 0.125), [0, 1, 2, 6, 8])


def test_adaptive_next_ratio():
  kw = dict(target_low=0.25, target_high=0.75, step_up=0.25, step_down=0.125, grid=0.125, max_ratio=0.75)
  got = modes.adaptive_next_ratio(np.array([0.5, 0.5, 0.5, 0.0, 0.75]), np.array([0.9, 0.1, 0.5, 0.9, 0.1]), **kw)
  np.testing.assert_array_equal(got, np.array([0.375, 0.75, 0.5, 0.0, 0.75], np.float32))


def test_anneal_ratio():
  lin = dict(start_ratio=0.5, num_steps=100, schedule="linear")
  assert [modes.anneal_ratio(s, **lin) for s in (0, 50, 100, 150)] == [0.5, 0.25, 0.0, 0.0]
  cos = dict(start_ratio=0.5, num_steps=100, schedule="cosine")
  assert modes.anneal_ratio(0, **cos) == 0.5
  assert modes.anneal_ratio(50, **cos) == pytest.approx(0.25)
  assert modes.anneal_ratio(25, **cos) == pytest.approx(0.25 * (1 + math.cos(math.pi / 4)))
  assert modes.anneal_ratio(100, **cos) == pytest.approx(0.0)


def test_counter_uniforms_are_uniform_deterministic_and_keyed():
  ids = np.arange(20000, dtype=np.int64) * 7919 - 10**12
  u = counter_rng.uniforms(3, 5, ids, 4)
  assert u.shape == (20000, 4) and u.min() >= 0.0 and u.max() < 1.0
  assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
  assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03
  np.testing.assert_array_equal(u, counter_rng.uniforms(3, 5, ids, 4))
  np.testing.assert_array_equal(u[100:200], counter_rng.uniforms(3, 5, ids[100:200], 4))  # batch-independent
  assert not np.array_equal(u, counter_rng.uniforms(4, 5, ids, 4))  # seed
  assert not np.array_equal(u, counter_rng.uniforms(3, 6, ids, 4))  # step


def test_binomial_ratio_mean_variance_and_grid():
  ids = np.arange(20000, dtype=np.int64)
  r = modes.binomial_ratio(0.3, seed=0, step=1, ids_B=ids, num_draws=8)
  assert set(np.unique(r * 8).tolist()) <= set(range(9))
  assert abs(r.mean() - 0.3) < 0.005 and abs(r.var() - 0.3 * 0.7 / 8) < 0.002
  assert (modes.binomial_ratio(0.0, 0, 1, ids, 8) == 0).all() and (modes.binomial_ratio(1.0, 0, 1, ids, 8) == 1).all()


# --- ProblemStats ----------------------------------------------------------------------------
def test_lookup_and_insert_keep_a_sorted_index():
  stats = ProblemStats(NB, max_problems=100, initial_capacity=2)
  ids = np.array([2**62, -5, 17, 3], np.int64)
  slots, evicted = stats.ensure(ids)
  np.testing.assert_array_equal(slots, [3, 0, 2, 1])  # new ids take slots in ascending id order
  assert evicted.size == 0 and stats.size == 4 and stats.capacity >= 4
  np.testing.assert_array_equal(stats.lookup(np.array([17, 4, 2**62, -5])), [2, -1, 3, 0])
  slots2, _ = stats.ensure(np.array([4, 17, 4], np.int64))
  np.testing.assert_array_equal(slots2, [4, 2, 4])
  np.testing.assert_array_equal(stats.lookup(ids), slots)


def test_record_counts_all_rows_and_sequential_fields_take_last():
  stats = ProblemStats(NB, max_problems=10)
  # problem 7 twice in one batch (buckets 0 and 2), problem 8 once
  slots, _ = _record(stats, [7, 8, 7], buckets=[0, 0, 2], successes=[0, 3, 4], samples=[4, 4, 4], step=5,
                     levels=[2, -1, 2])
  s7, s8 = slots[0], slots[1]
  np.testing.assert_array_equal(stats.attempts[s7], [4, 0, 4, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(stats.successes[s7], [0, 0, 4, 0, 0, 0, 0, 0, 0])
  assert stats.groups[s7] == 2 and stats.groups[s8] == 1
  assert stats.ema_pass[s7] == pytest.approx(1.0) and stats.ema_pass[s8] == pytest.approx(0.75)
  assert (stats.alpha[s7], stats.beta[s7], stats.post_bucket[s7]) == (5.0, 1.0, 2)  # prior 1,1 + 4 of 4
  assert stats.level[s7] == 2 and stats.level[s8] == -1 and stats.last_step[s7] == 5
  # same bucket again: discounted evidence kept; ema moves by (1 - 0.8)
  _record(stats, [7], buckets=[2], successes=[0], samples=[4], step=6)
  assert stats.alpha[s7] == pytest.approx(1 + 0.5 * 4 + 0) and stats.beta[s7] == pytest.approx(1 + 0 + 4)
  assert stats.ema_pass[s7] == pytest.approx(0.8 * 1.0 + 0.2 * 0.0)
  assert stats.level[s7] == 2  # -1 keeps the stored level
  assert stats.posterior_mean(np.array([s7]))[0] == pytest.approx(3 / 8)


def test_eviction_drops_least_recently_seen_outside_the_batch():
  stats = ProblemStats(NB, max_problems=3)
  for step, pid in enumerate([10, 20, 30]):
    _record(stats, [pid], [0], [1], [4], step, levels=[step])
  # 10 (step 0) is oldest; the batch [40, 20] protects 20; one slot is needed
  slots, evicted = _record(stats, [40, 20], [0, 0], [0, 0], [4, 4], step=3)
  np.testing.assert_array_equal(evicted, [0])  # level of problem 10
  assert stats.lookup(np.array([10]))[0] == -1 and slots[0] == 0  # 40 reuses 10's slot, cleared
  assert stats.groups[0] == 1 and stats.attempts[0].sum() == 4 and stats.level[0] == -1
  assert stats.evicted_total == 1 and stats.size == 3
  # a batch with more new problems than memory names the key to raise
  with pytest.raises(ValueError, match="max_problems"):
    stats.ensure(np.array([1, 2, 3, 4], np.int64))


def test_problem_state_round_trip_including_empty():
  empty = ProblemStats(NB, max_problems=50)
  state = empty.state_dict()
  assert state["size"] == 0 and state["ids"].shape == (1,)  # never an empty array (orbax refuses them)
  restored = ProblemStats(NB, max_problems=50)
  restored.load_state_dict(state)
  assert restored.size == 0 and restored.lookup(np.array([0]))[0] == -1

  stats = ProblemStats(NB, max_problems=50)
  _record(stats, [9, 4, 7], [0, 1, 2], [1, 2, 3], [4, 4, 4], step=2, levels=[1, 2, 3])
  restored = ProblemStats(NB, max_problems=50)
  restored.load_state_dict(stats.state_dict())
  for key, value in stats.state_dict().items():
    np.testing.assert_array_equal(restored.state_dict()[key], value)
  np.testing.assert_array_equal(restored.lookup(np.array([4, 7, 9, 5])), stats.lookup(np.array([4, 7, 9, 5])))
  with pytest.raises(ValueError, match="max_problems"):
    ProblemStats(NB, max_problems=2).load_state_dict(stats.state_dict())
  with pytest.raises(ValueError, match="ratio_grid"):
    ProblemStats(5, max_problems=50).load_state_dict(stats.state_dict())


# --- LevelStats ------------------------------------------------------------------------------
def test_level_stats_record():
  levels = LevelStats(max_levels=4, num_buckets=NB)
  # level index 1 (level 0): two groups at bucket 0 and 2; index 0 (unknown): one group
  levels.record(np.array([1, 1, 0]), np.array([0, 2, 0]), np.array([2, 4, 1]), np.array([4, 4, 4]),
                next_ratio_U=np.array([0.25, 0.5, 0.0]), level_idx_U=np.array([1, 1, 0]), ema_decay=0.8)
  np.testing.assert_array_equal(levels.attempts[1], [4, 0, 4, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(levels.successes[1], [2, 0, 4, 0, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(levels.groups, [1, 2, 0, 0, 0])
  assert levels.ema_pass[1] == pytest.approx(0.75)  # first: mean of 0.5 and 1.0
  assert levels.ratio_ema[1] == pytest.approx(0.375)
  levels.record(np.array([1]), np.array([0]), np.array([0]), np.array([4]), next_ratio_U=np.array([0.75]),
                level_idx_U=np.array([1]), ema_decay=0.8)
  assert levels.ema_pass[1] == pytest.approx(0.8 * 0.75)
  assert levels.ratio_ema[1] == pytest.approx(0.8 * 0.375 + 0.2 * 0.75)
  levels.record_evicted(np.array([1, 1, 3]))
  np.testing.assert_array_equal(levels.evicted, [0, 2, 0, 1, 0])


# --- config ----------------------------------------------------------------------------------
def test_default_config_has_every_key():
  cfg = curriculum.default_config()
  for key in ("mode", "seed", "total_steps", "difficulty_threshold", "ladder", "cold_start_steps", "filter_refill",
              "target_low", "target_high", "ratio_grid", "initial_ratio", "adaptive_retry", "anneal_start_ratio",
              "anneal_steps", "anneal_schedule", "anneal_random", "max_problems", "max_levels"):
    assert key in cfg, key
  assert cfg.mode == "none" and tuple(cfg.ladder) == (0.25, 0.5, 0.75) and cfg.cold_start_steps == 0
  assert cfg.difficulty_threshold == 0.0 and cfg.initial_ratio == 0.0


@pytest.mark.parametrize("override, message", [
    ({"mode": "grpo"}, "mode"),
    ({"ladder": (0.5, 0.25)}, "ladder"),
    ({"target_low": 0.8}, "target_low"),
    ({"ratio_grid": 0.3}, "ratio_grid"),
    ({"mode": "anneal"}, "anneal_steps"),
    ({"initial_ratio": 0.9}, "initial_ratio"),
    ({"ema_decay": 1.0}, "ema_decay"),
])
def test_config_errors_name_the_key(override, message):
  with pytest.raises(ValueError, match=message):
    curriculum.resolve_config(override)


def test_unknown_key_is_rejected_and_partial_config_filled():
  with pytest.raises(KeyError, match="ladderr"):
    curriculum.resolve_config({"ladderr": (0.5,)})
  cfg = curriculum.resolve_config({"mode": "ghpo", "ladder": [0.5, 1.0]})
  assert cfg.ladder == (0.5, 1.0) and cfg.target_low == 0.25
