"""MetricWriter (jsonl, resume truncation, TensorBoard, console) and DeferredMetrics (one step late)."""
import io
import json
import math
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxghpo import logging_utils
from jaxghpo.logging_utils import DeferredMetrics, MetricWriter, read_metrics


def _lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return f.read().splitlines()


def test_rows_are_python_values_one_json_object_per_write(tmp_path, capsys):
  with MetricWriter(tmp_path, tensorboard=False, progress=False) as w:
    row = w.write(1, {"reward_mean": np.float32(0.25), "retries": np.int64(3), "kl": jnp.float32(0.5),
                      "skipped": jnp.asarray(2, jnp.int32), "ok": np.bool_(True), "hist": np.array([1, 2]),
                      "time/step_s": 1.5, "mode": "ghpo"})
    w.write(2, {"reward_mean": 0.75})
  assert row == {"step": 1, "reward_mean": 0.25, "retries": 3, "kl": 0.5, "skipped": 2, "ok": True,
                 "hist": [1, 2], "time/step_s": 1.5, "mode": "ghpo"}
  assert [type(row[k]) for k in ("reward_mean", "retries", "kl", "skipped", "ok")] == [float, int, float, int, bool]
  lines = _lines(tmp_path)
  assert len(lines) == 2
  assert json.loads(lines[0]) == row
  assert lines[1] == '{"step": 2, "reward_mean": 0.75}'
  assert capsys.readouterr().out == ""  # progress=False: silent


def test_nan_and_inf_keep_the_file_valid_json(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False, progress=False) as w:
    w.write(1, {"a": float("nan"), "b": np.float32(np.inf), "c": jnp.float32(-jnp.inf), "d": np.array([1.0, np.nan])})
  (line,) = _lines(tmp_path)
  assert json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}")) == {
      "step": 1, "a": "nan", "b": "inf", "c": "-inf", "d": [1.0, "nan"]}


def test_resume_truncates_rows_after_the_restored_step_and_appends(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False, progress=False) as w:
    for step in range(1, 6):
      w.write(step, {"x": step})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 6, "x"')  # a line cut by SIGKILL
  with MetricWriter(tmp_path, tensorboard=False, progress=False, resume_step=3) as w:
    for step in range(4, 7):
      w.write(step, {"x": 10 * step})
  rows = read_metrics(tmp_path)
  assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
  assert [r["x"] for r in rows] == [1, 2, 3, 40, 50, 60]
  # resume_step=None keeps everything; a fresh run with resume_step=0 clears the rows.
  with MetricWriter(tmp_path, tensorboard=False, progress=False) as w:
    pass
  assert len(read_metrics(tmp_path)) == 6
  with MetricWriter(tmp_path, tensorboard=False, progress=False, resume_step=0) as w:
    w.write(1, {"x": 0})
  assert read_metrics(tmp_path) == [{"step": 1, "x": 0}]


def test_only_the_main_process_writes(tmp_path, capsys):
  with MetricWriter(tmp_path / "w", is_main_process=False, total_steps=10, print_every=1) as w:
    assert w.write(10, {"reward_mean": np.float32(1.0)}) == {"step": 10, "reward_mean": 1.0}
  assert not (tmp_path / "w").exists()
  assert capsys.readouterr() == ("", "")


def test_not_a_terminal_prints_plain_lines_every_n_steps(tmp_path, capsys):
  with MetricWriter(tmp_path, tensorboard=False, total_steps=25, print_every=10) as w:
    for step in range(1, 26):
      w.write(step, {"reward_mean": step / 100, "other": 1.0})
  out, err = capsys.readouterr()
  lines = out.splitlines()
  assert err == ""
  assert [line.split(" |")[0] for line in lines] == ["step 10/25 (40%)", "step 20/25 (80%)", "step 25/25 (100%)"]
  assert "reward_mean=0.1" in lines[0] and "other" not in lines[0]
  assert "ETA" in lines[0] and "step/s" in lines[0]
  assert "\r" not in out and "\x1b" not in out


class _Tty(io.StringIO):
  def isatty(self):
    return True


def test_terminal_gets_a_progress_line_redrawn_in_place(tmp_path, monkeypatch, capsys):
  tty = _Tty()
  monkeypatch.setattr("sys.stderr", tty)
  with MetricWriter(tmp_path, tensorboard=False, total_steps=3, print_every=1) as w:
    for step in (1, 2, 3):
      w.write(step, {"reward_mean": 0.5})
  text = tty.getvalue()
  assert text.count("\r") == 3 and text.endswith("\n")
  assert "step 3/3 (100%)" in text and "reward_mean=0.5" in text
  assert capsys.readouterr().out == ""  # nothing on stdout when the bar is shown


