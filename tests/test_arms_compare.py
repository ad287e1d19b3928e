"""The arms' comparison on a gs:// workdir: every file it reads and writes goes through paths.py."""
import json
import os

import pytest

from jaxghpo import paths
from jaxghpo.experiments.chains import arms
from jaxghpo.experiments.chains import compare as report
from tests.fake_gcs import fake_gcs, read_bytes


def test_compare_reads_and_writes_a_gcs_workdir(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # a local write of a gs:// path would land under ./gs:
  with fake_gcs() as gcs:
    workdir = "gs://bucket/run"
    runs = {arm: paths.join(workdir, arm) for arm in ("ghpo", "grpo")}
    for arm, d in runs.items():
      paths.write_text(paths.join(d, report.SUMMARY_JSON), json.dumps({"steps": 3, "gen_tokens": 1000}))
      paths.write_text(paths.join(d, "metrics.jsonl"),
                       "".join(json.dumps({"step": s, "gen_tokens_total": 100 * s}) + "\n" for s in range(4)))
    out = arms.on_process_zero("compare", lambda: report.compare(workdir, runs, labels=arms.ARM_LABELS))
    assert out["arms"] == ["ghpo", "grpo"]
    names = {p[len(workdir) + 1:] for p in gcs.store}
    assert {report.COMPARISON_MD, report.COMPARISON_JSON, report.COMPARISON_PNG} <= names, sorted(names)
    assert "| GHPO 0.25/0.5/0.75 | 3 |" in read_bytes(gcs, f"{workdir}/{report.COMPARISON_MD}").decode()
    assert read_bytes(gcs, f"{workdir}/{report.COMPARISON_PNG}")[:4] == b"\x89PNG"
  assert not os.path.exists(tmp_path / "gs:"), "a gs:// path was written to the local disk"


def test_on_process_zero_runs_the_function_and_raises_its_error():
  assert arms.on_process_zero("x", lambda: 7) == 7
  with pytest.raises(ZeroDivisionError):
    arms.on_process_zero("x", lambda: 1 / 0)
