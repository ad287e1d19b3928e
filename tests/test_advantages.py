"""Group-relative advantage estimators against hand-worked numbers; exact zeros for all-equal groups."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxghpo import rl

REWARDS = np.array([[1.0, 0.0, 0.0, 1.0],   # mean 0.5, std (N-1) sqrt(1/3)
                    [1.0, 1.0, 1.0, 1.0],   # all right: no signal
                    [0.0, 0.0, 0.0, 1.0]],  # mean 0.25, std (N-1) 0.5
                   np.float32)


def test_grpo_hand_worked():
  adv = rl.group_advantages(REWARDS, "grpo")
  s = np.sqrt(1.0 / 3.0)
  expected = np.array([[0.5 / (s + 1e-6), -0.5 / (s + 1e-6), -0.5 / (s + 1e-6), 0.5 / (s + 1e-6)],
                       [0.0, 0.0, 0.0, 0.0],
                       [-0.25 / 0.500001, -0.25 / 0.500001, -0.25 / 0.500001, 0.75 / 0.500001]])
  assert isinstance(adv, np.ndarray) and adv.dtype == np.float32
  np.testing.assert_allclose(adv, expected, rtol=1e-6)
  np.testing.assert_allclose(adv[0, 0], 0.8660254, rtol=1e-5)


def test_grpo_eps_is_configurable():
  adv = rl.group_advantages(REWARDS, "grpo", eps=1.0)
  np.testing.assert_allclose(adv[0, 0], 0.5 / (np.sqrt(1.0 / 3.0) + 1.0), rtol=1e-6)
  np.testing.assert_allclose(adv[2, 3], 0.75 / 1.5, rtol=1e-6)


def test_drgrpo_hand_worked():
  adv = rl.group_advantages(REWARDS, "drgrpo")
  np.testing.assert_allclose(adv, [[0.5, -0.5, -0.5, 0.5], [0, 0, 0, 0], [-0.25, -0.25, -0.25, 0.75]], atol=1e-7)


def test_rloo_hand_worked():
  adv = rl.group_advantages(REWARDS, "rloo")
  # r_i - mean of the other three: group 0: 1 - 1/3, 0 - 2/3; group 2: 0 - 1/3, 1 - 0.
  np.testing.assert_allclose(adv, [[2 / 3, -2 / 3, -2 / 3, 2 / 3], [0, 0, 0, 0], [-1 / 3, -1 / 3, -1 / 3, 1.0]],
                             atol=1e-6)


@pytest.mark.parametrize("estimator", ["grpo", "drgrpo", "rloo"])
@pytest.mark.parametrize("value", [0.0, 1.0, 0.1, 0.7, -3.3])
def test_all_equal_groups_give_exact_zero(estimator, value):
  # 0.1 x 7 has a float32 mean that is not exactly 0.1: without the guard the advantage leaks ~1e-8.
  rewards = np.full((2, 7), value, np.float32)
  rewards[1] = [0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
  adv = rl.group_advantages(rewards, estimator)
  assert np.all(adv[0] == 0.0)
  assert np.all(adv[1] != 0.0)
  adv_dev = rl.group_advantages(jnp.asarray(rewards), estimator)
  assert np.all(np.asarray(adv_dev)[0] == 0.0)


def test_group_of_one_has_zero_advantage():
  for est in ("grpo", "drgrpo", "rloo"):
    assert np.all(rl.group_advantages(np.array([[1.0], [0.0]]), est) == 0.0)


@pytest.mark.parametrize("estimator", ["grpo", "drgrpo", "rloo"])
def test_device_and_host_agree_and_jit(estimator):
  rewards = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
  host = rl.group_advantages(rewards, estimator)
  dev = jax.jit(lambda r: rl.group_advantages(r, estimator))(jnp.asarray(rewards))
  assert isinstance(dev, jax.Array) and dev.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(dev), host, rtol=1e-5, atol=1e-6)
  # Advantages sum to zero inside each group for every estimator here.
  np.testing.assert_allclose(host.sum(axis=1), 0.0, atol=1e-5)


def test_registry_adds_an_estimator_by_name():
  def best_baseline(rewards_PxG, *, eps, xp):
    del eps
    return rewards_PxG - xp.max(rewards_PxG, axis=1, keepdims=True)

  rl.register_estimator("test_max_baseline", best_baseline)
  try:
    adv = rl.group_advantages(REWARDS, "test_max_baseline")
    np.testing.assert_allclose(adv, [[0, -1, -1, 0], [0, 0, 0, 0], [-1, -1, -1, 0]])
    cfg = rl.resolve_config({"advantage_estimator": "test_max_baseline"})
    assert cfg.advantage_estimator == "test_max_baseline"
  finally:
    rl.ESTIMATORS.unregister("test_max_baseline")


def test_errors_name_the_input():
  with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'"):
    rl.group_advantages(REWARDS, "ppo")
  with pytest.raises(ValueError, match=r"rewards must be \[P, G\]"):
    rl.group_advantages(np.zeros(4), "grpo")
  with pytest.raises(ValueError, match="already registered"):
    rl.register_estimator("grpo", lambda r, *, eps, xp: r)
