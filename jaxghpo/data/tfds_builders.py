"""TFDS builders for the procedural tasks and for a user's files, written as array_record.

TensorFlow is never imported: TFDS writes array_record files and reads them back with
`builder.as_data_source(split)`, a random-access sequence of record dicts (text as bytes) that
`Example.from_record` turns back into Examples and grain shuffles and shards (data/pipeline.py).

Each builder config gets a name derived from its content (task, seed, sizes, levels, generator
version; or file names, file contents and field mapping), so different configs never share a
directory and a changed file is rebuilt rather than read stale:
  DATA_DIR/jaxghpo_task/<task>_s0_<hash>/1.0.0/jaxghpo_task-train.array_record-00000-of-00001

Build on one process (or on each host's local disk) before several processes read: TFDS writes
to a temporary directory and renames it, but two concurrent builds of one config may collide.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from typing import Any, Callable, Mapping, Sequence

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from jaxghpo.data import files
from jaxghpo.data.example import Example

FILE_FORMAT = "array_record"
GenerateFn = Callable[..., Sequence[Example]]  # generate(split, num_examples, seed, levels)


def _features() -> tfds.features.FeaturesDict:
  """The stored form of an Example (see Example.to_record)."""
  return tfds.features.FeaturesDict({
      "problem_id": np.int64,
      "problem": tfds.features.Text(),
      "steps": tfds.features.Sequence(tfds.features.Text()),
      "answer": tfds.features.Text(),
      "level": np.int32,
      "step_sep": tfds.features.Text(),
  })


def _digest(obj: Any, n: int = 12) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()[:n]


def _safe_name(text: str) -> str:
  """Lower-case [a-z0-9_] only: config names become directory names."""
  return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_") or "data"


class _CodePathFromFile:
  """Gives TFDS the builder's source file directly.

  TFDS 4.9.10 finds it through a resource lookup that needs the `importlib_resources` backport,
  which it does not declare for Python >= 3.9 (tensorflow/datasets#11212); our builders need
  no packaged resources, so the module file is all it has to know.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)


# ----------------------------------------------------------------------------------------------
# Procedural tasks.

@dataclasses.dataclass(eq=False)
class TaskConfig(tfds.core.BuilderConfig):
  """A procedural task: which task, seed, examples per split, levels per split.

  levels_by_split: split -> levels (a list, or level -> weight); a split without an entry is
    generated with the task's default levels for it.
  generate: the generator, generate(split=, num_examples=, seed=, levels=) -> list[Example];
    None looks `task` up in the jaxghpo.data.tasks registry. Not part of the name: a custom
    generator must come with its own task name.
  task_version: part of the name, so a changed generator is rebuilt (the task module's VERSION).
  """
  task: str = ""
  seed: int = 0
  sizes: Mapping[str, int] = dataclasses.field(default_factory=dict)
  levels_by_split: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  generate: GenerateFn | None = None
  task_version: str = ""


