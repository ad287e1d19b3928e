"""tools/export_checkpoint.py on a tiny RL run: the latest checkpoint exports to the same model as the
trainer's own final export (DIR/export), an earlier step to a different one, and the files load back."""
import json
import os
import sys

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxghpo import models, train
from tests.train_fixtures import make_tiny_policy, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import export_checkpoint  # noqa: E402


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
  policy = make_tiny_policy(str(tmp_path_factory.mktemp("policy")))
  # Two steps, a checkpoint after each; no hints and no evaluation, so only one sampler compiles.
  config = tiny_config(policy, num_steps=2, checkpoint_every_steps=1)
  config.curriculum.mode = "none"
  config.data.task_configs.chains.easy_levels = config.data.task_configs.chains.hard_levels = ()
  workdir = str(tmp_path_factory.mktemp("run"))
  train.run(config, workdir)
  return workdir


def tensors(path):
  return load_file(os.path.join(path, "model.safetensors"))


def test_latest_checkpoint_matches_the_trainers_export(run_dir, tmp_path):
  out = str(tmp_path / "exported")
  step = export_checkpoint.export(run_dir, out)
  assert step == 2
  mine, theirs = tensors(out), tensors(os.path.join(run_dir, "export"))
  assert sorted(mine) == sorted(theirs)
  for name in mine:
    np.testing.assert_array_equal(mine[name], theirs[name], err_msg=name)
  with open(os.path.join(out, "config.json")) as f, open(os.path.join(run_dir, "export", "config.json")) as g:
    assert json.load(f) == json.load(g)
  assert os.path.isfile(os.path.join(out, "tokenizer.json"))

  # The exported directory is a model: same logits as the trainer's export.
  tokens = np.array([[1, 5, 9, 12, 3, 7], [2, 2, 8, 4, 6, 1]], np.int32)
  model_a, _ = models.from_pretrained(out)
  model_b, _ = models.from_pretrained(os.path.join(run_dir, "export"))
  np.testing.assert_array_equal(np.asarray(models.logits(model_a, tokens)), np.asarray(models.logits(model_b, tokens)))


def test_earlier_step_differs_and_bad_step_is_named(run_dir, tmp_path):
  out = str(tmp_path / "step1")
  assert export_checkpoint.export(run_dir, out, step=1) == 1
  first, last = tensors(out), tensors(os.path.join(run_dir, "export"))
  # One more AdamW update (its weight decay alone moves every matrix) separates step 1 from step 2.
  assert any(not np.array_equal(first[k], last[k]) for k in first)
  with pytest.raises(FileNotFoundError, match=r"step 7 .*saved steps: \[1, 2\]"):
    export_checkpoint.export(run_dir, str(tmp_path / "none"), step=7)


def test_bfloat16_export_and_missing_config(run_dir, tmp_path):
  out = str(tmp_path / "bf16")
  export_checkpoint.export(run_dir, out, dtype="bfloat16")
  with open(os.path.join(out, "config.json")) as f:
    assert json.load(f)["torch_dtype"] == "bfloat16"
  model, cfg = models.from_pretrained(out)
  assert cfg.num_params() > 0 and jax.tree.leaves(model)
  with pytest.raises(FileNotFoundError, match="config.json"):
    export_checkpoint.export(str(tmp_path / "nowhere"), str(tmp_path / "x"))
