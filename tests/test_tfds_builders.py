"""TFDS builders (jaxghpo/data/tfds_builders.py): array_record written and read back without TF."""
import json
import os
import sys

import pytest

from jaxghpo.data import files
from jaxghpo.data import tfds_builders
from jaxghpo.data.example import Example, stable_id
from jaxghpo.data.tasks import chains

SIZES = {"train": 300, "test": 40, "ood": 30}


def toy_generate(split, num_examples, seed, levels=(1, 2, 3)):
  """A small local generator with the tasks' signature (counts its calls)."""
  toy_generate.calls += 1
  return [Example(problem_id=stable_id("toy", split, str(seed), str(i)),
                  problem=f"{split} #{i} seed {seed} ünïcode",
                  steps=tuple(f"step {j} of {i}" for j in range(levels[i % len(levels)])),
                  answer=str(i * seed), level=levels[i % len(levels)], step_sep=";")
          for i in range(num_examples)]


toy_generate.calls = 0


def test_chains_task_builds_and_reads_back_identically_without_tensorflow(tmp_path):
  builder = tfds_builders.prepare(tfds_builders.task_builder(
      "chains", seed=7, sizes=SIZES, levels={"train": [1, 2, 3, 4], "test": [1, 2, 3, 4]},
      data_dir=tmp_path))
  assert sorted(builder.info.splits) == ["ood", "test", "train"]
  assert os.path.basename(os.path.dirname(builder.data_dir)).startswith("chains_s7_")
  for split, n in SIZES.items():
    levels = None if split == "ood" else [1, 2, 3, 4]
    assert tfds_builders.read_examples(builder, split) == chains.generate(split, n, 7, levels)
  ood = tfds_builders.read_examples(builder, "ood")
  assert {e.level for e in ood} == set(chains.DEFAULT_LEVELS["ood"])  # the task's default applied
  assert "tensorflow" not in sys.modules


def test_config_content_names_the_build(tmp_path):
  def builder(**kw):
    args = dict(seed=1, sizes={"train": 50}, levels=[1, 2], data_dir=tmp_path, generate=toy_generate)
    args.update(kw)
    return tfds_builders.task_builder("toy", **args)

  first = tfds_builders.prepare(builder())
  calls = toy_generate.calls
  again = tfds_builders.prepare(builder())  # same config: the stored build is reused
  assert again.data_dir == first.data_dir and toy_generate.calls == calls
  dirs = {first.data_dir}
  for change in (dict(seed=2), dict(sizes={"train": 51}), dict(levels=[1, 3]), dict(levels={1: 1.0, 2: 3.0})):
    dirs.add(builder(**change).data_dir)
  assert len(dirs) == 5
  assert tfds_builders.read_examples(first, "train") == toy_generate("train", 50, 1, [1, 2])
  # A reader needs neither the generator nor the config: the directory is enough.
  assert tfds_builders.read_examples(first.data_dir, "train") == toy_generate("train", 50, 1, [1, 2])
  with pytest.raises(ValueError, match=r"split 'test' is not in the dataset .* \['train'\]"):
    tfds_builders.data_source(first, "test")
  with pytest.raises(ValueError, match="levels names splits \\['ood'\\]"):
    builder(levels={"ood": [9]})


def write_rows(path, rows, extra=b""):
  with open(path, "wb") as f:
    for row in rows:
      f.write(json.dumps(row).encode() + b"\n")
    f.write(extra)
  return str(path)


MATH_ROWS = [{"problem": f"Compute ${i}^2$.", "solution": f"Square it.\nSo $\\boxed{{{i * i}}}$.",
              "level": f"Level {1 + i % 5}"} for i in range(60)]


def test_jsonl_file_builds_and_reads_back_identically(tmp_path):
  train = write_rows(tmp_path / "math_train.jsonl", MATH_ROWS[:50], extra=b'{"problem": "bad"\n')
  test = write_rows(tmp_path / "math_test.jsonl", MATH_ROWS[50:])
  builder = tfds_builders.prepare(tfds_builders.files_builder(
      {"train": train, "test": [test, train]}, on_bad_row="skip", dataset_name="math",
      data_dir=tmp_path / "tfds"))
  expected_train, report = files.load_file(train, on_bad_row="skip", dataset_name="math")
  assert report.skipped == {"invalid_json": 1}
  assert tfds_builders.read_examples(builder, "train") == expected_train
  assert tfds_builders.read_examples(builder, "test") == (
      files.load_file(test, dataset_name="math")[0] + expected_train)
  # Skipped rows stay visible in the stored dataset's metadata.
  reread = tfds_builders.data_source(builder.data_dir, "train")
  assert len(reread) == 50
  meta = builder.info.metadata
  assert meta["load_reports"]["train"][0]["skipped"] == {"invalid_json": 1}
  assert meta["load_reports"]["train"][0]["rows_read"] == 51
  assert "duplicates_across_files" not in meta
  assert "tensorflow" not in sys.modules


def test_file_builds_follow_file_content_and_count_cross_file_duplicates(tmp_path):
  a = write_rows(tmp_path / "a.jsonl", MATH_ROWS[:10])
  b = write_rows(tmp_path / "b.jsonl", MATH_ROWS[5:15])
  before = tfds_builders.files_builder({"train": [a, b]}, dataset_name="m", data_dir=tmp_path / "t")
  tfds_builders.prepare(before)
  assert [e.problem for e in tfds_builders.read_examples(before, "train")] == [
      r["problem"] for r in MATH_ROWS[:15]]
  assert before.info.metadata["duplicates_across_files"] == {"train": 5}
  write_rows(tmp_path / "b.jsonl", MATH_ROWS[5:16])  # edited file: a new build, not a stale one
  after = tfds_builders.files_builder({"train": [a, b]}, dataset_name="m", data_dir=tmp_path / "t")
  assert after.data_dir != before.data_dir
  assert len(tfds_builders.read_examples(tfds_builders.prepare(after), "train")) == 16
  with pytest.raises(ValueError, match=r"paths\['train'\]: .*missing.jsonl' is not a file"):
    tfds_builders.files_builder({"train": tmp_path / "missing.jsonl"})
