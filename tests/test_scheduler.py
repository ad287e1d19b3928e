"""HintScheduler: each mode's decisions, the retry call styles, metrics, state round trips, errors."""
from __future__ import annotations

import json

import numpy as np
import pytest

from jaxghpo import curriculum

G = 4


def _sched(**overrides):
  cfg = curriculum.default_config()
  for key, value in overrides.items():
    cfg[key] = value
  return curriculum.HintScheduler(cfg)


def _rewards(successes, g=G):
  """[B, g] accuracy rewards with the given number of 1s per row."""
  return (np.arange(g)[None, :] < np.asarray(successes)[:, None]).astype(np.float32)


def _ladder_run(sched, ids, outcome_fn):
  """Plans, then climbs the ladder with subset calls; returns the list of ratio arrays asked for."""
  ratios = sched.plan(ids)
  asked = [ratios]
  nxt = sched.retry(ids, ratios, outcome_fn(ids, ratios))
  while np.isfinite(nxt).any():
    asked.append(nxt)
    idx = np.flatnonzero(np.isfinite(nxt))
    sub = sched.retry(ids[idx], nxt[idx], outcome_fn(ids[idx], nxt[idx]))
    nxt = np.full(ids.size, np.nan, np.float32)
    nxt[idx] = sub
  return asked


# --- none / ghpo / filter --------------------------------------------------------------------
def test_none_never_hints_nor_retries():
  sched = _sched(mode="none")
  ids = np.arange(5)
  np.testing.assert_array_equal(sched.plan(ids), np.zeros(5, np.float32))
  assert np.isnan(sched.retry(ids, np.zeros(5), np.zeros((5, G)))).all()


def test_ghpo_ladder_climbs_for_difficult_groups_only():
  sched = _sched(mode="ghpo")
  ids = np.array([1, 2, 3])
  # problem 1 always fails; problem 2 succeeds from ratio 0.5 on; problem 3 succeeds unhinted
  need = {1: 9.0, 2: 0.5, 3: 0.0}
  outcome = lambda i, r: _rewards([2 if r_ >= need[int(p)] else 0 for p, r_ in zip(i, r)])
  asked = _ladder_run(sched, ids, outcome)
  nan = np.nan
  expected = [[0, 0, 0], [0.25, 0.25, nan], [0.5, 0.5, nan], [0.75, nan, nan]]
  assert len(asked) == len(expected)
  for got, want in zip(asked, expected):
    np.testing.assert_array_equal(got, np.array(want, np.float32))
  m = sched.update(ids, np.array([0.75, 0.5, 0.0]), outcome(ids, np.array([0.75, 0.5, 0.0])))
  assert m["retries"] == 2 + 2 + 1 and m["retry_rounds"] == 3
  assert m["frac_groups_difficult"] == pytest.approx(2 / 3)  # first attempts
  assert m["frac_groups_difficult_final"] == pytest.approx(1 / 3)  # problem 1 stays all wrong


def test_step_ladder_gives_one_more_whole_step_per_rung():
  from jaxghpo.curriculum import hints
  sched = _sched(mode="ghpo", ladder_kind="steps")
  ids, levels = np.array([7, 8, 9]), np.array([5, 6, 1])
  ratios = sched.plan(ids, levels, step=0)
  steps = [[0, 0, 0]]
  nxt = sched.retry(ids, ratios, np.zeros((3, G)))
  while np.isfinite(nxt).any():
    steps.append([hints.num_hint_steps(["s"] * int(n), float(r)) if np.isfinite(r) else -1
                  for n, r in zip(levels, nxt)])
    nxt = sched.retry(ids, nxt, np.zeros((3, G)))
  # level 5: hints of 1..4 steps, level 6: 1..5 (never the answer step); level 1 has no rung at all
  assert [s[0] for s in steps] == [0, 1, 2, 3, 4, -1] and [s[1] for s in steps] == [0, 1, 2, 3, 4, 5]
  assert all(s[2] in (0, -1) for s in steps)
  assert curriculum.highest_ratio(sched.cfg) > 0.9
  with pytest.raises(ValueError, match="needs each problem's level"):
    other = _sched(mode="ghpo", ladder_kind="steps")
    other.retry(ids, other.plan(ids), np.zeros((3, G)))
  with pytest.raises(ValueError, match="ladder_kind"):
    _sched(mode="ghpo", ladder_kind="rungs")


