"""One run per workdir: a second run is refused naming the first; a stale lease is taken over."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from jaxghpo import paths, workdir_lock
from tests.fake_gcs import fake_gcs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(params=["local", "gs"])
def workdir(request, tmp_path):
  if request.param == "local":
    yield str(tmp_path / "run")
  else:
    with fake_gcs():
      yield "gs://bucket/run"


def _lease(workdir):
  return json.loads(paths.read_text(paths.join(workdir, workdir_lock.LOCK_FILE)))


def test_a_second_run_is_refused_naming_the_first_then_may_start(workdir):
  first = workdir_lock.Lease(workdir)
  first.acquire()
  with pytest.raises(workdir_lock.WorkdirLocked,
                     match=rf"workdir {workdir} is in use by another run \(host {socket.gethostname()}, "
                           rf"pid {os.getpid()}, started .* UTC, heartbeat 0 s ago"):
    workdir_lock.Lease(workdir).acquire()
  first.release()
  assert not paths.exists(paths.join(workdir, workdir_lock.LOCK_FILE))
  with workdir_lock.held(workdir):
    assert _lease(workdir)["pid"] == os.getpid()


def test_a_stale_lease_is_taken_over_with_a_message(workdir, capsys):
  old = time.time() - 10 * workdir_lock.STALE_S
  paths.makedirs(workdir)
  paths.write_text(paths.join(workdir, workdir_lock.LOCK_FILE),
                   json.dumps({"host": "tpu-vm-7", "pid": 4242, "started": old, "heartbeat": old, "token": "x"}))
  lease = workdir_lock.Lease(workdir)
  lease.acquire()
  out = capsys.readouterr().out
  assert "workdir lock: taking over" in out and "host tpu-vm-7, pid 4242" in out and "heartbeat is" in out
  assert _lease(workdir)["token"] == lease.lease["token"]
  lease.release()


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path, capsys):
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  workdir = str(tmp_path / "run")
  now = time.time()
  os.makedirs(workdir)
  with open(os.path.join(workdir, workdir_lock.LOCK_FILE), "w") as f:
    json.dump({"host": socket.gethostname(), "pid": dead.pid, "started": now, "heartbeat": now, "token": "x"}, f)
  with workdir_lock.held(workdir):
    assert f"its process {dead.pid} on this host is gone" in capsys.readouterr().out


def test_the_heartbeat_is_rewritten(tmp_path, monkeypatch):
  monkeypatch.setattr(workdir_lock, "HEARTBEAT_S", 0.05)
  workdir = str(tmp_path / "run")
  with workdir_lock.held(workdir):
    first = _lease(workdir)["heartbeat"]
    deadline = time.monotonic() + 30
    while _lease(workdir)["heartbeat"] == first:
      assert time.monotonic() < deadline, "no heartbeat written within 30 s"
      time.sleep(0.05)


def test_a_second_run_on_the_command_line_is_refused(tmp_path):
  """The README's command on a workdir that this test process holds: exit 1, one line naming the holder."""
  workdir = str(tmp_path / "run")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  with workdir_lock.held(workdir):
    proc = subprocess.run([sys.executable, "-m", "jaxghpo.main", "--config=configs/smoke.py", f"--workdir={workdir}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 1, proc.stderr[-3000:]
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith(f"stopped: error: workdir {workdir} is in use by another run (host {socket.gethostname()}, "
                         f"pid {os.getpid()}, "), last
  assert "Traceback" not in proc.stderr
  assert not os.path.exists(os.path.join(workdir, "metrics.jsonl")) and not os.path.exists(
      os.path.join(workdir, "checkpoints"))
