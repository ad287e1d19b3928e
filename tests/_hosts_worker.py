"""One process of a multi-process run on loopback whose rewards are scripted per problem, so hosts disagree.

argv: spec.json process_id    (spawned by tests/hosts_harness.py; the spec is hosts_harness.Spec as JSON)

The rewards ignore the completions: each training problem has a plan [fails, correct] -- its first
`fails` scorings give 0 correct samples of G, every later one `correct` of G (fails >= 4 fails through
the whole retry ladder). The plans are given per step and per position in the step's global batch
(spec.plans[step][position]); position p of the global batch is problem p of a one-process run's
batch, and on n processes it sits on process p // (P / n). So a plan that fails positions [0, P/2)
and succeeds [P/2, P) makes process 0 of 2 retry every group while process 1 retries none.

The answers of the problems are tagged with the problem's id so that the score function knows whose
completions it scores; nothing else reads answers during a run. Evaluation problems: every sample of
an even problem id is right, of an odd one wrong.

Each scoring is appended to WORKDIR/scored_p{process}.jsonl ({"pid", "step", "attempt", "correct"}),
flushed at once, so a test can check what each host did even when the process was killed.
spec.signal = {"process": h, "step": s, "name": "SIGTERM" | "SIGKILL", "after_checkpoint": c}: process h
sends itself that signal when it first scores a problem of step s (for SIGKILL: after checkpoint c is
on disk), the deterministic stand-in for a preemption notice or a crash during that step.
At the end every process writes scheduler_p{process}.json (its scheduler's state).
"""
import dataclasses
import json
import os
import signal
import sys
import time

spec_path, pid = sys.argv[1], int(sys.argv[2])
with open(spec_path) as f:
  spec = json.load(f)
n = int(spec["num_processes"])
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={spec['devices']}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

if n > 1:
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{spec['port']}", num_processes=n, process_id=pid)

import numpy as np  # noqa: E402

from jaxghpo import derived, experiment, train  # noqa: E402
from jaxghpo.data import pipeline as pipeline_lib  # noqa: E402
from tests.train_fixtures import tiny_config  # noqa: E402

TAG = "\x00pid="
workdir = spec["workdir"]
os.makedirs(workdir, exist_ok=True)

if spec.get("config") == "default":
  from configs import default as default_config
  config = default_config.get_config()
else:
  config = tiny_config(spec["model_dir"])
for key, value in spec.get("overrides", {}).items():
  node = config
  *path, leaf = key.split(".")
  for p in path:
    node = node[p]
  node[leaf] = tuple(value) if isinstance(value, list) else value
P, G = int(config.data.prompts_per_step), int(config.rollout.group_size)
plans = spec.get("plans")  # None: the real reward (the policy's own outcomes)

load_problems, real_reward_fn = experiment.load_problems, experiment.reward_fn
step_of, plan_of = {}, {}


def tagged_problems(cfg):
  """The run's problems, answers tagged with their ids; the plan of every problem of every step."""
  problems = load_problems(cfg)
  whole = pipeline_lib.make_pipeline(problems.train, batch_size_per_process=P, seed=derived.seed(cfg, "data_order"),
                                     shuffle=True, process_index=0, process_count=1)
  for step in range(int(cfg.num_steps)):
    batch = next(whole)
    if plans is not None:
      assert len(plans[step]) == P, f"spec.plans[{step}] has {len(plans[step])} plans for {P} problems"
    for position, ex in enumerate(batch):
      assert ex.problem_id not in step_of, f"problem {ex.problem_id} is drawn twice in the run's steps"
      step_of[ex.problem_id] = step
      if plans is not None:
        plan_of[ex.problem_id] = plans[step][position]
  tag = lambda kind, exs: [dataclasses.replace(ex, answer=f"{ex.answer}{TAG}{kind}:{ex.problem_id}") for ex in exs]
  problems.train = tag("train", problems.train)
  problems.eval_sets = {name: tag("eval", exs) for name, exs in problems.eval_sets.items()}
  return problems


log = open(os.path.join(workdir, f"scored_p{pid}.jsonl"), "a", buffering=1)
attempts = {}


def send_signal_at(step: int) -> None:
  sig = spec.get("signal")
  if not sig or sig["process"] != pid or sig["step"] != step or sig.get("sent"):
    return
  sig["sent"] = True
  if sig["name"] == "SIGKILL":
    # A crash after checkpoint c is on disk (the checkpoint is written asynchronously).
    done = os.path.join(workdir, "checkpoints", str(sig["after_checkpoint"]))
    deadline = time.time() + 120
    while not os.path.isdir(done) and time.time() < deadline:
      time.sleep(0.2)
    time.sleep(1.0)
  os.kill(os.getpid(), getattr(signal, sig["name"]))


def runs(answers) -> list[tuple[int, int]]:
  """(start, stop) of each run of equal answers: one problem's samples (G in training, k in evaluation)."""
  out, start = [], 0
  for i in range(1, len(answers) + 1):
    if i == len(answers) or answers[i] != answers[start]:
      out.append((start, i))
      start = i
  return out


def scripted_reward_fn(cfg, problems):
  def score(completions, answers, **context):
    correct = np.zeros(len(answers), np.float32)
    for start, stop in runs(answers):
      kind, problem_id = answers[start].split(TAG)[1].split(":")
      problem_id = int(problem_id)
      if kind == "eval":
        correct[start:stop] = float(problem_id % 2 == 0)
        continue
      assert stop - start == G, f"problem {problem_id}: {stop - start} samples scored, expected G={G}"
      step = step_of[problem_id]
      send_signal_at(step)
      fails, right = plan_of[problem_id]
      attempt = attempts[problem_id] = attempts.get(problem_id, -1) + 1
      k = 0 if attempt < fails else right
      correct[start:start + k] = 1.0
      log.write(json.dumps({"pid": problem_id, "step": step, "attempt": attempt, "correct": k}) + "\n")
    return correct, correct.copy()
  return score


def logged_reward_fn(cfg, problems):
  """The real reward (tags taken off the answers); logs each problem's count of right samples."""
  score = real_reward_fn(cfg, problems)

  def logged(completions, answers, **context):
    total, accuracy = score(completions, [a.split(TAG)[0] for a in answers], **context)
    acc = np.asarray(accuracy) > 0
    for start, stop in runs(answers):
      kind, problem_id = answers[start].split(TAG)[1].split(":")
      if kind == "train":
        log.write(json.dumps({"pid": int(problem_id), "step": step_of[int(problem_id)],
                              "correct": int(acc[start:stop].sum())}) + "\n")
    return total, accuracy
  return logged


experiment.load_problems = tagged_problems
experiment.reward_fn = scripted_reward_fn if plans is not None else logged_reward_fn

trainer = train.Trainer(config, workdir)
result = trainer.run()
state = trainer.scheduler.state_dict()
out = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in state.items()}
with open(os.path.join(workdir, f"scheduler_p{pid}.json"), "w") as f:
  json.dump(out, f, sort_keys=True, default=str)
print(f"process {pid} finished: {sorted(result)}", flush=True)
