"""The run-file path layer on local paths and on gs:// (an in-memory object store, tests/fake_gcs.py):
the helpers, the metrics writer with its TensorBoard events and resume, and a whole tiny run whose
workdir is gs://... (every file but the checkpoints, which orbax writes, lands in the store)."""
import json
import os

import pytest

from jaxghpo import logging_utils, paths
from tests.fake_gcs import ObjectStoreError, fake_gcs, read_bytes


@pytest.fixture
def gcs():
  with fake_gcs() as fs:
    yield fs


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path):
  if request.param == "local":
    yield str(tmp_path / "run")
  else:
    with fake_gcs():
      yield "gs://bucket/run"


def test_is_remote():
  assert paths.is_remote("gs://b/x") and paths.is_remote("s3://b/x")
  assert not paths.is_remote("/tmp/x") and not paths.is_remote("runs/x") and not paths.is_remote("file:///tmp/x")


def test_write_read_list_on_both(root):
  f = paths.join(root, "eval", "a.jsonl")
  assert f == (root + "/eval/a.jsonl")
  paths.write_text(f, "one\n")
  paths.write_text(f, "two\n")  # replaced whole
  assert paths.read_text(f) == "two\n"
  assert paths.exists(f) and paths.isdir(paths.join(root, "eval"))
  assert paths.listdir(paths.join(root, "eval")) == ["a.jsonl"]
  with paths.local_dir(paths.join(root, "export")) as d:
    with open(os.path.join(d, "config.json"), "w") as out:
      out.write("{}")
    os.makedirs(os.path.join(d, "sub"))
    with open(os.path.join(d, "sub", "x.bin"), "wb") as out:
      out.write(b"\x00\x01")
  assert paths.read_text(paths.join(root, "export", "config.json")) == "{}"
  with paths.open_file(paths.join(root, "export", "sub", "x.bin"), "rb") as got:
    assert got.read() == b"\x00\x01"
  with paths.local_file(paths.join(root, "curves.png")) as name:
    with open(name, "wb") as out:
      out.write(b"png")
  with paths.open_file(paths.join(root, "curves.png"), "rb") as got:
    assert got.read() == b"png"


def test_appends_are_refused_with_the_mend(root):
  with pytest.raises(ValueError, match="write it whole"):
    paths.open_file(paths.join(root, "metrics.jsonl"), "a")


def test_the_fake_store_refuses_appends(gcs):
  from etils import epath
  with pytest.raises(ObjectStoreError):
    epath.Path("gs://bucket/x").open("a")


def test_metric_writer_and_resume_on_gcs(gcs):
  workdir = "gs://bucket/run"
  with logging_utils.MetricWriter(workdir, progress=False) as w:
    for step in range(4):
      w.write(step, {"reward_mean": step / 4})
  assert [r["step"] for r in logging_utils.read_metrics(workdir)] == [0, 1, 2, 3]
  # A run resumed from step 1 drops the later rows and continues the file.
  with logging_utils.MetricWriter(workdir, progress=False, resume_step=1) as w:
    w.write(2, {"reward_mean": 0.9})
  rows = logging_utils.read_metrics(workdir)
  assert [(r["step"], r["reward_mean"]) for r in rows] == [(0, 0.0), (1, 0.25), (2, 0.9)]
  events = [p for p in gcs.store if p.startswith("gs://bucket/run/tensorboard/")]
  assert len(events) == 2  # one event file per writer
  tags = _scalar_tags(b"".join(read_bytes(gcs, p) for p in events))
  assert tags.count("reward_mean") == 5


def _scalar_tags(data: bytes) -> list[str]:
  import struct

  from tensorboardX.proto.event_pb2 import Event
  tags, pos = [], 0
  while pos < len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    event = Event.FromString(data[pos + 12:pos + 12 + length])
    pos += 12 + length + 4
    tags += [v.tag for v in event.summary.value]
  return tags


def test_data_report_goes_to_the_store_not_to_a_local_gs_directory(gcs, tmp_path, monkeypatch):
  from jaxghpo import experiment
  from jaxghpo.data.example import Example
  monkeypatch.chdir(tmp_path)
  problems = experiment.Problems(train=[Example(problem_id=1, problem="a+1=", steps=("a+1=b",), answer="b")], eval_sets={},
                                 extract_answer=None)
  report = experiment.write_data_report(problems, "gs://bucket/run")
  assert json.loads(read_bytes(gcs, "gs://bucket/run/data_report.json")) == report
  assert not os.path.exists(tmp_path / "gs:"), sorted(os.listdir(tmp_path))


def test_a_run_with_a_gcs_workdir(gcs, tmp_path, monkeypatch):
  """train.run on gs://bucket/run: metrics, events, config, eval rows, summary, curves and the export
  are objects in the store; the export loads back. Checkpoints go to a local directory here: orbax writes
  gs:// through tensorstore's own GCS driver, which no fake reaches."""
  from jaxghpo import checkpoint, hooks, models, train
  from tests.train_fixtures import make_tiny_policy, tiny_config

  monkeypatch.chdir(tmp_path)  # a gs:// path written with os/open would land in ./gs:/bucket/run
  local_ckpt = str(tmp_path / "checkpoints")
  monkeypatch.setattr(hooks, "Checkpointer", lambda directory, **kw: checkpoint.Checkpointer(local_ckpt, **kw))
  config = tiny_config(make_tiny_policy(str(tmp_path / "policy")), num_steps=2, checkpoint_every_steps=2)
  workdir = "gs://bucket/run"
  summary = train.run(config, workdir)
  assert summary["report"]
  names = {p[len(workdir) + 1:] for p in gcs.store}
  assert not os.path.exists(tmp_path / "gs:"), "a file of the gs:// workdir was written on local disk"
  for name in ("metrics.jsonl", "config.json", "data_report.json", "summary.md", "summary.json", "curves.png",
               "export/config.json", "export/model.safetensors", "export/tokenizer.json"):
    assert name in names, (name, sorted(names))
  assert any(n.startswith("tensorboard/events.out.tfevents") for n in names)
  assert any(n.startswith("eval/") and n.endswith(".jsonl") for n in names)
  assert [r["step"] for r in logging_utils.read_metrics(workdir)] == [0, 1, 2]
  assert json.loads(paths.read_text(paths.join(workdir, "config.json")))["num_steps"] == 2
  assert read_bytes(gcs, workdir + "/curves.png")[:4] == b"\x89PNG"
  local = str(tmp_path / "export")
  for name in names:
    if name.startswith("export/"):
      os.makedirs(os.path.dirname(os.path.join(local, name)), exist_ok=True)
      with open(os.path.join(local, name), "wb") as f:
        f.write(read_bytes(gcs, workdir + "/" + name))
  model, _ = models.from_pretrained(os.path.join(local, "export"))
  assert model is not None
