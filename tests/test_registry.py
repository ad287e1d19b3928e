"""Registries (jaxghpo/registry.py): each kind of named choice gets a new entry from one decorated function,
the normal entry point then uses it, and an unknown name's error, through config validation, lists the
known names (a registered entry among them, so validation reads the registry)."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxghpo import curriculum, rewards, rl
from jaxghpo.registry import Registry

# (registry, its config key): every registry a config name is looked up in.
REGISTRIES = [(rl.ESTIMATORS, "rl.advantage_estimator"), (rl.KL_ESTIMATORS, "rl.kl_estimator"),
              (rl.LOSS_AGG_MODES, "rl.loss_agg"), (curriculum.MODES, "curriculum.mode"),
              (rewards.REGISTRY, "rewards.weights")]


@pytest.fixture(autouse=True)
def restore_registries():
  """Entries a test registers are removed after it (the registries are module-level state)."""
  before = [set(registry) for registry, _ in REGISTRIES]
  yield
  for (registry, _), names in zip(REGISTRIES, before):
    for name in set(registry) - names:
      registry.unregister(name)


def test_registry_registers_gets_and_lists_the_known_names_on_a_miss():
  reg = Registry("x.kind")

  @reg.register("b")
  def b():
    return 2

  reg.register("a")(lambda: 1)
  assert reg.get("b") is b and reg.names() == ("b", "a") and "a" in reg and len(reg) == 2
  with pytest.raises(KeyError, match=r"x.kind='c' is not registered; known: \['a', 'b'\]"):
    reg.get("c")
  with pytest.raises(ValueError, match="x.kind: 'a' is registered twice"):
    reg.register("a")(lambda: 3)
  assert reg.unregister("a")() == 1 and reg.names() == ("b",)
  with pytest.raises(KeyError, match="known: \\['b'\\]"):
    reg.unregister("a")


def test_each_registry_is_keyed_by_its_config_key_and_holds_the_builtin_names():
  for registry, key in REGISTRIES:
    assert registry.key == key
  assert set(rl.ESTIMATORS) == {"grpo", "drgrpo", "rloo"}
  assert rl.KL_ESTIMATORS.names() == ("k1", "k2", "k3")
  assert rl.LOSS_AGG_MODES.names() == ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum",
                                       "seq-mean-token-sum-norm")
  assert curriculum.MODES.names() == ("none", "filter", "ghpo", "adaptive", "anneal")
  assert {"math", "exact", "format", "valid_trace"} <= set(rewards.REGISTRY)


# --- advantage estimators ------------------------------------------------------------------------------
def test_a_new_advantage_estimator_is_one_decorated_function():
  @rl.ESTIMATORS.register("test_min_baseline")
  def min_baseline(rewards_PxG, *, eps, xp):
    del eps
    return rewards_PxG - xp.min(rewards_PxG, axis=1, keepdims=True)

  rewards_PxG = np.array([[1, 0, 0, 1], [0.5, 0.5, 0.5, 0.5], [0, 1, 3, 0]], np.float32)
  cfg = rl.resolve_config({"advantage_estimator": "test_min_baseline"})   # a valid config value now
  want = [[1, 0, 0, 1], [0, 0, 0, 0], [0, 1, 3, 0]]   # r - min; the constant group is 0
  np.testing.assert_allclose(rl.group_advantages(rewards_PxG, cfg.advantage_estimator), want)
  on_device = jax.jit(lambda r: rl.group_advantages(r, "test_min_baseline"))(jnp.asarray(rewards_PxG))
  np.testing.assert_allclose(np.asarray(on_device), want)


# --- loss aggregations ---------------------------------------------------------------------------------
def test_a_new_loss_aggregation_is_one_decorated_function():
  @rl.register_loss_agg("test-seq-max", denominator="seqs")
  def seq_max(x_BxT, mask_BxT, norm_len):
    """The largest loss term of each sequence, averaged over sequences."""
    del norm_len
    row_max_B = jnp.max(jnp.where(mask_BxT, x_BxT, -jnp.inf), axis=1)
    return jnp.sum(jnp.where(jnp.any(mask_BxT, axis=1), row_max_B, 0.0))

  cfg = rl.resolve_config({"loss_agg": "test-seq-max"})
  logp = jnp.zeros((2, 3))
  mask = jnp.array([[1, 1, 0], [1, 0, 0]], bool)
  # ratio 1 everywhere: the per-token loss is -A: sequence 0 [-1, -1], sequence 1 [2].
  loss, metrics = rl.policy_loss(logp, logp, jnp.array([1.0, -2.0]), mask, cfg)
  np.testing.assert_allclose(float(loss), (-1.0 + 2.0) / 2)   # token-mean would give 0 / 3
  np.testing.assert_allclose(float(metrics["pg_loss"]), 0.5)
  with pytest.raises(ValueError, match="denominator='rows' is not 'tokens' or 'seqs'"):
    rl.register_loss_agg("test-bad", denominator="rows")


# --- KL estimators -------------------------------------------------------------------------------------
def test_a_new_kl_estimator_is_one_decorated_function():
  @rl.KL_ESTIMATORS.register("test_abs")
  def kl_abs(logp_BxT, ref_logp_BxT):
    return jnp.abs(logp_BxT - ref_logp_BxT)

  cfg = rl.resolve_config({"kl_coef": 0.5, "kl_estimator": "test_abs"})
  logp = jnp.log(jnp.array([[0.5, 0.25]]))
  ref = jnp.log(jnp.array([[0.25, 0.25]]))
  loss, metrics = rl.policy_loss(logp, logp, jnp.array([1.0]), jnp.ones((1, 2), bool), cfg, ref_logp=ref)
  # per token: pg -1 each, KL |log 2| and 0; token-mean of pg + 0.5 KL.
  np.testing.assert_allclose(float(metrics["kl"]), math.log(2) / 2, rtol=1e-6)
  np.testing.assert_allclose(float(loss), -1.0 + 0.25 * math.log(2), rtol=1e-6)


# --- curriculum modes ----------------------------------------------------------------------------------
def test_a_new_curriculum_mode_is_one_decorated_function():
  @curriculum.register_mode("test_half", ladder=True,
                            check=lambda c: None if c.max_ratio >= 0.5 else "mode='test_half' needs max_ratio >= 0.5")
  def half(sched, ids_B, levels):
    return np.full(ids_B.size, 0.5, np.float32)

  sched = curriculum.HintScheduler({"mode": "test_half", "cold_start_steps": 1})
  ids = np.arange(3)
  np.testing.assert_array_equal(sched.plan(ids, step=0), [0, 0, 0])    # the cold start holds for every mode
  np.testing.assert_array_equal(sched.plan(ids, step=1), [0.5, 0.5, 0.5])
  # ladder=True: an all-fail group climbs to the next rung above 0.5 (default ladder 0.25/0.5/0.75).
  next_ratios = sched.retry(ids, np.full(3, 0.5, np.float32), np.array([[0, 0], [1, 0], [0, 0]], np.float32))
  np.testing.assert_array_equal(next_ratios, [0.75, np.nan, 0.75])
  with pytest.raises(ValueError, match="curriculum config: mode='test_half' needs max_ratio >= 0.5"):
    curriculum.resolve_config({"mode": "test_half", "max_ratio": 0.25})


def test_a_new_refill_mode_drops_and_refills_groups_without_signal_in_the_step_loop():
  @curriculum.register_mode("test_refill", hintless=True, refill=True)
  def no_hint(sched, ids_B, levels):
    return np.zeros(ids_B.size, np.float32)

  sched = curriculum.HintScheduler({"mode": "test_refill"})

  def sample(rows, ratios, width):   # rows 0 and 2 of the batch carry no signal, every drawn problem does
    acc = np.tile(np.array([1.0, 0.0], np.float32), (len(rows), 1))
    acc[np.isin(rows, [0, 2])] = 1.0
    return acc

  out = curriculum.step_loop(sched, np.arange(3), sample, step=0, draw=lambda: (np.arange(10, 13), np.full(3, -1)),
                             refill_rounds=1)
  np.testing.assert_array_equal(out.ids, [10, 1, 11])
  assert out.keep.all() and out.metrics["filter_refill_rounds"] == 1
  assert curriculum.highest_ratio(sched.cfg) == 0.0   # hintless


# --- reward kinds --------------------------------------------------------------------------------------
def test_a_new_reward_kind_is_one_decorated_function():
  @rewards.register("test_short")
  def short(completions, answers, config, **kwargs):
    return np.array([float(len(c) <= 2) for c in completions], np.float32)

  config = ml_collections.ConfigDict({"weights": {"exact": 1.0, "test_short": 0.5}, "accuracy": "exact",
                                      "exact_extract": "strip"})
  rewards.validate_config(config)
  total, accuracy, parts = rewards.combine(config, ["12", "123", "7"], ["12", "123", "8"])
  np.testing.assert_allclose(total, [1.5, 1.0, 0.5])
  np.testing.assert_array_equal(accuracy, [1, 1, 0])
  np.testing.assert_array_equal(parts["test_short"], [1, 0, 1])


# --- unknown names, through config validation ---------------------------------------------------------
def _rl_error(key):
  return lambda name: rl.resolve_config({key: name})


@pytest.mark.parametrize("registry, validate, field", [
    (rl.ESTIMATORS, _rl_error("advantage_estimator"), "advantage_estimator"),
    (rl.KL_ESTIMATORS, _rl_error("kl_estimator"), "kl_estimator"),
    (rl.LOSS_AGG_MODES, _rl_error("loss_agg"), "loss_agg"),
    (curriculum.MODES, lambda name: curriculum.resolve_config({"mode": name}), "mode"),
    (rewards.REGISTRY, lambda name: rewards.validate_config(
        ml_collections.ConfigDict({"weights": {name: 1.0}, "accuracy": "exact"})), "weights"),
], ids=["advantage_estimator", "kl_estimator", "loss_agg", "curriculum.mode", "rewards.weights"])
def test_an_unknown_name_is_refused_with_the_known_names_listed(registry, validate, field):
  registry.register("test_registered")(object())   # validation reads the registry: a new entry is listed
  with pytest.raises(ValueError) as error:
    validate("no_such_name")
  text = str(error.value)
  assert "no_such_name" in text and field in text, text
  for name in registry:
    assert repr(name) in text, (name, text)
