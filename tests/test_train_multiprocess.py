"""Two processes on loopback, each feeding its half of the global batch, against one process."""
import json
import os
import subprocess
import sys

import portpicker
import pytest

from tests.train_fixtures import make_tiny_policy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_train_worker.py")


def _run(n, workdir, model_dir, devices, *extra):
  port = portpicker.pick_unused_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen([sys.executable, WORKER, str(port), str(n), str(i), workdir, model_dir, str(devices),
                             *extra], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
           for i in range(n)]
  try:
    for p in procs:
      _, err = p.communicate(timeout=600)
      assert p.returncode == 0, err.decode()[-3000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()


def _one_and_two(tmp_path, *extra):
  """(one, two): workdirs of the same run on 1 process x 4 devices and on 2 x 2, whose two hosts ended with
  the same scheduler statistics."""
  model_dir = make_tiny_policy(str(tmp_path / "policy"))
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  _run(1, one, model_dir, 4, *extra)
  _run(2, two, model_dir, 2, *extra)
  assert _scheduler(two, 0) == _scheduler(two, 1), "the two hosts' scheduler statistics differ"
  return one, two


def _scheduler(workdir, process):
  with open(os.path.join(workdir, f"scheduler_p{process}.json")) as f:
    return json.load(f)


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in f]


def test_two_processes_match_one(tmp_path):
  one, two = _one_and_two(tmp_path)
  assert _scheduler(two, 0) == _scheduler(one, 0)
  assert not os.path.exists(os.path.join(two, "metrics_p1.jsonl"))
  a, b = _rows(one), _rows(two)
  assert any(k.endswith("deepconf/tokens_saved_frac") for k in a[-1])
  assert [r["step"] for r in a] == [r["step"] for r in b]
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys()
    for key in ra:
      assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-5), (ra["step"], key)


# What the scheduler decides and records depends only on the rewards, which the script fixes per problem:
# these metrics equal a 1-process run over the same global batches. The sampled tokens do not: a retry
# round's sampler call has the agreed width (the most rows any host retries), so on 2 hosts the half that
# retries is sampled in a call of P rows where 1 host uses a call of P / 2, and each row draws other random
# numbers (response_len_mean, gen_tokens, entropy, approx_kl, ... differ; with every advantage 0 the
# update itself is still nil in both).
SCRIPTED_EQUAL = ("accuracy_mean", "reward_mean", "pass_rate", "frac_groups_nonzero_adv", "frac_groups_difficult",
                  "hint_ratio_mean", "retries", "retried_groups", "frac_groups_kept", "pg_loss")


@pytest.mark.slow  # about 2 minutes: three runs of multi-process start-up on a shared CPU
def test_disagreeing_hosts_finish_and_match_one_process(tmp_path):
  """Host 0's groups all fail while host 1's all succeed, then the reverse: one host climbs the whole
  GHPO ladder while the other has nothing to retry. Every sampler call, retry round and allgather must
  still be issued by both hosts alike (before the one host loop, the hosts deadlocked or Gloo failed)."""
  one, two = _one_and_two(tmp_path, "scripted")
  assert _scheduler(two, 0) == _scheduler(one, 0)
  a, b = _rows(one), _rows(two)
  # Evaluation with unequal host shares (3 problems per level on 2 hosts): every problem counted once,
  # each sampled in the row it has in the 1-process call, so the metrics are equal.
  for ra, rb in ((a[0], b[0]), (a[-1], b[-1])):
    evals = [k for k in ra if k.startswith("eval/")]
    assert evals and all(rb[k] == pytest.approx(ra[k], abs=1e-7) for k in evals), ra["step"]
    assert rb["eval/easy/hint0/sampled/num_problems/level_2"] == 3
  a, b = a[1:], b[1:]
  assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
  for ra, rb in zip(a, b):
    # the hosts did disagree: half of the groups (one host's) were retried through the ladder
    assert rb["retried_groups"] == 2 and rb["retries"] == 2 * 3 and rb["accuracy_mean"] == 0.5
    for key in SCRIPTED_EQUAL:
      assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-7), (ra["step"], key)


@pytest.mark.slow  # about 3 minutes, like the test above
def test_filter_refills_on_one_host_only(tmp_path):
  """DAPO refill with hosts that disagree: on each step one host's groups all lack signal and it refills
  them while the other host has nothing to refill; both still draw every refill batch (equal data
  positions) and make the same sampler calls.

  A host fills its dropped slots from its own share of the refill batch, a 1-process run from the head
  of the whole refill batch: the refilled problems (and so the scheduler's table) are the same only when
  process 0 is the host that refills. The counts below are fixed by the script and equal anyway."""
  one, two = _one_and_two(tmp_path, "scripted_filter")
  a, b = _rows(one)[1:], _rows(two)[1:]
  assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3]
  for ra, rb in zip(a, b):
    assert rb["filter_refill_rounds"] == 1 and rb["filter_groups_unfilled"] == 0
    assert rb["filter_groups_dropped"] == 2 and rb["frac_groups_nonzero_adv"] == 1.0
    for key in ("accuracy_mean", "reward_mean", "pass_rate", "frac_groups_nonzero_adv", "frac_groups_kept",
                "frac_groups_difficult", "filter_refill_rounds", "filter_groups_dropped", "filter_groups_checked"):
      assert ra[key] == pytest.approx(rb[key], rel=1e-6, abs=1e-7), (ra["step"], key)