class JaxghpoTask(_CodePathFromFile, tfds.core.GeneratorBasedBuilder):
  """A procedural task (jaxghpo.data.tasks) stored as array_record; one config per content."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Example records: id, problem, steps, answer, level, step_sep."}

  def _info(self) -> tfds.core.DatasetInfo:
    # Generation order is kept: the pipeline shuffles, and a source order equal to the
    # generator's makes the build checkable example by example.
    return self.dataset_info_from_configs(features=_features(), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split, n) for split, n in self.builder_config.sizes.items()}

  def _generate_examples(self, split: str, num_examples: int):
    cfg = self.builder_config
    generate = cfg.generate or _registry_generate(cfg.task)
    kwargs = {}
    if split in cfg.levels_by_split:
      kwargs["levels"] = cfg.levels_by_split[split]
    examples = generate(split=split, num_examples=num_examples, seed=cfg.seed, **kwargs)
    for i, example in enumerate(examples):
      yield i, example.to_record()


def _registry_generate(task: str) -> GenerateFn:
  from jaxghpo.data import tasks  # pylint: disable=g-import-not-at-top
  return tasks.get_task(task).generate


Levels = Sequence[int] | Mapping[int, float]  # levels, or level -> weight (tasks' generate)


def _levels_value(levels: Levels) -> list[int] | dict[int, float]:
  if isinstance(levels, Mapping):
    return {int(lv): float(w) for lv, w in levels.items()}
  return [int(lv) for lv in levels]


def _levels_by_split(sizes: Mapping[str, int],
                     levels: Levels | Mapping[str, Levels] | None) -> dict[str, Any]:
  """split -> levels for generate(); `levels` is one value for every split, or keyed by split."""
  if levels is None:
    return {}
  if isinstance(levels, Mapping) and levels and all(isinstance(k, str) for k in levels):
    unknown = sorted(set(levels) - set(sizes))
    if unknown:
      raise ValueError(f"levels names splits {unknown} that sizes does not build; sizes has "
                       f"{sorted(sizes)}.")
    return {split: _levels_value(lv) for split, lv in levels.items()}
  return {split: _levels_value(levels) for split in sizes}


def task_builder(task: str, *, seed: int, sizes: Mapping[str, int],
                 levels: Levels | Mapping[str, Levels] | None = None,
                 data_dir: str | os.PathLike | None = None,
                 generate: GenerateFn | None = None) -> JaxghpoTask:
  """The builder of a procedural task (not yet prepared: call `prepare`).

  Args:
    task: registry name (jaxghpo.data.tasks.get_task), or the name of `generate`.
    seed: generator seed.
    sizes: split name -> number of examples, e.g. {"train": 2000, "test": 200, "ood": 200}.
    levels: the levels of every split (a list, or level -> weight), or split -> such a value;
      None (or a split left out) lets the task choose its default levels for that split.
    data_dir: where TFDS writes (default: $TFDS_DATA_DIR or ~/tensorflow_datasets); pass a
      directory under the workdir to keep runs self-contained.
    generate: a generator to use instead of the registry's.
  """
  if not sizes:
    raise ValueError("sizes is empty: give split -> number of examples, e.g. {'train': 1000}.")
  for split, n in sizes.items():
    if int(n) <= 0:
      raise ValueError(f"sizes[{split!r}] = {n}: every split needs at least one example.")
  sizes = {str(s): int(n) for s, n in sizes.items()}
  levels_by_split = _levels_by_split(sizes, levels)
  if generate is None:
    from jaxghpo.data import tasks  # pylint: disable=g-import-not-at-top
    task_obj = tasks.get_task(task)
    task_version = str(getattr(task_obj, "VERSION", ""))
    generate = task_obj.generate
  else:
    task_version = str(getattr(generate, "VERSION", ""))
  content = {"task": task, "seed": int(seed), "sizes": sizes, "levels": levels_by_split,
             "task_version": task_version}
  config = TaskConfig(
      name=f"{_safe_name(task)}_s{int(seed)}_{_digest(content)}",
      description=f"task={task} seed={seed} sizes={sizes} levels={levels_by_split}",
      task=task, seed=int(seed), sizes=sizes, levels_by_split=levels_by_split,
      generate=generate, task_version=task_version)
  return JaxghpoTask(config=config, data_dir=_data_dir(data_dir), file_format=FILE_FORMAT)


# ----------------------------------------------------------------------------------------------
# A user's files.

@dataclasses.dataclass(eq=False)
class FilesConfig(tfds.core.BuilderConfig):
  """A user's JSONL/Parquet files: split -> paths, and the options of files.load_file."""
  paths: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)
  fields: Mapping[str, str] | None = None
  on_bad_row: str = "error"
  answer_from_boxed: bool = True
  dataset_name: str | None = None


