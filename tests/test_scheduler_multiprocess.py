"""Two JAX processes on loopback, each feeding its own slice of every batch, end with the same
scheduler state, decisions and metrics as each other and as one process fed the whole batch."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import portpicker
import pytest

from tests.procs import wait_all

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_scheduler_worker.py")


def _load_worker():
  spec = importlib.util.spec_from_file_location("_scheduler_worker", WORKER)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _run_two_processes(tmp_path):
  port = portpicker.pick_unused_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.path.dirname(HERE))
  env.pop("XLA_FLAGS", None)  # one CPU device per process, as on a host with one accelerator
  outs = [str(tmp_path / f"p{i}.npz") for i in range(2)]
  procs = [
      subprocess.Popen([sys.executable, WORKER, "--port", str(port), "--process_id", str(i), "--num_processes", "2",
                        "--out", outs[i]], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)
  ]
  logs = wait_all(procs)
  for i, p in enumerate(procs):
    assert p.returncode == 0, f"process {i} failed:\n{logs[i][-4000:]}"
  return [dict(np.load(o)) for o in outs]


def test_two_hosts_match_each_other_and_one_host(tmp_path):
  worker = _load_worker()
  hosts = _run_two_processes(tmp_path)
  sched, plans, finals, metrics = worker.run_scenario()
  single = worker.flatten(sched.state_dict(), "state/")

  state_keys = sorted(k for k in hosts[0] if k.startswith("state/"))
  assert state_keys == sorted(single)
  for key in state_keys:
    np.testing.assert_array_equal(hosts[0][key], hosts[1][key], err_msg=f"hosts differ in {key}")
    np.testing.assert_array_equal(hosts[0][key], single[key], err_msg=f"two hosts differ from one in {key}")

  # The scenario really exercised the shared state: eviction, ladder retries, hints.
  assert int(single["state/problems/evicted_total"]) > 0
  assert max(m["retries"] for m in metrics) > 0
  assert any(float(np.max(p)) > 0 for p in plans)

  # Each host's decisions are the matching rows of the one-host decisions.
  for step in range(worker.NUM_STEPS):
    joined_plan = np.concatenate([hosts[0][f"plan/{step}"], hosts[1][f"plan/{step}"]])
    joined_final = np.concatenate([hosts[0][f"final/{step}"], hosts[1][f"final/{step}"]])
    np.testing.assert_array_equal(joined_plan, plans[step])
    np.testing.assert_array_equal(joined_final, finals[step])

  # Metrics are global (gathered), so every host reports the one-host numbers.
  m0, m1 = (json.loads(str(h["metrics_json"])) for h in hosts)
  assert m0 == m1
  assert m0 == json.loads(json.dumps(metrics, sort_keys=True))


if __name__ == "__main__":
  sys.exit(pytest.main([__file__, "-q"]))
