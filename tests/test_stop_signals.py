"""Why a run stops: Ctrl-C (SIGINT to the whole process group, as a terminal sends it) saves at the step
boundary and exits 130; the one line every run prints at its end."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxghpo import checkpoint, stopping

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rows(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.endswith("\n")]


def test_ctrl_c_saves_at_the_step_boundary_and_exits_130(tmp_path):
  workdir = str(tmp_path / "run")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  # No checkpoint is due before step 100: the one on disk is the one the stop saved.
  cmd = [sys.executable, "-m", "jaxghpo.main", "--config=configs/smoke.py", f"--workdir={workdir}",
         "--config.num_steps=100", "--config.checkpoint_every_steps=100"]
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
  try:
    deadline = time.monotonic() + 300
    while not any(r["step"] >= 1 for r in _rows(workdir)):  # training has begun: the handlers are in place
      assert proc.poll() is None, proc.communicate()[0][-3000:]
      assert time.monotonic() < deadline, "no training step written within 300 s"
      time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group, reward workers included
    out = proc.communicate(timeout=300)[0]
  finally:
    if proc.poll() is None:
      os.killpg(proc.pid, signal.SIGKILL)
      proc.wait()
  assert proc.returncode == 130, out[-3000:]
  stopped = [line for line in out.splitlines() if line.startswith("stopped: ")]
  assert len(stopped) == 1 and stopped[0].startswith("stopped: SIGINT at step "), stopped
  step = int(stopped[0].split("at step ")[1].split()[0])
  ckpt_dir = os.path.join(workdir, "checkpoints")
  assert not [n for n in os.listdir(ckpt_dir) if "tmp" in n], os.listdir(ckpt_dir)
  with checkpoint.Checkpointer(ckpt_dir) as ckpt:
    assert ckpt.all_steps() == [step]
    _, _, host = ckpt.restore(step)  # host state only: the step's files read back
  assert host["step"] == step and "checkpoint saved" in stopped[0]
  assert max(r["step"] for r in _rows(workdir)) == step


@pytest.mark.parametrize("reason,line", [
    ("finished steps", "stopped: finished 4/4 steps"),
    ("token budget", "stopped: token budget spent at step 4: 1,200 generated tokens of max_gen_tokens=1,000"),
    ("SIGTERM", "stopped: SIGTERM at step 4 of 10, checkpoint saved; rerun the same command to resume from step 4"),
    ("already finished", "stopped: already finished at step 4; nothing to train"),
    ("error", "stopped: error: boom"),
])
def test_stop_lines(reason, line):
  assert stopping.stop_line(reason, step=4, num_steps=4 if reason == "finished steps" else 10, gen_tokens=1200,
                            max_gen_tokens=1000, saved=4, error="boom").startswith(line)
