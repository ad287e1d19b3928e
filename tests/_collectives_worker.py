"""One JAX process of several on loopback: calls every collective of parallel/hosts.py with this process's
own (unequal) data and writes what came back to --out (JSON), for tests/test_hosts_collectives.py."""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def host_data(process_id: int) -> dict:
  """Process p brings max(3 - 2p, 0) rows (3, then 1, then none) and a JSON value of its own length."""
  rows = max(3 - 2 * process_id, 0)
  return {"ids": np.arange(rows, dtype=np.int64) + 2**40 + 10 * process_id,            # beyond int32
          "x": np.full((rows, 2), 0.1 + process_id, np.float64),                        # float64 kept
          "flag": np.arange(rows) % 2 == process_id % 2,
          "json": {"p": process_id, "text": "é" * (5 * process_id + 1), "rows": rows}}


def main():
  from tests import hosts_harness
  args = hosts_harness.init_worker()
  import jax
  from jaxghpo.parallel import hosts
  assert hosts.process_count() == args.num_processes
  d = host_data(args.process_id)
  rows = hosts.allgather_rows({"ids": d["ids"], "x": d["x"], "flag": d["flag"]})
  one = hosts.allgather(d["ids"])
  out = {"ids": rows["ids"].tolist(), "x": rows["x"].tolist(), "flag": rows["flag"].tolist(),
         "dtypes": [str(rows[k].dtype) for k in ("ids", "x", "flag")] + [str(one.dtype)],
         "one": one.tolist(), "json": hosts.allgather_json(d["json"]),
         "max": hosts.agreed_max(d["json"]["rows"]), "sum": hosts.agreed_sum(d["json"]["rows"])}
  hosts.sync("collectives_worker_done")
  with open(args.out, "w", encoding="utf-8") as f:
    json.dump(out, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
