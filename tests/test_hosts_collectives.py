"""parallel/hosts.py's collectives on three JAX processes on loopback, with unequal data per process (3 rows,
1 row, none): every process gets every process's rows in process order, dtypes kept (int64 beyond int32,
float64), JSON of different lengths, and the agreed maximum and sum."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import portpicker

from tests.procs import wait_all

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "_collectives_worker.py")


def _host_data(process_id):
  spec = importlib.util.spec_from_file_location("_collectives_worker", WORKER)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.host_data(process_id)


def test_three_processes_gather_unequal_rows_and_json(tmp_path):
  n = 3
  port = portpicker.pick_unused_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=os.path.dirname(HERE))
  env.pop("XLA_FLAGS", None)
  outs = [str(tmp_path / f"p{i}.json") for i in range(n)]
  procs = [subprocess.Popen([sys.executable, WORKER, "--port", str(port), "--process_id", str(i),
                             "--num_processes", str(n), "--out", outs[i]],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(n)]
  logs = wait_all(procs)
  for i, p in enumerate(procs):
    assert p.returncode == 0, f"process {i} failed:\n{logs[i][-4000:]}"
  got = [json.load(open(o, encoding="utf-8")) for o in outs]
  assert got[0] == got[1] == got[2]
  data = [_host_data(p) for p in range(n)]
  want_ids = np.concatenate([d["ids"] for d in data]).tolist()
  assert got[0]["ids"] == want_ids and got[0]["one"] == want_ids and len(want_ids) == 4
  assert got[0]["ids"][0] == 2**40  # int64 beyond int32, exact
  assert got[0]["x"] == np.concatenate([d["x"] for d in data]).tolist()  # float64, exact
  assert got[0]["flag"] == np.concatenate([d["flag"] for d in data]).tolist()
  assert got[0]["dtypes"] == ["int64", "float64", "bool", "int64"]
  assert got[0]["json"] == [d["json"] for d in data]
  assert got[0]["max"] == 3 and got[0]["sum"] == 4