class JaxghpoFiles(_CodePathFromFile, tfds.core.GeneratorBasedBuilder):
  """MATH-style JSONL/Parquet files (data/files.py) stored as array_record.

  The load reports (rows read, loaded, skipped by reason) are kept in the dataset's metadata
  (`builder.info.metadata["load_reports"]`, and "duplicates_across_files": split -> problems
  already given by an earlier file of the split), so a skipped row stays visible after the build.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Example records: id, problem, steps, answer, level, step_sep."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(features=_features(), disable_shuffling=True,
                                          metadata=tfds.core.MetadataDict())

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split, paths)
            for split, paths in self.builder_config.paths.items()}

  def _generate_examples(self, split: str, paths: Sequence[str]):
    cfg = self.builder_config
    reports = self.info.metadata.setdefault("load_reports", {})
    seen = set()
    key = 0  # a running key keeps file order (with shuffling disabled TFDS stores by key)
    for path in paths:
      examples, report = files.load_file(path, fields=cfg.fields, on_bad_row=cfg.on_bad_row,
                                         answer_from_boxed=cfg.answer_from_boxed,
                                         dataset_name=cfg.dataset_name)
      reports.setdefault(split, []).append(report.to_json())
      for example in examples:
        # TFDS keys must be unique within a split; the same problem in two files is kept once.
        if example.problem_id in seen:
          dups = self.info.metadata.setdefault("duplicates_across_files", {})
          dups[split] = dups.get(split, 0) + 1
          continue
        seen.add(example.problem_id)
        yield key, example.to_record()
        key += 1


def _file_digest(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()[:16]


def files_builder(paths: Mapping[str, str | os.PathLike | Sequence[str | os.PathLike]], *,
                  fields: Mapping[str, str] | Any | None = None, on_bad_row: str = "error",
                  answer_from_boxed: bool = True, dataset_name: str | None = None,
                  data_dir: str | os.PathLike | None = None) -> JaxghpoFiles:
  """The builder of a user's files (not yet prepared: call `prepare`).

  Args:
    paths: split name -> a file or a list of files, e.g. {"train": "math_train.jsonl"}.
    fields, on_bad_row, answer_from_boxed, dataset_name: as files.load_file.
    data_dir: where TFDS writes (default: $TFDS_DATA_DIR or ~/tensorflow_datasets).

  The config name holds a digest of the files' names and contents and of the options: the same
  files anywhere on disk share one build, an edited file gets a new one.
  """
  if not paths:
    raise ValueError("paths is empty: give split -> file(s), e.g. {'train': 'math_train.jsonl'}.")
  by_split: dict[str, list[str]] = {}
  for split, value in paths.items():
    value = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    if not value:
      raise ValueError(f"paths[{split!r}] has no files.")
    for p in value:
      if not os.path.isfile(p):
        raise ValueError(f"paths[{split!r}]: {os.fspath(p)!r} is not a file.")
    by_split[str(split)] = [os.path.abspath(os.fspath(p)) for p in value]
  field_map = None if fields is None else {str(k): str(v) for k, v in fields.items()}
  content = {
      "files": {s: [(os.path.basename(p), _file_digest(p)) for p in ps] for s, ps in by_split.items()},
      "fields": field_map, "on_bad_row": on_bad_row, "answer_from_boxed": bool(answer_from_boxed),
      "dataset_name": dataset_name,
  }
  first = os.path.basename(next(iter(by_split.values()))[0]).split(".", 1)[0]
  config = FilesConfig(
      name=f"{_safe_name(dataset_name or first)}_{_digest(content)}",
      description=f"files={ {s: [os.path.basename(p) for p in ps] for s, ps in by_split.items()} }",
      paths=by_split, fields=field_map, on_bad_row=on_bad_row,
      answer_from_boxed=bool(answer_from_boxed), dataset_name=dataset_name)
  return JaxghpoFiles(config=config, data_dir=_data_dir(data_dir), file_format=FILE_FORMAT)


# ----------------------------------------------------------------------------------------------
# Build and read.

def _data_dir(data_dir: str | os.PathLike | None) -> str | None:
  return None if data_dir is None else os.fspath(data_dir)


def prepare(builder: tfds.core.DatasetBuilder, *,
            progress: bool | None = None) -> tfds.core.DatasetBuilder:
  """Builds the dataset if its directory does not hold it yet; returns the builder.

  progress: show TFDS's progress bars; None shows them only when stderr is a terminal (logs of
  unattended runs stay clean).
  """
  if progress is None:
    progress = sys.stderr.isatty()
  tqdm_utils = tfds.core.utils.tqdm_utils
  was_active = getattr(tqdm_utils, "_active", True)  # TFDS has a setter but no getter
  tfds.display_progress_bar(progress)
  try:
    builder.download_and_prepare()
  finally:
    tfds.display_progress_bar(was_active)
  return builder


def data_source(builder_or_dir: tfds.core.DatasetBuilder | str | os.PathLike, split: str):
  """A random-access source of record dicts for one split (len() and [i]).

  Give a prepared builder, or the directory of a built dataset (builder.data_dir): a reader
  process needs neither the generator nor the original files.
  """
  if isinstance(builder_or_dir, (str, os.PathLike)):
    builder = tfds.builder_from_directory(os.fspath(builder_or_dir))
  else:
    builder = builder_or_dir
  if split not in builder.info.splits:
    raise ValueError(f"split {split!r} is not in the dataset at {builder.data_dir}; it has "
                     f"{sorted(builder.info.splits)}.")
  return builder.as_data_source(split=split)


def read_examples(builder_or_dir, split: str) -> list[Example]:
  """Every Example of a split, in stored order (for evaluation and checks; training uses grain)."""
  source = data_source(builder_or_dir, split)
  return [Example.from_record(source[i]) for i in range(len(source))]
