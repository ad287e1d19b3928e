"""A scripted scheduler run over a fixed global batch, for tests/test_scheduler_multiprocess.py.

As a script, one JAX process of several on loopback, it feeds the scheduler only its own slice of
each step's batch and writes its final state, its decisions and the metrics to --out (.npz). The
test imports `run_scenario` to make the same run in one process over the whole batch.
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NUM_STEPS = 6
GLOBAL_BATCH = 16
NUM_SAMPLES = 4  # G
NUM_PROBLEMS = 40


def scenario_config():
  from jaxghpo import curriculum
  cfg = curriculum.default_config()
  cfg.mode = "adaptive"
  cfg.adaptive_retry = True
  cfg.max_problems = 24  # smaller than the 40 problems drawn: eviction runs on every host alike
  return cfg


def batch(step: int):
  """The global batch of a step: ids int64 [16], levels int [16]."""
  rng = np.random.default_rng(1000 + step)
  ids = rng.choice(NUM_PROBLEMS, GLOBAL_BATCH, replace=False).astype(np.int64) * 1_000_003 + 2**40
  return ids, (ids % 5).astype(np.int32)


def host_rows(step: int, process_id: int, num_processes: int) -> slice:
  """Equal halves on even steps, 10/6 on odd steps (hosts may hold unequal slices)."""
  if num_processes == 1:
    return slice(0, GLOBAL_BATCH)
  cut = GLOBAL_BATCH // 2 if step % 2 == 0 else 10
  return slice(0, cut) if process_id == 0 else slice(cut, GLOBAL_BATCH)


def rewards_of(ids, ratios, step: int) -> np.ndarray:
  """Deterministic synthetic accuracy rewards [b, G]: a function of (id, ratio, step) only."""
  out = np.zeros((len(ids), NUM_SAMPLES), np.float32)
  for i, (pid, r) in enumerate(zip(ids.tolist(), ratios.tolist())):
    difficulty = (pid % 5) / 4.0
    p = min(max(0.9 - difficulty + r, 0.0), 1.0)
    rng = np.random.default_rng([pid % 2**32, step, int(round(r * 1000))])
    out[i] = rng.random(NUM_SAMPLES) < p
  return out


def run_scenario(process_id: int = 0, num_processes: int = 1):
  """Runs the scripted steps on this host's slices; returns (sched, plans, final ratios, metrics)."""
  from jaxghpo import curriculum
  sched = curriculum.HintScheduler(scenario_config())
  plans, finals, metrics = [], [], []
  for step in range(NUM_STEPS):
    ids, levels = batch(step)
    rows = host_rows(step, process_id, num_processes)
    ids, levels = ids[rows], levels[rows]
    final_ratios, _, m = curriculum.run_step(sched, ids, lambda i, r: rewards_of(i, r, step), levels=levels,
                                             step=step)
    plans.append(sched.plan(ids, levels=levels))  # next step's plan for the same ids: reads the new state
    finals.append(final_ratios)
    metrics.append(m)
  return sched, plans, finals, metrics


def flatten(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flatten(value, name + "/"))
    else:
      out[name] = np.asarray(value)
  return out


def main():
  from tests import hosts_harness
  args = hosts_harness.init_worker()
  import jax
  assert jax.process_count() == args.num_processes
  sched, plans, finals, metrics = run_scenario(args.process_id, args.num_processes)
  arrays = flatten(sched.state_dict(), "state/")
  for step, (p, f) in enumerate(zip(plans, finals)):
    arrays[f"plan/{step}"] = p
    arrays[f"final/{step}"] = f
  arrays["metrics_json"] = np.array(json.dumps(metrics, sort_keys=True))
  np.savez(args.out, **arrays)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()