def test_ghpo_cold_start_and_threshold():
  sched = _sched(mode="ghpo", cold_start_steps=2, difficulty_threshold=0.5)
  ids = np.array([1, 2])
  rewards = np.array([[0.5, 0.5, 0.0, 0.5], [0.0, 1.0, 0.0, 0.0]], np.float32)  # row 0: every reward <= 0.5
  for step in range(2):
    sched.set_step(step)
    assert np.isnan(sched.retry(ids, sched.plan(ids), rewards)).all()
  np.testing.assert_array_equal(sched.retry(ids, sched.plan(ids, step=2), rewards),
                                np.array([0.25, np.nan], np.float32))


def test_retry_subset_and_full_batch_nan_styles_agree():
  ids = np.arange(6)
  need = np.array([0.0, 0.25, 0.5, 0.75, 9.0, 0.0])
  outcome = lambda i, r: _rewards(np.where(np.asarray(r) >= need[i], 1, 0))
  subset = _sched(mode="ghpo")
  asked_subset = _ladder_run(subset, ids, outcome)

  full = _sched(mode="ghpo")
  ratios = full.plan(ids)
  asked_full = [ratios]
  nxt = full.retry(ids, ratios, outcome(ids, ratios))
  while np.isfinite(nxt).any():
    asked_full.append(nxt)
    rewards = np.where(np.isfinite(nxt)[:, None], outcome(ids, np.nan_to_num(nxt)), np.nan)  # stale rows: NaN
    nxt = full.retry(ids, nxt, rewards)
  assert len(asked_full) == len(asked_subset) == 4
  for a, b in zip(asked_full, asked_subset):
    np.testing.assert_array_equal(a, b)
  final = np.array([0.0, 0.25, 0.5, 0.75, 0.75, 0.0], np.float32)
  assert subset.update(ids, final, outcome(ids, final)) == full.update(ids, final, outcome(ids, final))


def test_filter_keep_mask_and_counts():
  sched = _sched(mode="filter")
  ids = np.arange(4)
  assert (sched.plan(ids) == 0).all()
  rewards = np.array([[0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0], [1.5, 1.5, 1.0, 1.5]], np.float32)
  np.testing.assert_array_equal(sched.keep_mask(rewards), [False, False, True, True])
  np.testing.assert_array_equal(sched.keep_mask(rewards[:2]), [False, False])  # a refill round
  assert np.isnan(sched.retry(ids, np.zeros(4), rewards)).all()
  m = sched.update(ids, np.zeros(4), rewards)
  assert (m["filter_groups_checked"], m["filter_groups_dropped"]) == (6.0, 4.0)
  assert m["frac_groups_dropped"] == pytest.approx(4 / 6)
  assert sched.update(ids, np.zeros(4), rewards)["filter_groups_dropped"] == 0.0  # counters reset per step


# --- adaptive --------------------------------------------------------------------------------
def test_adaptive_moves_one_problem_through_hand_worked_steps():
  sched = _sched(mode="adaptive", ratio_step_up=0.25, ratio_step_down=0.125, posterior_decay=0.5, prior_alpha=1.0,
                 prior_beta=1.0)
  ids = np.array([42])
  plans = []
  # (successes of 8) per step; posterior means: 1/10 -> up; 9/10 -> down; 5/10 -> stay; (1+2+4)/14 -> stay
  for successes in (0, 8, 4, 4):
    ratio = sched.plan(ids)
    plans.append(float(ratio[0]))
    sched.update(ids, ratio, _rewards([successes], g=8))
  assert plans == [0.0, 0.25, 0.125, 0.125]
  assert float(sched.plan(ids)[0]) == 0.125
  slot = sched.problems.lookup(ids)[0]
  assert (sched.problems.alpha[slot], sched.problems.beta[slot]) == (7.0, 7.0)


