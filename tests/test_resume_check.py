"""A resume compares its config with the saved config.json: math-changing keys are refused with a diff,
harmless ones are allowed and recorded, and --allow_config_change overrides."""
import json
import os

import pytest

from jaxghpo import resume_check, train, validation
from tests.train_fixtures import make_tiny_policy, tiny_config


def test_diff_and_classify():
  saved = {"num_steps": 4, "rollout": {"group_size": 4, "top_p": 1.0}, "eval_every_steps": 0,
           "rl": {"lr_schedule": "warmup_cosine"}}
  current = {"num_steps": 8, "rollout": {"group_size": 8, "top_p": 1.0}, "eval_every_steps": 2,
             "rl": {"lr_schedule": "warmup_cosine"}, "new_key": 1}
  changes = resume_check.diff(saved, current)
  assert changes == {"num_steps": (4, 8), "rollout.group_size": (4, 8), "eval_every_steps": (0, 2),
                     "new_key": ("(absent)", 1)}
  allowed, refused, reasons = resume_check.classify(changes, current)
  assert allowed == {"eval_every_steps": (0, 2)}
  assert set(refused) == {"num_steps", "rollout.group_size", "new_key"}
  assert "warmup_cosine" in reasons["num_steps"]
  current["rl"]["lr_schedule"] = "warmup_constant"  # nothing follows num_steps: extending the run is harmless
  allowed, refused, _ = resume_check.classify(changes, current)
  assert "num_steps" in allowed and "num_steps" not in refused


@pytest.fixture(scope="module")
def started(tmp_path_factory):
  """A tiny run of 2 steps with its checkpoint at step 2 (group size 4), and the config it ran with."""
  root = tmp_path_factory.mktemp("resume")
  policy = make_tiny_policy(str(root / "policy"))

  def config(**kw):
    c = tiny_config(policy, num_steps=2, checkpoint_every_steps=2, export_at_end=False, **kw)
    c.data.task_configs.chains.easy_levels = c.data.task_configs.chains.hard_levels = ()
    return c

  workdir = str(root / "run")
  train.run(config(), workdir)
  return workdir, config


def _saved(workdir):
  with open(os.path.join(workdir, "config.json")) as f:
    return json.load(f)


def test_resume_with_a_new_group_size_is_refused_naming_it(started):
  workdir, config = started
  assert config().rollout.group_size == 4
  before = _saved(workdir)
  changed = config(**{"rollout.group_size": 8, "curriculum.mode": "none", "rl.learning_rate": 0.5})
  with pytest.raises(resume_check.ConfigChanged) as e:
    train.run(changed, workdir)
  text = str(e.value)
  assert isinstance(e.value, validation.StartupError)  # main prints it as one line
  for part in ("rollout.group_size: 4 -> 8", "curriculum.mode: 'ghpo' -> 'none'", "rl.learning_rate: ",
               "--allow_config_change"):
    assert part in text, (part, text)
  assert _saved(workdir) == before  # nothing rewritten
  assert not os.path.exists(os.path.join(workdir, "config_changes.jsonl"))


def test_resume_with_harmless_changes_is_allowed_and_recorded(started, capsys):
  workdir, config = started
  # An evaluation and logging cadence change on a finished run: nothing to train, the change is recorded.
  summary = train.run(config(eval_every_steps=1, log_every_steps=5), workdir)
  assert summary.get("already_finished")
  out = capsys.readouterr().out
  assert "config changed (harmless): eval_every_steps: 0 -> 1; log_every_steps: " in out
  rows = resume_check.read_changes(workdir)
  assert rows[-1]["step"] == 2 and rows[-1]["changes"]["eval_every_steps"] == [0, 1]
  assert rows[-1]["overridden"] is False
  assert _saved(workdir)["eval_every_steps"] == 1  # config.json follows the run


def test_allow_config_change_overrides_and_records(started):
  workdir, config = started
  changed = config(eval_every_steps=1, log_every_steps=5, **{"rollout.temperature": 0.9})
  summary = train.run(changed, workdir, allow_config_change=True)
  assert summary.get("already_finished")
  rows = resume_check.read_changes(workdir)
  assert rows[-1]["changes"] == {"rollout.temperature": [1.0, 0.9]} and rows[-1]["overridden"] is True
