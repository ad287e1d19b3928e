"""Stops and restarts of a 2-process run whose hosts disagree (scripted rewards, greedy rollouts, so that
a run is a deterministic function of its checkpoint), and the shipped default config on 2 processes.

- SIGTERM to one process in the middle of a step: both processes save the same step and exit 0; a
  restart of both resumes there, and the metrics equal those of the uninterrupted run.
- SIGKILL of one process after a checkpoint: the other is stopped too (as a job scheduler restarts a
  whole slice); a restart of both resumes from the checkpoint, and the metrics equal the uninterrupted run.

The signal is sent by the process to itself when it first scores a problem of the chosen step
(tests/_hosts_worker.py): the same moment in every run of the test, which an outside timer cannot give.
"""
import json
import os

import pytest

from tests import hosts_harness as hh
from tests.train_fixtures import make_tiny_policy

pytestmark = pytest.mark.slow

P, G, STEPS, N, DEVICES = 8, 4, 4, 2, 2


def _spec(model_dir, checkpoint_every, **extra):
  overrides = {"num_steps": STEPS, "checkpoint_every_steps": checkpoint_every, "data.prompts_per_step": P,
               "rollout.group_size": G, "rollout.temperature": 1.0, "rollout.top_k": 1,  # greedy
               "rollout.max_new_tokens": 12,
               "mesh.shape": [-1, 1, 1], "export_at_end": False}
  return dict(model_dir=model_dir, plans=hh.disagreeing_plans(P, G, N, STEPS, seed=5), overrides=overrides, **extra)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  return make_tiny_policy(str(tmp_path_factory.mktemp("policy")))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, model_dir):
  workdir = str(tmp_path_factory.mktemp("uninterrupted"))
  hh.run(workdir, N, DEVICES, **_spec(model_dir, checkpoint_every=2))
  return hh.rows(workdir)


def _steps(workdir):
  return sorted(int(name) for name in os.listdir(os.path.join(workdir, "checkpoints")) if name.isdigit())


def _scored_lines(workdir):
  return [len(hh.scored(workdir, h)) for h in range(N)]


def test_sigterm_on_one_host_stops_both_at_the_same_step(tmp_path, model_dir, uninterrupted):
  workdir = str(tmp_path / "run")
  # Process 1 gets SIGTERM while it scores step 1 (the second step); checkpoints only at the end otherwise.
  hh.run(workdir, N, DEVICES, **_spec(model_dir, checkpoint_every=STEPS,
                                       signal={"process": 1, "step": 1, "name": "SIGTERM"}))
  assert _steps(workdir) == [2], "both processes save step 2, the end of the step the signal came in"
  # Neither host started the step after the stop.
  assert all(r["step"] < 2 for h in range(N) for r in hh.scored(workdir, h))
  assert [r["step"] for r in hh.rows(workdir)] == [0, 1, 2]
  before = _scored_lines(workdir)
  hh.run(workdir, N, DEVICES, **_spec(model_dir, checkpoint_every=STEPS))
  resumed = [r for h in range(N) for r in hh.scored(workdir, h)[before[h]:]]
  assert resumed and min(r["step"] for r in resumed) == 2, "the restart resumes at step 2"
  hh.assert_rows_equal(uninterrupted, hh.rows(workdir))


def test_sigkill_of_one_host_then_restart_of_both_resumes(tmp_path, model_dir, uninterrupted):
  workdir = str(tmp_path / "run")
  procs = hh.launch(workdir, N, DEVICES, **_spec(model_dir, checkpoint_every=2,
                                                  signal={"process": 1, "step": 3, "name": "SIGKILL",
                                                          "after_checkpoint": 2}))
  codes = hh.wait(procs[1:], timeout=400)
  assert codes == [-9], f"process 1: exit {codes}\n" + hh.logs(workdir, N)
  # The other host is stuck in (or failed out of) a collective: a scheduler stops the whole job.
  hh.wait(procs[:1], timeout=5)
  assert _steps(workdir) == [2]
  before = _scored_lines(workdir)
  hh.run(workdir, N, DEVICES, **_spec(model_dir, checkpoint_every=2))
  resumed = [r for h in range(N) for r in hh.scored(workdir, h)[before[h]:]]
  assert resumed and min(r["step"] for r in resumed) == 2, "the restart resumes from checkpoint 2"
  hh.assert_rows_equal(uninterrupted, hh.rows(workdir))


def test_default_config_on_two_processes(tmp_path):
  """configs/default.py (the shipped base policy, the real reward: mixed outcomes on each host) for 3 steps
  on 2 processes. Fewer evaluation problems, and data parallel: the config's fsdp mesh gathers the
  parameters over hosts at every decoded token, 10x slower on a CPU and the same host loop."""
  workdir = str(tmp_path / "run")
  overrides = {"num_steps": 3, "checkpoint_every_steps": 3, "eval.num_problems": 2, "mesh.shape": [-1, 1, 1],
               "export_at_end": True}
  hh.run(workdir, N, DEVICES, timeout=600, config="default", overrides=overrides)
  rows = hh.rows(workdir)
  assert [r["step"] for r in rows] == [0, 1, 2, 3]
  assert os.path.exists(os.path.join(workdir, "export", "model.safetensors"))
  # The hosts' outcomes differed: in some step one host re-sampled more groups than the other.
  retries = [[0] * 3 for _ in range(N)]
  for h in range(N):
    seen = set()
    for r in hh.scored(workdir, h):
      if (r["step"], r["pid"]) in seen:
        retries[h][r["step"]] += 1
      seen.add((r["step"], r["pid"]))
  assert retries[0] != retries[1], f"the hosts retried alike {retries}: this run does not test disagreement"
  assert json.load(open(os.path.join(workdir, "scheduler_p0.json"))) == \
      json.load(open(os.path.join(workdir, "scheduler_p1.json")))