def test_adaptive_unseen_problems_start_from_their_level():
  sched = _sched(mode="adaptive", initial_ratio=0.125)
  # two level-2 problems fail unhinted: each is proposed 0.25, so level 2's ratio EMA starts at 0.25
  sched.update(np.array([1, 2]), np.zeros(2), _rewards([0, 0]), levels=np.array([2, 2]))
  got = sched.plan(np.array([3, 4, 5, 1]), levels=np.array([2, 3, -1, 7]))
  np.testing.assert_array_equal(got, np.array([0.25, 0.125, 0.125, 0.25], np.float32))  # level 7 ignored: seen


def test_adaptive_retry_climbs_the_ladder_from_the_planned_ratio():
  sched = _sched(mode="adaptive", adaptive_retry=True)
  ids = np.array([1, 2])
  nxt = sched.retry(ids, np.array([0.125, 0.75], np.float32), _rewards([0, 0]))
  np.testing.assert_array_equal(nxt, np.array([0.25, np.nan], np.float32))
  assert np.isnan(_sched(mode="adaptive").retry(ids, np.array([0.125, 0.5]), _rewards([0, 0]))).all()


def test_plan_reads_state_only():
  sched = _sched(mode="adaptive")
  sched.update(np.array([1, 2]), np.zeros(2), _rewards([0, 4]), levels=np.array([0, 1]))
  before = sched.state_dict()
  sched.plan(np.array([1, 2, 3, 4]), levels=np.array([0, 1, 1, -1]))
  _assert_state_equal(before, sched.state_dict())


# --- anneal ----------------------------------------------------------------------------------
def test_anneal_schedule_and_random_draws():
  sched = _sched(mode="anneal", anneal_schedule="linear", anneal_start_ratio=0.5, total_steps=10)
  ids = np.arange(3)
  assert sched.plan(ids, step=0).tolist() == [0.5] * 3
  assert sched.plan(ids, step=4).tolist() == pytest.approx([0.3] * 3)
  assert sched.plan(ids, step=12).tolist() == [0.0] * 3

  rnd = _sched(mode="anneal", anneal_random=True, anneal_start_ratio=0.5, anneal_steps=100, seed=7)
  ids = np.arange(4000)
  draws = rnd.plan(ids, step=50)  # cosine at half way: 0.25
  assert abs(draws.mean() - 0.25) < 0.01 and len(np.unique(draws)) > 3
  np.testing.assert_array_equal(rnd.plan(ids[:100], step=50), draws[:100])  # independent of the batch split
  other = _sched(mode="anneal", anneal_random=True, anneal_start_ratio=0.5, anneal_steps=100, seed=8)
  assert not np.array_equal(other.plan(ids, step=50), draws)


# --- steps, metrics, validation --------------------------------------------------------------
def test_update_advances_the_step_and_set_step_overrides():
  sched = _sched()
  ids = np.array([1])
  sched.update(ids, np.zeros(1), _rewards([1]))
  assert sched.step == 1
  sched.update(ids, np.zeros(1), _rewards([1]), step=10)
  assert sched.step == 11


def test_metrics_hand_worked():
  sched = _sched(mode="ghpo")
  ids = np.array([10, 11, 12, 13])
  ratios = np.array([0.0, 0.0, 0.25, 0.5], np.float32)
  rewards = _rewards([4, 2, 0, 1])
  m = sched.update(ids, ratios, rewards, levels=np.array([0, 0, 3, -1]))
  json.dumps(m, allow_nan=False)  # JSON-able, no NaN
  assert all(isinstance(k, str) and type(v) is float for k, v in m.items())
  assert m["pass_rate"] == pytest.approx((1 + 0.5 + 0 + 0.25) / 4)
  assert m["pass_rate_hinted"] == pytest.approx(0.125) and m["pass_rate_unhinted"] == pytest.approx(0.75)
  assert m["frac_groups_nonzero_adv"] == pytest.approx(0.5)  # rows 1 and 3
  assert m["frac_groups_difficult"] == pytest.approx(0.25)  # no retry call: the final groups count
  assert m["hint_ratio_mean"] == pytest.approx(0.1875) and m["frac_groups_hinted"] == pytest.approx(0.5)
  assert m["hint_ratio_hist/0"] == 0.5 and m["hint_ratio_hist/0.25"] == 0.25 and m["hint_ratio_hist/0.125"] == 0.0
  assert m["pass_rate_by_ratio/0"] == pytest.approx(0.75) and "pass_rate_by_ratio/0.125" not in m
  assert m["pass_rate_by_level/0"] == pytest.approx(0.75) and m["pass_rate_by_level/3"] == 0.0
  assert "pass_rate_by_level/-1" not in m
  assert m["retries"] == 0.0 and m["problems_tracked"] == 4.0
  assert sched.metrics() == m


