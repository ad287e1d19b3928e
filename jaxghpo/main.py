"""Entry point: python -m jaxghpo.main --config=configs/default.py --workdir=DIR [--config.a.b=value ...]

One process per host on TPU VMs (jax.distributed is initialised automatically there); on CPU, several
processes on one machine with --coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=I.
"""
from __future__ import annotations

import os

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (get_config()).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory: metrics.jsonl, checkpoints/, eval/.")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-process runs.")
_NUM_PROC = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
_PROC_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")
_DRY_RUN_SLICE = flags.DEFINE_string(
    "dry_run_slice", None, "Pre-flight: build the run for this Cloud TPU slice (e.g. v5p-64), compile every program "
    "with XLA:TPU (libtpu, pip install -e \".[tpu]\"; no TPU needed), print memory, cost and the predicted step, "
    "and exit without training or writing anything (exit 1 when a program would not fit).")
_NUM_CPU_DEVICES = flags.DEFINE_integer("num_cpu_devices", None,
                                        "Fake CPU devices per process (tests of sharding on CPU).")


def _init_distributed() -> None:
  import jax
  if _COORD.value:
    if _NUM_PROC.value is None or _PROC_ID.value is None:
      raise app.UsageError("--coordinator_address needs --num_processes and --process_id")
    jax.distributed.initialize(coordinator_address=_COORD.value, num_processes=_NUM_PROC.value,
                               process_id=_PROC_ID.value)
  elif os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("CLOUD_TPU_TASK_ID") or os.environ.get(
      "MEGASCALE_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()  # TPU VM: everything is auto-detected


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _NUM_CPU_DEVICES.value:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={_NUM_CPU_DEVICES.value}")
  if _DRY_RUN_SLICE.value:
    from jaxghpo import preflight
    raise SystemExit(preflight.run(_CONFIG.value, config_flags.get_config_filename(flags.FLAGS["config"]),
                                   _DRY_RUN_SLICE.value))
  _init_distributed()
  from jaxghpo import train  # after distributed init: jax must not pick devices before it
  config = _CONFIG.value
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required (metrics.jsonl, checkpoints/ and eval/ go there)")
  train.run(config, _WORKDIR.value)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
