"""Two processes on loopback, each feeding its half of the global batch, against one process."""
import json
import os
import subprocess
import sys

import portpicker
import pytest

from tests.train_fixtures import make_tiny_policy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "_train_worker.py")


def _run(n, workdir, model_dir, devices):
  port = portpicker.pick_unused_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen([sys.executable, WORKER, str(port), str(n), str(i), workdir, model_dir, str(devices)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
           for i in range(n)]
  for p in procs:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err.decode()[-3000:]


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [{k: v for k, v in json.loads(line).items() if not k.startswith("time/")} for line in f]


def test_two_processes_match_one(tmp_path):
  model_dir = make_tiny_policy(str(tmp_path / "policy"))
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  _run(1, one, model_dir, devices=4)
  _run(2, two, model_dir, devices=2)
  state = [json.load(open(os.path.join(two, f"scheduler_p{i}.json"))) for i in range(2)]
  assert state[0] == state[1], "the two hosts' scheduler statistics differ"
  assert state[0] == json.load(open(os.path.join(one, "scheduler_p0.json")))
  assert not os.path.exists(os.path.join(two, "metrics_p1.jsonl"))
  a, b = _rows(one), _rows(two)
  assert any(k.endswith("deepconf/tokens_saved_frac") for k in a[-1])
  assert [r["step"] for r in a] == [r["step"] for r in b]
  for ra, rb in zip(a, b):
    assert ra.keys() == rb.keys()
    for key in ra:
      assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-5), (ra["step"], key)
