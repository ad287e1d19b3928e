"""One process of a multi-process training run on loopback (spawned by test_train_multiprocess.py).

argv: coordinator_port num_processes process_id workdir model_dir devices_per_process [scripted|scripted_filter]

scripted: the rewards are scripted so that the hosts disagree. A problem's groups all fail or all
succeed by where it sits in its step's global batch: the first half (process 0's rows on 2 processes)
fails on even steps and succeeds on odd ones, the second half the reverse. So on 2 processes one host
retries every group through the whole GHPO ladder while the other retries none, then they swap; a
1-process run over the same global batches gets the same rewards for the same problems. Evaluation
has 3 problems per level, so the hosts' shares are unequal (2 and 1).

scripted_filter: curriculum.mode=filter with the same halves, but a half's groups have no signal (all
rewards 0) or signal (one sample of G rewarded): one host refills its dropped groups while the other has
none to refill. Problems drawn for refills have signal, so one refill round fills the batch.
"""
import json
import os
import sys

port, n, pid, workdir, model_dir, devices = sys.argv[1:7]
script = sys.argv[7] if len(sys.argv) > 7 else ""
scripted = script in ("scripted", "scripted_filter")
refills = script == "scripted_filter"
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

if int(n) > 1:
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=int(n), process_id=int(pid))

import numpy as np  # noqa: E402

from jaxghpo import derived, train  # noqa: E402
from jaxghpo.data import pipeline as pipeline_lib  # noqa: E402
from tests.train_fixtures import tiny_config  # noqa: E402

NUM_STEPS = 3
config = tiny_config(model_dir, num_steps=NUM_STEPS, checkpoint_every_steps=3, **{"mesh.shape": (1, -1, 1)})
config.data.prompts_per_step = 4
config.eval.deepconf.enabled = True  # online stopping with per-host thresholds: its metrics must match too
config.eval.deepconf.warmup_traces = 1  # of eval.num_samples = 2
if scripted:
  config.eval.num_problems = 3  # per level: hosts evaluate unequal shares (2 and 1 problems)
if refills:
  config.curriculum.mode = "filter"
  config.curriculum.filter_refill = 2
trainer = train.Trainer(config, workdir)

if scripted:
  P = int(config.data.prompts_per_step)
  # The global batches of the run, as one process would read them (the pipeline's contract).
  whole = pipeline_lib.make_pipeline(trainer.setup.problems.train, batch_size_per_process=P,
                                     seed=derived.seed(config, "data_order"),
                                     shuffle=True, process_index=0, process_count=1)
  succeeds = {}
  for step in range(NUM_STEPS):
    for i, ex in enumerate(next(whole)):
      assert ex.problem_id not in succeeds, "a problem appears twice in the scripted steps"
      succeeds[ex.problem_id] = (i >= P // 2) != (step % 2 == 1)
    if refills:  # every step draws one refill batch (one refill round): its problems have signal
      for ex in next(whole):
        assert ex.problem_id not in succeeds, "a problem appears twice in the scripted steps"
        succeeds[ex.problem_id] = True
  rollout = trainer.setup.rollout

  def scripted_rollout(params, examples, ratios, rng, **kwargs):
    groups = rollout(params, examples, ratios, rng, **kwargs)
    outcome = np.asarray([succeeds[ex.problem_id] for ex in examples], np.float32)[:, None]
    if refills:  # signal: the first sample of the group right, the others wrong
      outcome = outcome * (np.arange(groups.accuracy.shape[1]) == 0)
    groups.accuracy[:] = outcome
    groups.rewards[:] = outcome
    return groups

  trainer.setup.rollout = scripted_rollout

trainer.run()
state = trainer.scheduler.state_dict()
out = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in state.items()}
with open(os.path.join(workdir, f"scheduler_p{pid}.json"), "w") as f:
  json.dump(out, f, sort_keys=True, default=str)
