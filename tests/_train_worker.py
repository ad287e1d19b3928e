"""One process of a multi-process training run on loopback (spawned by test_train_multiprocess.py).

argv: coordinator_port num_processes process_id workdir model_dir devices_per_process
"""
import json
import os
import sys

port, n, pid, workdir, model_dir, devices = sys.argv[1:7]
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
os.environ["JAX_PLATFORMS"] = "cpu"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

if int(n) > 1:
  jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=int(n), process_id=int(pid))

from jaxghpo import train  # noqa: E402
from tests.train_fixtures import tiny_config  # noqa: E402

config = tiny_config(model_dir, num_steps=3, checkpoint_every_steps=3, **{"mesh.shape": (1, -1, 1)})
config.data.prompts_per_step = 4
config.eval.deepconf.enabled = True  # online stopping with per-host thresholds: its metrics must match too
config.eval.deepconf.warmup_traces = 1  # of eval.num_samples = 2
trainer = train.Trainer(config, workdir)
trainer.run()
state = trainer.scheduler.state_dict()
out = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in state.items()}
with open(os.path.join(workdir, f"scheduler_p{pid}.json"), "w") as f:
  json.dump(out, f, sort_keys=True, default=str)
