"""Faults met by the RL loop itself: a damaged latest checkpoint, updates that keep being skipped."""
import glob
import json
import os

import pytest

from jaxghpo import rl, train
from tests.train_fixtures import make_tiny_policy, tiny_config


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
  return make_tiny_policy(str(tmp_path_factory.mktemp("policy")))


def config(policy, **kw):
  c = tiny_config(policy, checkpoint_every_steps=1, keep_checkpoints=2, export_at_end=False, **kw)
  c.rl.lr_schedule = "warmup_constant"  # so that a resume may raise num_steps (jaxghpo/resume_check.py)
  c.data.task_configs.chains.easy_levels = c.data.task_configs.chains.hard_levels = ()
  return c


def steps_on_disk(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit())


def test_resume_skips_a_damaged_latest_step_and_writes_the_data_report(policy, tmp_path, capsys):
  workdir = str(tmp_path / "run")
  train.run(config(policy, num_steps=3), workdir)
  assert steps_on_disk(workdir) == [2, 3]
  with open(os.path.join(workdir, "data_report.json")) as f:
    report = json.load(f)
  assert report["train"][0]["path"] == "task:chains/train" and report["train"][0]["kept"] > 0
  data = [p for p in glob.glob(os.path.join(workdir, "checkpoints", "3", "params", "**", "d", "*"), recursive=True)]
  with open(max(data, key=os.path.getsize), "r+b") as f:
    f.truncate(10)
  capsys.readouterr()
  train.run(config(policy, num_steps=4), workdir)
  out = capsys.readouterr().out
  assert "step 3 in" in out and "resuming from step 2" in out
  assert steps_on_disk(workdir) == [3, 4]
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows if "skipped_updates" in r] == [1, 2, 3, 4]


def test_a_resume_refused_for_changed_data_keeps_the_runs_data_report(policy, tmp_path):
  workdir = str(tmp_path / "run")
  train.run(config(policy, num_steps=1), workdir)
  report = os.path.join(workdir, "data_report.json")
  before = open(report).read()
  changed = config(policy, num_steps=2)
  changed.data.task_configs.chains.num_train = int(changed.data.task_configs.chains.num_train) + 8  # other training rows: the saved position is invalid
  with pytest.raises(ValueError, match=r"data\.task_configs\.chains\.num_train: \d+ -> \d+"):  # the config check refuses first
    train.run(changed, workdir)
  assert open(report).read() == before, "the refused run's data report replaced the run's own"
  # Past the config check (a researcher who means it), the data's fingerprint still refuses the saved position.
  with pytest.raises(ValueError, match="training data changed since this position was saved"):
    train.run(changed, workdir, allow_config_change=True)
  assert open(report).read() == before, "the refused run's data report replaced the run's own"


@pytest.mark.slow  # the guard itself is tested in test_faults_checkpoint.py; this runs it in the loop
def test_skipped_updates_in_a_row_stop_the_run_and_keep_the_good_checkpoints(policy, tmp_path, monkeypatch, capsys):
  workdir = str(tmp_path / "run")
  train.run(config(policy, num_steps=2), workdir)
  assert steps_on_disk(workdir) == [1, 2]
  real = rl.make_train_step

  def make_skipping_step(*args, **kwargs):
    step = real(*args, **kwargs)

    def skipping(params, opt_state, batch, rng):
      params, opt_state, metrics = step(params, opt_state, batch, rng)
      return params, opt_state, {**metrics, "skipped_updates": metrics["skipped_updates"] * 0 + 1}
    return skipping

  monkeypatch.setattr(rl, "make_train_step", make_skipping_step)
  # Every update skipped: the first streak of 3 (steps 3-5) rolls back to checkpoint 2, the newest healthy one;
  # the next streak (steps 7-9; step 6's update ran before the restore and is not counted) begins right after
  # that roll-back, nothing took since, so the run stops instead of reloading the same params forever.
  with pytest.raises(RuntimeError, match=r"step 9: the last 3 updates \(since step 7\) were all skipped"):
    train.run(config(policy, num_steps=14), workdir)
  out = capsys.readouterr().out
  assert "step 5: 3 updates in a row were skipped as non-finite: rolled back to the params and optimizer state " \
         "of checkpoint 2" in out
  assert out.count("rolled back") == 1
  assert not set(steps_on_disk(workdir)) & {3, 4, 7, 8, 9}, "a checkpoint was saved inside a skip streak"
