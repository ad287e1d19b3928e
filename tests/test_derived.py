"""Derived keys: computed once from the keys they follow (jaxghpo/derived.py), never settable, never overwritten."""
import numpy as np
import pytest

from configs import base
from jaxghpo import curriculum, derived

PINNED_DATA_ORDER = [1256914611, 1927468799]   # derived.stream_seed(0 and 1, "data_order")


def test_derived_keys_follow_their_sources():
  c = base.get_base_config()
  for section, key in derived.DERIVED_KEYS:
    assert key not in c[section], f"config.{section}.{key} is derived and must not be a key of the base config"
  c.seed, c.num_steps, c.rollout.temperature = 5, 40, 0.7
  d = derived.derive(c)
  assert d.rl.temperature == pytest.approx(0.7)
  assert d.curriculum.seed == derived.seed(c, "curriculum") and d.curriculum.total_steps == 40
  assert c.rollout.temperature == pytest.approx(0.7)  # the experiment config itself is not changed


@pytest.mark.parametrize("section, key", sorted(derived.DERIVED_KEYS))
def test_setting_a_derived_key_fails_naming_it(section, key):
  c = base.get_base_config()
  c[section][key] = 3
  with pytest.raises(ValueError, match=rf"config\.{section}\.{key} is derived from config\."):
    derived.derive(c)


def test_seed_changes_the_anneal_arms_draws():
  ids = np.arange(64)

  def draws(seed):
    c = base.get_base_config()
    c.seed = seed
    c.curriculum.mode, c.curriculum.anneal_random = "anneal", True
    sched = curriculum.HintScheduler(derived.derive(c).curriculum)
    return sched.plan(ids, np.full(64, 3), step=1)

  assert np.array_equal(draws(0), draws(0))
  assert not np.array_equal(draws(0), draws(1))


def test_every_stream_changes_with_the_seed_and_unknown_streams_fail():
  a, b = base.get_base_config(), base.get_base_config()
  b.seed = 1
  for stream in derived.STREAMS:
    assert derived.seed(a, stream) != derived.seed(b, stream)
  with pytest.raises(KeyError, match="unknown random stream"):
    derived.seed(a, "nope")


@pytest.mark.parametrize("run_seed", [0, 1, 2, 17, 12345, 2**31 - 1, -3])
def test_streams_differ_from_one_another(run_seed):
  c = base.get_base_config()
  c.seed = run_seed
  seeds = {stream: derived.seed(c, stream) for stream in derived.STREAMS}
  assert len(set(seeds.values())) == len(derived.STREAMS), seeds
  assert all(0 <= s < 2**derived.SEED_BITS for s in seeds.values()), seeds


def test_stream_seeds_are_a_pure_function_of_seed_and_name():
  # Pinned: a change of the hash would silently change every run's draws.
  assert derived.stream_seed(0, "train_rng") == derived.stream_seed(0, "train_rng")
  assert [derived.stream_seed(s, "data_order") for s in (0, 1)] == PINNED_DATA_ORDER
  # No two (seed, stream) pairs of a small grid collide, so seed s of one stream is no other seed's stream.
  grid = {derived.stream_seed(s, name) for s in range(64) for name in derived.STREAMS}
  assert len(grid) == 64 * len(derived.STREAMS)


def test_hint_nll_needs_response_placed_hints():
  c = base.get_base_config()
  c.rl.hint_nll_coef = 0.5
  with pytest.raises(ValueError, match=r"config\.rl\.hint_nll_coef=0\.5 needs config\.hints\.placement='response'"):
    derived.derive(c)
  c.hints.placement = "response"
  assert derived.derive(c).rl.hint_nll_coef == 0.5