def test_tensorboard_scalars(tmp_path):
  with MetricWriter(tmp_path, progress=False) as w:
    w.write(1, {"reward_mean": 0.5, "mode": "ghpo", "hist": [1, 2], "bad": float("nan")})
    w.write(2, {"reward_mean": 0.75})
  scalars = _read_scalars(tmp_path / "tensorboard")
  assert set(scalars) == {"reward_mean", "bad"}
  assert scalars["reward_mean"] == [(1, 0.5), (2, 0.75)]
  assert scalars["bad"][0][0] == 1 and math.isnan(scalars["bad"][0][1])


def test_tensorboard_tags_are_legal_names(tmp_path, caplog):
  import logging
  from jaxghpo.logging_utils import tensorboard_tag
  assert tensorboard_tag("eval/hard/hint0/sampled/avg@4/level_4") == "eval/hard/hint0/sampled/avg_at_4/level_4"
  assert tensorboard_tag("a b:c") == "a_b_c"
  with caplog.at_level(logging.INFO):
    with MetricWriter(tmp_path, progress=False) as w:
      w.write(1, {"eval/hard/hint0/sampled/valid_pass@1": 0.5, "time/step_s": 1.0})
  scalars = _read_scalars(tmp_path / "tensorboard")
  assert set(scalars) == {"eval/hard/hint0/sampled/valid_pass_at_1", "time/step_s"}
  assert not [r for r in caplog.records if "is illegal" in r.getMessage()]  # TensorBoard renamed nothing


def test_progress_and_eta_follow_the_token_budget(tmp_path, capsys, monkeypatch):
  clock = iter(float(t) for t in range(100))
  monkeypatch.setattr("jaxghpo.logging_utils.time.perf_counter", lambda: next(clock))
  with MetricWriter(tmp_path, tensorboard=False, total_steps=400, print_every=10, token_budget=1000) as w:
    for step in range(1, 13):  # 100 tokens a step, one second a step: the budget ends the run at step 10
      w.write(step, {"gen_tokens_total": 100.0 * step})
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith("step 10/400 | tokens 1,000/1,000 (100%)") and "ETA 0s" in lines[0], lines
  assert "(2%)" not in lines[0]  # the step cap's percentage would mislead when the budget ends the run
  with MetricWriter(tmp_path, tensorboard=False, total_steps=400, print_every=5, token_budget=10_000) as w:
    for step in range(1, 6):
      w.write(step, {"gen_tokens_total": 100.0 * step})
  line = capsys.readouterr().out.splitlines()[0]
  assert "tokens 500/10,000 (5%)" in line and "ETA 1m35s" in line, line  # 9,500 tokens at 100 a second


def _read_scalars(logdir):
  """{tag: [(step, value)]} from the TFRecord event files in logdir (no tensorboard package needed)."""
  from tensorboardX.proto.event_pb2 import Event  # noqa: PLC0415
  out = {}
  for name in sorted(os.listdir(logdir)):
    data = (logdir / name).read_bytes()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = Event.FromString(data[pos + 12:pos + 12 + length])  # 8 length + 4 length crc
      pos += 12 + length + 4
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def test_bad_values_name_the_metric(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False, progress=False) as w:
    with pytest.raises(TypeError, match="'weird'"):
      w.write(1, {"weird": object()})
    with pytest.raises(ValueError, match="differs"):
      w.write(1, {"step": 2})


def test_deferred_metrics_are_one_step_late_and_never_fetch_the_newest(monkeypatch):
  fetched = []
  real_fetch = logging_utils.fetch_to_host

  def counting_fetch(metrics):
    fetched.append(metrics)
    return real_fetch(metrics)

  monkeypatch.setattr(logging_utils, "fetch_to_host", counting_fetch)
  deferred = DeferredMetrics()
  f = jax.jit(lambda x: {"loss": x * 2.0, "n": jnp.int32(7)})
  step_metrics = [f(jnp.float32(s)) for s in range(3)]

  assert deferred.push(0, step_metrics[0], {"time/step_s": 0.1}) is None
  assert fetched == []
  assert deferred.push(1, step_metrics[1]) == (0, {"loss": 0.0, "n": 7, "time/step_s": 0.1})
  assert fetched == [step_metrics[0]]  # only the previous step was fetched
  step, out = deferred.push(2, step_metrics[2], {"time/step_s": np.float64(0.3)})
  assert (step, out) == (1, {"loss": 2.0, "n": 7})
  assert all(f is not step_metrics[2] for f in fetched)
  assert isinstance(out["loss"], float) and isinstance(out["n"], int)
  # The held step is still a device array: nothing has turned it into host numbers.
  assert isinstance(deferred._pending[1]["loss"], jax.Array)
  assert deferred.flush() == (2, {"loss": 4.0, "n": 7, "time/step_s": 0.3})
  assert deferred.flush() is None