def test_duplicate_ids_in_one_batch():
  sched = _sched(mode="adaptive")
  sched.update(np.array([5, 5]), np.array([0.0, 0.25]), _rewards([1, 3]))
  slot = sched.problems.lookup(np.array([5]))[0]
  assert sched.problems.groups[slot] == 2 and sched.problems.attempts[slot, :3].tolist() == [4, 0, 4]
  assert sched.problems.post_bucket[slot] == 2  # the last row is the posterior's


def test_input_errors_name_the_argument():
  sched = _sched(mode="ghpo")
  with pytest.raises(ValueError, match="problem_ids"):
    sched.plan(np.array([[1, 2]]))
  with pytest.raises(ValueError, match="ratios"):
    sched.retry(np.arange(3), np.zeros(2), np.zeros((3, G)))
  with pytest.raises(ValueError, match="rewards"):
    sched.update(np.arange(3), np.zeros(3), np.zeros(3))
  with pytest.raises(ValueError, match="levels"):
    sched.update(np.arange(3), np.zeros(3), np.zeros((3, G)), levels=np.array([0, 1, 99]))
  with pytest.raises(ValueError, match="finite"):
    sched.update(np.arange(3), np.array([0.0, np.nan, 0.0]), np.zeros((3, G)))
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    sched.update(np.arange(3), np.array([0.0, 1.5, 0.0]), np.zeros((3, G)))


def test_empty_batch_and_boolean_rewards():
  sched = _sched(mode="adaptive", adaptive_retry=True)
  none = np.array([], np.int64)
  assert sched.plan(none).shape == (0,) and sched.retry(none, np.zeros(0), np.zeros((0, G))).shape == (0,)
  assert sched.update(none, np.zeros(0), np.zeros((0, G)))["groups"] == 0.0  # a host with no rows this step
  m = sched.update(np.array([1, 2]), np.zeros(2), np.array([[True, False], [False, False]]))
  assert m["pass_rate"] == 0.25
  # Jeffreys prior: 0 of 2 -> posterior mean 0.5 / 3 < 0.25, so problem 2 gets a hint; 1 of 2 stays
  np.testing.assert_array_equal(sched.plan(np.array([1, 2])), np.array([0.0, 0.25], np.float32))


# --- state -----------------------------------------------------------------------------------
def _assert_state_equal(a, b, path=""):
  assert sorted(a) == sorted(b), path
  for key in a:
    if isinstance(a[key], dict):
      _assert_state_equal(a[key], b[key], f"{path}/{key}")
    else:
      np.testing.assert_array_equal(np.asarray(a[key]), np.asarray(b[key]), err_msg=f"{path}/{key}")


def _drive(sched, steps, seed):
  """A few steps with levels over a pool larger than memory; returns (final ratios, every ratio
  asked for, metrics) per step."""
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(steps):
    ids = rng.choice(60, 12, replace=False).astype(np.int64)
    levels = (ids % 4).astype(np.int32)
    coins = rng.random((12, 8))
    asked = []

    def sample(i, r):
      asked.append(np.asarray(r).copy())
      return (coins[:len(i)] < np.clip(0.2 + r - (i % 4) * 0.2, 0, 1)[:, None]).astype(np.float32)

    finals, _, m = curriculum.run_step(sched, ids, sample, levels=levels)
    out.append((finals, np.concatenate(asked), m))
  return out


