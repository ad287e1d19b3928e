"""Entry point: python -m jaxghpo.main --config=configs/default.py --workdir=DIR [--config.a.b=value ...]

One process per host on TPU VMs (jax.distributed is initialised automatically there); on CPU, several
processes on one machine with --coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=I.
"""
from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (get_config()).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory: metrics.jsonl, checkpoints/, eval/.")
_COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 for multi-process runs.")
_NUM_PROC = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process runs).")
_PROC_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process runs).")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False, "Resume even when keys that change the math differ from DIR/config.json "
    "(jaxghpo/resume_check.py; the changes are recorded in DIR/config_changes.jsonl).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show the libraries' INFO logs (orbax, jax, absl): off by default, "
                             "so the console holds the data report, progress, the summary and the table.")
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


def quiet_libraries() -> None:
  """Warnings and errors only from the libraries' loggers (orbax's INFO lines run to thousands of characters;
  jax says at INFO that a TPU backend did not start on a machine without one). Platform choice is untouched."""
  import logging as std_logging

  from absl import logging
  logging.set_verbosity(logging.WARNING)
  for name in ("jax", "orbax", "absl", "tensorboardX", "etils"):
    std_logging.getLogger(name).setLevel(std_logging.WARNING)


def run(config, workdir: str, allow_config_change: bool = False) -> dict:
  """train.run of the config, or, when config.arms names arms of the embedded experiment, each arm side by side
  in workdir/ARM and their comparison (jaxghpo/experiments/; the library never imports it)."""
  from jaxghpo import train, workdir_lock
  if not config.get("arms", ()):
    return train.run(config, workdir, allow_config_change=allow_config_change)
  from jaxghpo import experiments
  with workdir_lock.held(workdir):
    return experiments.run_side_by_side(config, workdir, train.run, allow_config_change=allow_config_change)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _VERBOSE.value:
    quiet_libraries()
  if _NUM_CPU_DEVICES.value:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={_NUM_CPU_DEVICES.value}")
  if _DRY_RUN_SLICE.value:
    from jaxghpo import preflight
    raise SystemExit(preflight.run(_CONFIG.value, config_flags.get_config_filename(flags.FLAGS["config"]),
                                   _DRY_RUN_SLICE.value))
  _init_distributed()
  from jaxghpo import train, validation  # after distributed init: jax must not pick devices before it
  config = _CONFIG.value
  if _WORKDIR.value is None:
    raise app.UsageError("--workdir is required (metrics.jsonl, checkpoints/ and eval/ go there)")
  from jaxghpo import disk_full, stopping, workdir_lock
  try:
    validation.check_workdir(_WORKDIR.value)
    summary = run(config, _WORKDIR.value, allow_config_change=_ALLOW_CONFIG_CHANGE.value)
  except validation.StartupError as e:  # a config value, a path, the data, the memory: one line, no traceback
    print(f"jaxghpo: cannot start: {validation.one_line(e)}", file=sys.stderr, flush=True)
    sys.exit(2)
  except workdir_lock.WorkdirLocked as e:
    print(stopping.stop_line("error", error=str(e)), file=sys.stderr, flush=True)
    sys.exit(1)  # the other run is named: no traceback
  except Exception as e:  # pylint: disable=broad-except
    full = disk_full.message(e)
    if full is None:
      first = str(e).strip().splitlines()[0] if str(e).strip() else ""
      print(stopping.stop_line("error", error=f"{type(e).__name__}: {first}"), file=sys.stderr, flush=True)
      raise  # the traceback follows the line
    print(stopping.stop_line("error", error=full), file=sys.stderr, flush=True)
    sys.exit(1)  # the cause is named: no traceback
  code = stopping.EXIT_CODES.get(summary.get("stop_reason"), 0)
  if code:
    sys.exit(code)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
