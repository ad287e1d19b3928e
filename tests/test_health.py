"""Checkpoint health records and the roll-back at a skip streak (jaxghpo/health.py, faults.SkipGuard)."""
import os

import jax
import ml_collections
import numpy as np
import pytest

from jaxghpo import checkpoint, faults, health, rl, train
from tests.train_fixtures import make_tiny_policy, tiny_config


def test_health_record_names_what_failed():
  params = {"w": jax.numpy.ones((4, 4))}
  tracker = health.HealthTracker(health.global_norm(params))
  assert tracker.reference == pytest.approx(4.0)
  tracker.observe(1, {"skipped_updates": 0.0, "loss": 0.5, "grad_norm": 1.0})
  record = tracker.at_save(params)
  assert record["healthy"] and record["rows"] == 1 and record["why"] == ""
  tracker.observe(2, {"skipped_updates": 1.0, "loss": float("nan"), "grad_norm": 1.0})
  record = tracker.at_save(params)
  assert not record["healthy"] and "step 2: 1 skipped updates, loss=nan" in record["why"]
  wrecked = {"w": jax.numpy.full((4, 4), 1e4)}  # finite, but 1e4 x the start's norm
  record = tracker.at_save(wrecked)
  assert not record["healthy"] and "over 100x the start's" in record["why"]
  assert not tracker.at_save({"w": jax.numpy.full((4, 4), np.inf)})["healthy"]


def test_skip_guard_rolls_back_then_stops_when_no_healthy_checkpoint_is_left():
  config = ml_collections.ConfigDict({"max_skipped_updates_in_a_row": 2, "rl": {"ppo_epochs": 1}})
  answers = [True, False]
  guard = faults.SkipGuard(config, on_limit=lambda step: answers.pop(0))
  guard.observe(1, {"skipped_updates": 1.0})
  guard.observe(2, {"skipped_updates": 1.0})  # the limit: rolled back, the streak starts again
  assert guard.in_a_row == 0 and guard.may_save(2)
  guard.observe(3, {"skipped_updates": 1.0})  # the step in flight at the roll-back: not counted
  guard.observe(4, {"skipped_updates": 1.0})
  with pytest.raises(RuntimeError, match="No checkpoint with a healthy record is left to roll back to"):
    guard.observe(5, {"skipped_updates": 1.0})


def test_a_skip_streak_rolls_back_past_a_wrecked_checkpoint(tmp_path, monkeypatch, capsys):
  """Step 3 wrecks the weights (finite, 1e4 x), steps 4-5 are skipped: the run rolls back to checkpoint 2,
  the newest recorded healthy (not 3, saved with the wrecked weights), and finishes with sane weights."""
  policy = make_tiny_policy(str(tmp_path / "policy"))
  config = tiny_config(policy, num_steps=6, checkpoint_every_steps=1, keep_checkpoints=6, export_at_end=False,
                       max_skipped_updates_in_a_row=2)
  config.data.task_configs.chains.easy_levels = config.data.task_configs.chains.hard_levels = ()
  real = rl.make_train_step
  calls = []

  def make_faulty_step(*args, **kwargs):
    step = real(*args, **kwargs)

    def faulty(params, opt_state, batch, rng):
      calls.append(1)
      params, opt_state, metrics = step(params, opt_state, batch, rng)
      if len(calls) == 3:
        params = jax.tree.map(lambda x: x * 1e4, params)
      if len(calls) in (4, 5):
        metrics = {**metrics, "skipped_updates": metrics["skipped_updates"] * 0 + 1}
      return params, opt_state, metrics
    return faulty

  monkeypatch.setattr(rl, "make_train_step", make_faulty_step)
  trainer = train.Trainer(config, str(tmp_path / "run"))
  trainer.run()
  out = capsys.readouterr().out
  assert "rolled back to the params and optimizer state of checkpoint 2" in out, out[-3000:]
  ckpt = checkpoint.Checkpointer(os.path.join(str(tmp_path / "run"), "checkpoints"), max_to_keep=None)
  records = {s: health.read_health(ckpt, s) for s in ckpt.all_steps()}
  ckpt.close()
  assert sorted(records) == [1, 2, 3, 5, 6]  # no checkpoint during the streak (step 4)
  assert records[2]["healthy"] and not records[3]["healthy"] and "over 100x" in records[3]["why"]
  assert records[5]["healthy"] and records[6]["healthy"]  # the rolled-back weights, and one update after
  assert records[6]["param_norm"] < 2 * records[2]["param_norm"]