@pytest.mark.parametrize("mode", ["adaptive", "anneal"])
def test_state_round_trip_gives_identical_next_decisions(mode):
  kw = dict(mode=mode, adaptive_retry=True, max_problems=30, anneal_random=True, anneal_steps=12, seed=3)
  original = _sched(**kw)
  _drive(original, 5, seed=0)
  state = original.state_dict()
  _check_pytree_of_arrays_and_scalars(state)
  restored = _sched(**kw)
  restored.load_state_dict(state)
  _assert_state_equal(state, restored.state_dict())
  a, b = _drive(original, 4, seed=1), _drive(restored, 4, seed=1)
  for (fa, pa, ma), (fb, pb, mb) in zip(a, b):
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(pa, pb)
    assert ma == mb
  _assert_state_equal(original.state_dict(), restored.state_dict())
  assert original.problems.evicted_total > 0 or mode == "anneal"


def _check_pytree_of_arrays_and_scalars(tree):
  for value in tree.values():
    if isinstance(value, dict):
      _check_pytree_of_arrays_and_scalars(value)
    else:
      assert type(value) in (int, float) or (isinstance(value, np.ndarray) and value.size > 0), type(value)


def test_state_survives_orbax(tmp_path):
  ocp = pytest.importorskip("orbax.checkpoint")
  original = _sched(mode="adaptive", adaptive_retry=True, max_problems=30)
  _drive(original, 3, seed=0)
  ckpt = ocp.StandardCheckpointer()
  ckpt.save(tmp_path / "sched", original.state_dict())
  ckpt.wait_until_finished()
  fresh = _sched(mode="adaptive", adaptive_retry=True, max_problems=30)
  # restoring against a fresh scheduler's (differently shaped) state works, as a trainer would do it
  fresh.load_state_dict(ckpt.restore(tmp_path / "sched", fresh.state_dict()))
  _assert_state_equal(original.state_dict(), fresh.state_dict())
  a, b = _drive(original, 2, seed=5), _drive(fresh, 2, seed=5)
  for (fa, pa, _), (fb, pb, _) in zip(a, b):
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(pa, pb)


def test_same_seed_same_rewards_same_decisions():
  runs = [_drive(_sched(mode="adaptive", adaptive_retry=True), 4, seed=2) for _ in range(2)]
  for (fa, pa, ma), (fb, pb, mb) in zip(*runs):
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(pa, pb)
    assert ma == mb


def test_load_rejects_incompatible_config():
  sched = _sched(mode="adaptive")
  sched.update(np.arange(3), np.zeros(3), _rewards([0, 1, 2]))
  with pytest.raises(ValueError, match="ratio_grid"):
    _sched(ratio_grid=0.25).load_state_dict(sched.state_dict())
  with pytest.raises(ValueError, match="max_levels"):
    _sched(max_levels=8).load_state_dict(sched.state_dict())


def test_adaptive_raise_all_fail_grows_the_hint_only_after_zero_successes():
  # The pass-rate estimate is per ratio bucket with a Jeffreys prior: at ratio 0.25 problem 1 has 1 of 8,
  # (0.5 + 1) / (1 + 8) = 0.167 < target_low 0.25, below the band like problem 2's 0 of 8 (0.056).
  def run(raise_on):
    sched = _sched(mode="adaptive", adaptive_raise=raise_on)
    ids = np.array([1, 2])
    sched.update(ids, np.zeros(2), _rewards([0, 0], g=4))  # both fail: both move 0 -> 0.25
    assert sched.plan(ids).tolist() == [0.25, 0.25]
    sched.update(ids, np.full(2, 0.25), _rewards([1, 0], g=8))  # at 0.25: problem 1 has 1 of 8, 2 has 0 of 8
    return sched.plan(ids).tolist()
  assert run("below_band") == [0.5, 0.5]  # both below the band: both grow
  assert run("all_fail") == [0.25, 0.5]  # problem 1 had a success: its hint stays


def test_adaptive_raise_rejects_an_unknown_rule():
  with pytest.raises(ValueError, match="adaptive_raise='sometimes' is not one of"):
    _sched(mode="adaptive", adaptive_raise="sometimes")
