"""Hosts that disagree: scripted per-problem rewards make each host's groups fail or succeed on their own
(host 0 all wrong while host 1 all right, then the reverse, then a random pattern per host), so every
host takes its own path through the GHPO retry rounds. Every run must finish, and match a one-process
run over the concatenated batch:

- greedy rollouts (top-k 1 at temperature 1: RL refuses temperature 0, since the loss recomputes
  logprobs at the sampling temperature): every metric. A sampled token then depends only on its prompt and
  the parameters, not on where its row sits in a sampler call, so the hosts' padded retry calls
  (each host's rows first, then inactive ones) produce the tokens the one process produces;
- sampled rollouts (temperature 1): the metrics made of outcomes (rewards, accuracy, pass rates,
  retried groups, the scheduler's hint ratios and statistics) and the scheduler's state. The tokens
  differ by design: a sampler call draws row r's randomness from its place in the call, and a retry
  round's rows sit elsewhere on 2 hosts (each host's retried groups, padded to the agreed width)
  than on 1 (the retried groups side by side), so the loss, lengths and token counts are not compared.

Each test also checks that the hosts did disagree (the count of retries differs between hosts).
"""
import os

import pytest

from tests import hosts_harness as hh
from tests.train_fixtures import make_tiny_policy

pytestmark = pytest.mark.slow

P, G, STEPS = 8, 4, 4
# What a sampled run shares with the one-process run: everything decided by outcomes.
OUTCOME_KEYS = ("reward_mean", "accuracy_mean", "pass_rate", "retried_groups", "frac_groups_kept",
                "frac_groups_nonzero_adv", "frac_groups_nonzero_adv/hard", "pass_rate/hard",
                "hint_ratio_mean/hard")


def _overrides(greedy: bool) -> dict:
  # Data parallel (parameters replicated): a decoding step then needs no parameter gathers over hosts,
  # which keep a 2-process CPU run's rollouts 10x slower than one process's with fsdp.
  return {"num_steps": STEPS, "checkpoint_every_steps": STEPS, "data.prompts_per_step": P,
          "rollout.group_size": G, "rollout.temperature": 1.0, "rollout.top_k": 1 if greedy else 0,
          "rollout.max_new_tokens": 12,
          "mesh.shape": [-1, 1, 1], "export_at_end": False}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return make_tiny_policy(str(tmp_path_factory.mktemp("policy")))


def _check_against_one(tmp_path, model_dir, num_processes, devices, seed, greedy):
  plans = hh.disagreeing_plans(P, G, num_processes, STEPS, seed=seed)
  spec = dict(model_dir=model_dir, plans=plans, overrides=_overrides(greedy))
  one, many = str(tmp_path / "one"), str(tmp_path / "many")
  hh.run(many, num_processes, devices, **spec)
  hh.run(one, 1, num_processes * devices, **spec)

  # The hosts disagreed: at step 0 only host 0 re-sampled groups, at step 1 every host but host 0.
  step0, step1 = hh.retries_by_host(many, num_processes, 0), hh.retries_by_host(many, num_processes, 1)
  assert step0[0] > 0 and not any(step0[1:]), step0
  assert step1[0] == 0 and all(step1[1:]), step1
  # Each problem was scored the same number of times with the same outcome as on one process.
  key = lambda r: (r["pid"], r["attempt"], r["correct"])
  on_hosts = sorted(key(r) for h in range(num_processes) for r in hh.scored(many, h))
  assert on_hosts == sorted(key(r) for r in hh.scored(one, 0))

  states = [hh.scheduler_state(many, h) for h in range(num_processes)]
  assert all(s == states[0] for s in states), "the hosts' scheduler statistics differ"
  assert states[0] == hh.scheduler_state(one, 0)
  assert not os.path.exists(os.path.join(many, "metrics_p1.jsonl"))
  a, b = hh.rows(one), hh.rows(many)
  assert [r["step"] for r in b] == list(range(STEPS + 1))
  hh.assert_rows_equal(a, b, keys=None if greedy else OUTCOME_KEYS)
  # The evaluation files hold every host's problems, as the one process's do.
  assert hh.eval_problem_ids(many) == hh.eval_problem_ids(one)


@pytest.mark.parametrize("seed", [0, 1])
def test_two_hosts_of_four_devices_disagree_greedy(tmp_path, model_dir, seed):
  _check_against_one(tmp_path, model_dir, num_processes=2, devices=4, seed=seed, greedy=True)


def test_two_hosts_of_four_devices_disagree_sampled(tmp_path, model_dir):
  _check_against_one(tmp_path, model_dir, num_processes=2, devices=4, seed=2, greedy=False)


def test_four_hosts_of_one_device_disagree_greedy(tmp_path, model_dir):
  _check_against_one(tmp_path, model_dir, num_processes=4, devices=1, seed=3, greedy=True)
