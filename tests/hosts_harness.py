"""Multi-process runs on loopback for the many-hosts tests: launch tests/_hosts_worker.py on n processes,
wait with a timeout (nothing hangs a test), and read back what the run wrote.

The worker's rewards follow per-problem plans (see its docstring): `disagreeing_plans` makes the hosts'
outcomes differ step by step, so every host takes a different path through the retry rounds.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import portpicker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_hosts_worker.py")
NEVER = 99  # a plan's `fails` that fails through the whole retry ladder


def init_worker():
  """The command line of a loopback worker that writes one file (--port, --process_id, --num_processes, --out),
  with jax.distributed started on it: the head of tests/_collectives_worker.py and tests/_scheduler_worker.py."""
  import argparse  # noqa: PLC0415
  import jax  # noqa: PLC0415
  parser = argparse.ArgumentParser()
  parser.add_argument("--port", type=int, required=True)
  parser.add_argument("--process_id", type=int, required=True)
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{args.port}", num_processes=args.num_processes,
                             process_id=args.process_id)
  return args


def launch(workdir: str, num_processes: int, devices: int, **spec) -> list[subprocess.Popen]:
  """Starts the processes of one run (stdout and stderr to WORKDIR/log_p{i}.txt)."""
  os.makedirs(workdir, exist_ok=True)
  spec = {**spec, "workdir": workdir, "num_processes": num_processes, "devices": devices,
          "port": portpicker.pick_unused_port()}
  spec_path = os.path.join(workdir, "spec.json")
  with open(spec_path, "w") as f:
    json.dump(spec, f)
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = []
  for i in range(num_processes):
    log = open(os.path.join(workdir, f"log_p{i}.txt"), "a")
    procs.append(subprocess.Popen([sys.executable, WORKER, spec_path, str(i)], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT))
    log.close()
  return procs


def wait(procs: list[subprocess.Popen], timeout: float) -> list[int | None]:
  """Return codes (None for a process still running at the deadline, which is then killed)."""
  import time
  deadline = time.time() + timeout
  for p in procs:
    try:
      p.wait(timeout=max(0.1, deadline - time.time()))
    except subprocess.TimeoutExpired:
      pass
  codes = [p.poll() for p in procs]
  for p in procs:
    if p.poll() is None:
      p.send_signal(signal.SIGKILL)
      p.wait()
  return codes


def logs(workdir: str, num_processes: int, tail: int = 2500) -> str:
  out = []
  for i in range(num_processes):
    path = os.path.join(workdir, f"log_p{i}.txt")
    text = open(path).read() if os.path.exists(path) else ""
    out.append(f"--- process {i} ---\n{text[-tail:]}")
  return "\n".join(out)


def run(workdir: str, num_processes: int, devices: int, timeout: float = 300, **spec) -> None:
  """One run; asserts that every process exits 0 within `timeout` seconds."""
  codes = wait(launch(workdir, num_processes, devices, **spec), timeout)
  assert codes == [0] * num_processes, f"exit codes {codes} (None: still running after {timeout}s, killed)\n" + \
      logs(workdir, num_processes)


def rows(workdir: str) -> list[dict]:
  """metrics.jsonl without the timings."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in f]


def scored(workdir: str, process: int) -> list[dict]:
  path = os.path.join(workdir, f"scored_p{process}.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f]


def scheduler_state(workdir: str, process: int) -> dict:
  with open(os.path.join(workdir, f"scheduler_p{process}.json")) as f:
    return json.load(f)


def eval_problem_ids(workdir: str) -> dict[str, list[int]]:
  """{eval file name: sorted problem ids in it}."""
  out = {}
  eval_dir = os.path.join(workdir, "eval")
  for name in sorted(os.listdir(eval_dir)):
    with open(os.path.join(eval_dir, name)) as f:
      out[name] = sorted(json.loads(line)["problem_id"] for line in f if line.strip())
  return out


def retries_by_host(workdir: str, num_processes: int, step: int) -> list[int]:
  """How many re-samplings (attempt > 0) each host scored at `step`."""
  return [sum(1 for r in scored(workdir, h) if r["step"] == step and r["attempt"] > 0)
          for h in range(num_processes)]


def disagreeing_plans(P: int, G: int, num_processes: int, num_steps: int, seed: int) -> list[list[list[int]]]:
  """plans[step][position] = [fails, correct] for the worker's scripted reward.

  Step 0: process 0's groups all fail through the whole ladder, every other host's all succeed at once;
  step 1: the reverse; later steps: each host draws a pattern of its own (all fail / all succeed at once /
  each group its own number of failed attempts, 0..3 or never, and its own count of right samples).
  """
  rng = np.random.default_rng(seed)
  per = P // num_processes
  plans = []
  for step in range(num_steps):
    step_plans = []
    for host in range(num_processes):
      if step < 2:
        fail = (host == 0) == (step == 0)
        step_plans += [[NEVER, 0] if fail else [0, int(rng.integers(1, G + 1))] for _ in range(per)]
        continue
      kind = rng.choice(["fail", "succeed", "mixed"])
      for _ in range(per):
        if kind == "fail":
          step_plans.append([NEVER, 0])
        elif kind == "succeed":
          step_plans.append([0, int(rng.integers(1, G + 1))])
        else:
          step_plans.append([int(rng.choice([0, 1, 2, 3, NEVER])), int(rng.integers(1, G + 1))])
    plans.append(step_plans)
  return plans


def assert_rows_equal(a: list[dict], b: list[dict], keys=None, rel: float = 1e-4, abs_: float = 1e-5) -> None:
  """Same steps, same keys, equal values (`keys`: only those, where present)."""
  import pytest
  assert [r["step"] for r in a] == [r["step"] for r in b]
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys(), (ra["step"], sorted(set(ra) ^ set(rb)))
    for key in ra:
      if keys is not None and key not in keys:
        continue
      assert ra[key] == pytest.approx(rb[key], rel=rel, abs=abs_), (ra["step"], key, ra[key], rb[key])
