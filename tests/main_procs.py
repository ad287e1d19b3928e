"""The README's command (`python -m jaxghpo.main`) on several processes on loopback, for the tests of what
a user runs: each process's output to WORKDIR.p{i}.log, a deadline on every wait."""
from __future__ import annotations

import os
import subprocess
import sys

import portpicker

from tests.hosts_harness import wait  # one deadline-and-kill wait for every multi-process test

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def launch(config: str, workdir: str, num_processes: int, overrides: dict, devices: int = 1,
           log_tag: str = "") -> list[subprocess.Popen]:
  port = portpicker.pick_unused_port()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["JAX_PLATFORMS"] = "cpu"
  flags = [f"--config.{k}={v}" for k, v in overrides.items()]
  procs = []
  for i in range(num_processes):
    log = open(f"{workdir}.p{i}{log_tag}.log", "w")
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "jaxghpo.main", f"--config={config}", f"--workdir={workdir}",
         f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}", f"--process_id={i}",
         f"--num_cpu_devices={devices}", *flags], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    log.close()
  return procs


def log(workdir: str, process: int, log_tag: str = "") -> str:
  path = f"{workdir}.p{process}{log_tag}.log"
  return open(path).read() if os.path.exists(path) else ""


def run(config: str, workdir: str, num_processes: int, overrides: dict, timeout: float, log_tag: str = "",
        devices: int = 1) -> list[str]:
  """One run; asserts that every process exits 0 before the deadline; returns each process's output."""
  codes = wait(launch(config, workdir, num_processes, overrides, devices, log_tag), timeout)
  logs = [log(workdir, i, log_tag) for i in range(num_processes)]
  assert codes == [0] * num_processes, f"exit codes {codes} (None: running after {timeout} s, killed)\n" + "\n".join(
      f"--- process {i} ---\n{text[-3000:]}" for i, text in enumerate(logs))
  return logs
