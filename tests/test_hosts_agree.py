"""Every host decides the same thing from the same facts, through the README's command on 2 processes:

- resume: a checkpoint file that only process 1 reads is damaged; both hosts fall back to the same
  earlier step (the step to restore is agreed), both exit 0 (before, process 0 restored the latest step
  and waited forever in a collective);
- the default config's arms and comparison: process 0 writes the comparison while process 1 waits at
  an agreed barrier; both exit 0 and there is one comparison.md.
"""
import glob
import json
import os

import pytest

from tests import main_procs

pytestmark = pytest.mark.slow


def _steps(workdir):
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())


def test_a_file_only_one_host_reads_is_damaged_both_fall_back_together(tmp_path):
  workdir = str(tmp_path / "run")
  # The repro (8 steps, a checkpoint every 4) shrunk: the same fall-back (from step 2 to step 1).
  overrides = {"num_steps": 2, "checkpoint_every_steps": 1, "eval.num_problems": 1, "rollout.group_size": 2}
  main_procs.run("configs/smoke.py", workdir, 2, overrides, timeout=400)
  assert _steps(workdir) == [1, 2]
  files = [f for f in glob.glob(os.path.join(workdir, "checkpoints", "2", "params", "ocdbt.process_1", "d", "*"))
           if os.path.isfile(f)]
  assert files, "process 1 wrote no params data file of step 8"
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as f:
    f.truncate(os.path.getsize(largest) // 2)
  logs = main_procs.run("configs/smoke.py", workdir, 2, overrides, timeout=400, log_tag=".resume")
  for process, text in enumerate(logs):
    assert "resuming from step 1" in text, f"process {process}:\n{text[-3000:]}"
  assert "step 2 in" in logs[0] and "does not restore" in logs[0]
  assert _steps(workdir) == [1, 2]  # step 2 trained again from 1 and saved
  rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert [r["step"] for r in rows] == [0, 1, 2], "the resumed run rewrote step 2 once"


def test_default_config_arms_and_comparison_on_two_processes(tmp_path):
  """configs/default.py (arms ghpo and grpo, then report.compare) shrunk to 1 step per arm."""
  workdir = str(tmp_path / "run")
  # Data parallel: the config's fsdp mesh gathers the parameters over hosts at every decoded token (10x
  # slower on a CPU, the same host loop; tests/test_hosts_stop.py runs it).
  overrides = {"num_steps": 1, "checkpoint_every_steps": 1, "max_gen_tokens": 10**9, "data.prompts_per_step": 4,
               "rollout.group_size": 4, "eval.num_problems": 1, "eval.num_samples": 2, "rl.micro_batches": 1,
               "mesh.shape": "(-1,1,1)"}
  logs = main_procs.run("configs/default.py", workdir, 2, overrides, timeout=600)
  assert os.path.exists(os.path.join(workdir, "comparison.md"))
  assert sum("written: " in text and "comparison.md" in text for text in logs) == 1, "process 0 alone compares"
  for arm in ("ghpo", "grpo"):
    assert os.path.exists(os.path.join(workdir, arm, "summary.json"))
