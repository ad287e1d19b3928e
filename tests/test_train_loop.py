"""The RL loop end to end on a tiny random policy: metrics, evaluation files, export, no recompiles,
exact resume after SIGKILL, save-and-exit on SIGTERM, and bad configs failing at start."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxghpo import train
from tests.train_fixtures import make_tiny_policy, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQUIRED = ("step", "reward_mean", "accuracy_mean", "pass_rate", "frac_groups_nonzero_adv", "frac_groups_difficult",
            "hint_ratio_mean", "retries", "response_len_mean", "pg_loss", "kl", "entropy", "clip_frac", "grad_norm",
            "skipped_updates", "time/rollout_s", "time/reward_s", "time/train_s", "time/step_s")


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
  return make_tiny_policy(str(tmp_path_factory.mktemp("policy")))


def read_rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def untimed(row):
  return {k: v for k, v in row.items() if not k.startswith("time/")}


def test_run_writes_metrics_eval_and_export(policy, tmp_path):
  workdir = str(tmp_path / "run")
  summary = train.run(tiny_config(policy), workdir)
  rows = read_rows(workdir)
  assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
  for row in rows[1:]:
    missing = [k for k in REQUIRED if k not in row]
    assert not missing, f"step {row['step']} lacks {missing}"
  # A random policy fails everything: GHPO climbs the whole ladder for every group.
  assert rows[1]["frac_groups_difficult"] == 1.0 and rows[1]["retries"] > 0
  assert "eval/easy/hint0/greedy/pass@1" in rows[0] and "eval/easy/hint0/greedy/pass@1" in rows[-1]
  assert os.listdir(os.path.join(workdir, "eval"))
  assert os.path.isfile(os.path.join(workdir, "export", "model.safetensors"))
  assert "eval/hard/hint0/sampled/pass@2" in summary["eval_after"]


def test_no_compilation_after_warmup(policy, tmp_path):
  """Steps with hints of changing lengths (GHPO retries every step) compile nothing after the first step."""
  compiles = []

  def listener(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      compiles.append(event)

  cfg = tiny_config(policy, num_steps=6, checkpoint_every_steps=100, eval_every_steps=0)
  cfg.data.task_configs.chains.easy_levels = cfg.data.task_configs.chains.hard_levels = ()
  trainer = train.Trainer(cfg, str(tmp_path / "run"))
  trainer.restore()
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    counts = []
    for step in range(6):
      before = len(compiles)
      trainer.rl_step(step, jax.random.fold_in(trainer.rng, step))
      jax.block_until_ready(trainer.params)
      counts.append(len(compiles) - before)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert sum(counts[2:]) == 0, f"compilations per step: {counts}"


def _spawn(policy, workdir, num_steps, checkpoint_every):
  code = (
      "import sys; sys.path.insert(0, %r)\n"
      "from tests.train_fixtures import tiny_config\n"
      "from jaxghpo import train\n"
      "train.run(tiny_config(%r, num_steps=%d, checkpoint_every_steps=%d), %r)\n"
  ) % (ROOT, policy, num_steps, checkpoint_every, workdir)
  return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_until(ready, proc, what: str, timeout=300):
  """Polls `ready()` until it is true; fails if the run ends first or after `timeout` s (a hang guard)."""
  deadline = time.monotonic() + timeout
  while not ready():
    if proc.poll() is not None:
      raise AssertionError(f"the run ended before {what}: {proc.stderr.read().decode()[-2000:]}")
    if time.monotonic() > deadline:
      proc.kill()
      raise AssertionError(f"no {what} within {timeout}s")
    time.sleep(0.02)


def _wait_for(path, proc, timeout=300):
  _wait_until(lambda: os.path.exists(path), proc, path, timeout)


def test_sigkill_then_resume_gives_identical_metrics(policy, tmp_path):
  straight = str(tmp_path / "straight")
  train.run(tiny_config(policy, num_steps=6, checkpoint_every_steps=2), straight)
  killed = str(tmp_path / "killed")
  proc = _spawn(policy, killed, 6, 2)
  _wait_for(os.path.join(killed, "checkpoints", "2", "commit_success.txt"), proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  train.run(tiny_config(policy, num_steps=6, checkpoint_every_steps=2), killed)  # resumes
  a, b = read_rows(straight), read_rows(killed)
  assert [r["step"] for r in b] == [r["step"] for r in a]
  for ra, rb in zip(a, b):
    assert untimed(ra) == untimed(rb), f"step {ra['step']} differs"


def test_sigterm_saves_and_exits_zero(policy, tmp_path):
  workdir = str(tmp_path / "term")
  proc = _spawn(policy, workdir, 50, 100)
  _wait_for(os.path.join(workdir, "metrics.jsonl"), proc)
  _wait_until(lambda: len(read_rows(workdir)) >= 2, proc, "the eval row and the first step's row")
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-2000:]
  saved = [int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()]
  assert saved and 0 < max(saved) < 50


@pytest.mark.parametrize("override, message", [
    ({"mesh.shape": (3, -1, 1)}, "config.mesh.shape"),
    ({"rollout.max_prompt_len": 12}, "max_prompt_len"),
    ({"data.prompts_per_step": 3}, "prompts_per_step"),
    ({"rl.micro_batches": 3}, "micro_batches"),
    ({"rl.micro_batches": 4}, "micro-batch of 4 sequences does not divide over"),  # 16 rows, 8 shards
])
def test_bad_config_fails_at_start_naming_keys(policy, tmp_path, override, message):
  with pytest.raises(ValueError, match=message.replace(".", r"\.")):
    train.Trainer(tiny_config(policy, **override), str(tmp_path / "bad"))


def test_filter_refills_groups_without_signal(policy, tmp_path):
  """curriculum.mode=filter (DAPO dynamic sampling): groups without signal are replaced by new problems
  in at most curriculum.filter_refill rounds; the refills' tokens count; the trained groups all have signal."""
  cfg = tiny_config(policy, **{"curriculum.mode": "filter", "curriculum.filter_refill": 3})
  trainer = train.Trainer(cfg, str(tmp_path / "run"))
  trainer.restore()
  rollout, sampled = trainer.setup.rollout, []

  def scripted(params, examples, ratios, rng, **kwargs):  # a group has signal iff its problem id is even
    groups = rollout(params, examples, ratios, rng, **kwargs)
    signal = np.asarray([ex.problem_id % 2 == 0 for ex in examples])
    groups.rewards[:] = 0.0
    groups.rewards[signal, 0] = 1.0
    sampled.append(groups)
    return groups

  trainer.setup.rollout = scripted
  all_rounds = []
  for step in range(2):
    sampled.clear()
    before = trainer.pipeline.step
    metrics, _ = trainer.rl_step(step, jax.random.fold_in(trainer.rng, step))
    rounds = metrics["filter_refill_rounds"]
    all_rounds.append(rounds)
    assert trainer.pipeline.step == before + 1 + rounds and len(sampled) == 1 + rounds
    assert metrics["gen_tokens"] == sum(int(g.lengths.sum()) for g in sampled)
    if metrics["filter_groups_unfilled"] == 0:
      assert metrics["frac_groups_kept"] == 1.0 and metrics["frac_groups_nonzero_adv"] == 1.0
    else:
      assert rounds == 3
    assert metrics["filter_groups_dropped"] == sum(int((g.rewards.max(1) == g.rewards.min(1)).sum()) for g in sampled)
  assert sum(all_rounds) > 0, "no step refilled (the scripted rewards drop about half of the groups)"


@pytest.mark.slow  # builds a second trainer (~40 s on a shared CPU); test_rollout_groups covers the batch
def test_response_hints_trained_by_likelihood(policy, tmp_path):
  """hints.placement=response with rl.hint_nll_coef > 0 (UFT): the forced hints of the retried groups are
  trained by their negative log-likelihood, reported as hint_nll."""
  cfg = tiny_config(policy, **{"hints.placement": "response",
                               "rl.hint_nll_coef": 1.0})
  trainer = train.Trainer(cfg, str(tmp_path / "run"))
  trainer.restore()
  metrics, device_metrics = trainer.rl_step(0, jax.random.fold_in(trainer.rng, 0))
  assert metrics["retries"] > 0  # a random policy fails: every group ends with a hint
  assert float(device_metrics["hint_nll"]) > 0 and float(device_metrics["num_hint_tokens"]) > 0
