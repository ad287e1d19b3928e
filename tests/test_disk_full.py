"""A full disk (ENOSPC) while writing metrics or checkpoints: one line naming the path and the bytes, exit 1."""
import errno
import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxghpo import checkpoint, disk_full, paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The run itself, with the metrics file's writes failing for want of space from the step-2 row on.
_RUNNER = textwrap.dedent("""
    import builtins, errno, sys
    from absl import app
    from jaxghpo import logging_utils, main

    class FullFile:
      def __init__(self, f):
        self.f = f
      def write(self, text):
        if '"step": 2' in text:
          raise OSError(errno.ENOSPC, "No space left on device")
        return self.f.write(text)
      def __getattr__(self, name):
        return getattr(self.f, name)

    logging_utils.open = lambda *a, **k: FullFile(builtins.open(*a, **k))
    app.run(main.main, argv=sys.argv)
    """)


def test_a_full_disk_in_a_run_is_one_line_and_exit_1(tmp_path):
  workdir = str(tmp_path / "run")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  proc = subprocess.run([sys.executable, "-c", _RUNNER, "--config=configs/smoke.py", f"--workdir={workdir}",
                         "--config.num_steps=3"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
  metrics = os.path.join(workdir, "metrics.jsonl")
  lines = [line for line in proc.stderr.splitlines() if line.startswith("stopped: ")]
  assert lines == [lines[0]] and lines[0].startswith(f"stopped: error: disk full: writing {metrics} needs "), lines
  assert " bytes (" in lines[0] and "bytes free there" in lines[0]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert proc.stderr.rstrip().endswith(lines[0]), "the cause is the last line"


def _params():
  return {"w": jnp.arange(1000, dtype=jnp.float32)}


def test_a_checkpoint_save_on_a_full_disk_names_the_step_and_bytes(tmp_path, monkeypatch):
  directory = str(tmp_path / "ckpt")

  def full(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
  monkeypatch.setattr(ocp.CheckpointManager, "save", full)
  with checkpoint.Checkpointer(directory, async_save=False) as ckpt:
    with pytest.raises(disk_full.DiskFull) as info:
      ckpt.save(3, params=_params(), host_state={"ids": np.zeros(10, np.int64)})
  assert str(info.value).startswith(f"disk full: writing {os.path.join(directory, '3')} needs 4,080 bytes (")


def test_a_background_save_that_met_a_full_disk_is_named_at_the_wait(tmp_path, monkeypatch):
  directory = str(tmp_path / "ckpt")
  with checkpoint.Checkpointer(directory) as ckpt:
    ckpt.save(1, params=_params())
    real_wait = ocp.CheckpointManager.wait_until_finished

    def failed(self):
      real_wait(self)
      try:
        raise OSError(errno.ENOSPC, "No space left on device")
      except OSError as e:  # as orbax reports an error of its writer thread: wrapped in another
        raise RuntimeError("async save failed") from e
    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", failed)
    with pytest.raises(disk_full.DiskFull, match=rf"writing {os.path.join(directory, '1')} needs 4,000 bytes"):
      ckpt.wait()
    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", real_wait)


def test_paths_write_names_the_file_and_its_size(tmp_path, monkeypatch):
  def full(path, data):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))
  monkeypatch.setattr(paths, "_write_bytes", full)
  target = str(tmp_path / "summary.json")
  with pytest.raises(disk_full.DiskFull, match=rf"writing {target} needs 5 bytes \([\d,]+ bytes free there\)"):
    paths.write_text(target, "hello")


def test_other_errors_pass_through():
  with pytest.raises(ValueError, match="not a disk"):
    with disk_full.writing("/x", 1):
      raise ValueError("not a disk")
