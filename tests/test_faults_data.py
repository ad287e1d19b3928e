"""Bad input data at start: every prompt measured, a load report written, a content fingerprint on resume."""
import json
import os

import numpy as np
import pytest

from jaxghpo import curriculum, experiment
from jaxghpo.rollout import groups
from jaxghpo.data import pipeline
from jaxghpo.data import tokenizer as tok_lib
from jaxghpo.data.example import Example

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tok():
  return tok_lib.load(tok_lib.task_tokenizer_path())


def default_config():
  import importlib.util
  spec = importlib.util.spec_from_file_location("cfg_default", os.path.join(ROOT, "configs", "default.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def write_rows(path, rows):
  with open(path, "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")
  return str(path)


def row(i, steps, answer=None):
  return {"problem": f"a+{i}=", "solution": "\n".join(steps), "answer": answer or f"x{i}"}


def files_config(paths, max_prompt_len=64, on_bad_row="error"):
  c = default_config()
  c.data.source = "files"
  c.data.files = tuple(paths)
  c.data.on_bad_row = on_bad_row
  c.eval.files = ()
  c.rollout.max_prompt_len = max_prompt_len
  c.curriculum.mode = "ghpo"  # ladder up to 0.75
  return c


def tricky_file(tmp_path):
  """70 rows long by characters whose length is all in the last step (never in a hint), and at line 71
  a shorter row whose first steps (the hint) overflow 64 tokens: a check of the longest rows by
  characters passes, sampling at hint 0.75 would fail."""
  rows = [row(i, ["a=b", "c" * 300]) for i in range(70)]
  rows.append(row(70, ["d" * 30, "e" * 30, "f" * 30, "g"]))
  rows += [row(100 + i, ["h=1", "j=2"]) for i in range(5)]
  return write_rows(tmp_path / "tricky.jsonl", rows)


def test_every_row_is_measured_and_the_error_names_file_line_and_tokens(tmp_path, tok):
  path = tricky_file(tmp_path)
  config = files_config([path])
  problems = experiment.load_problems(config)
  with pytest.raises(ValueError, match=r"max_prompt_len=64 is too short: 1 of 76 rows .*tricky\.jsonl:line 71 "
                                       r"needs \d+ tokens.*on_bad_row='skip'"):
    experiment.check_prompt_room(config, problems, tok)


def test_skip_drops_and_counts_them_and_nothing_kept_fails_at_sampling(tmp_path, tok):
  path = tricky_file(tmp_path)
  config = files_config([path], on_bad_row="skip")
  problems = experiment.load_problems(config)
  experiment.check_prompt_room(config, problems, tok)
  assert len(problems.train) == 75
  report = problems.load_report[0]
  assert report.skipped == {"prompt_too_long": 1} and report.skipped_lines == {"prompt_too_long": [71]}
  assert report.rows_read == report.loaded + sum(report.skipped.values())
  # Every kept row renders at every ratio the scheduler can ask for without the sampler's error.
  top = curriculum.highest_ratio(config.curriculum)
  for ratio in sorted({0.0, top, *map(float, config.curriculum.ladder)}):
    texts = groups.hint_texts(problems.train, np.full(len(problems.train), ratio), unit=config.hints.unit,
                              corruption="none", tokenizer=tok, rng=np.random.default_rng(0))
    groups.render(problems.train, texts, placement=config.hints.placement, style=config.data.style,
                  tokenizer=tok, max_prompt_len=64)


def test_data_report_names_skips_duplicates_and_conflicting_answers(tmp_path, tok):
  a = write_rows(tmp_path / "a.jsonl", [row(1, ["a=1", "b=2"]), row(2, ["a=1", "b=2"]),
                                          row(1, ["a=1", "b=2"], answer="other")])   # conflict in the file
  b = tmp_path / "b.jsonl"
  write_rows(b, [row(2, ["a=1", "b=2"], answer="x9"), row(3, ["a=1", "b=2"])])   # conflict across files
  with open(b, "a") as f:
    f.write("{not json\n")
  config = files_config([a, str(b)], on_bad_row="skip")
  problems = experiment.load_problems(config)
  experiment.check_prompt_room(config, problems, tok)
  report = experiment.write_data_report(problems, str(tmp_path / "run"))
  with open(tmp_path / "run" / "data_report.json") as f:
    on_disk = json.load(f)
  assert on_disk == json.loads(json.dumps(report))
  fa, fb = on_disk["train"]
  assert (fa["rows_read"], fa["kept"], fa["skipped"], fa["conflicting_duplicates"]) == (3, 2, {"duplicate": 1}, 1)
  assert fa["conflicts"] == [{"line": 3, "kept_line": 1, "answer": "other", "kept_answer": "x1"}]
  assert (fb["rows_read"], fb["kept"]) == (3, 1)
  assert fb["skipped"] == {"duplicate": 1, "invalid_json": 1} and fb["skipped_lines"]["invalid_json"] == [3]
  assert fb["conflicts"] == [{"line": 1, "kept_line": f"{a}:2", "answer": "x9", "kept_answer": "x2"}]
  assert on_disk["train_totals"]["kept"] == len(problems.train) == 3
  assert on_disk["content_fingerprint"] == f"{pipeline.content_fingerprint(problems.train):016x}"


def test_a_file_with_no_kept_row_is_named(tmp_path):
  good = write_rows(tmp_path / "good.jsonl", [row(1, ["a=1", "b=2"])])
  bad = tmp_path / "allbad.jsonl"
  bad.write_text("{oops\n[1]\n")
  with pytest.raises(ValueError, match=r"allbad\.jsonl: 2 rows read, 0 kept.*no row of this file was kept"):
    experiment.load_problems(files_config([good, str(bad)], on_bad_row="skip"))


def test_task_rows_are_named_by_task_and_row(tok):
  config = default_config()
  config.data.task_configs.chains.num_train = 100
  config.rollout.max_prompt_len = 16
  problems = experiment.load_problems(config)
  with pytest.raises(ValueError, match=r"max_prompt_len=16 is too short: .*task:chains/train:row \d+ needs"):
    experiment.check_prompt_room(config, problems, tok)


def same_length_other_rows(n):
  return [Example(problem_id=i, problem=f"q{i}", steps=("s",), answer=str(i + 1)) for i in range(n)]


def test_resume_with_other_data_of_the_same_length_is_refused():
  data = same_length_other_rows(20)
  other = data[:-1] + [Example(problem_id=19, problem="q19", steps=("s",), answer="changed")]
  kw = dict(batch_size_per_process=4, seed=0, process_index=0, process_count=1, prefetch=0)
  p = pipeline.make_pipeline(data, **kw)
  next(p)
  state = p.get_state()
  pipeline.make_pipeline(data, state=state, **kw)  # the same rows resume
  with pytest.raises(ValueError, match=r"training data changed since this position was saved.*20 rows\).*"
                                       r"20 rows\).*start a fresh workdir"):
    pipeline.make_pipeline(other, state=state, **kw)
  old_state = {k: v for k, v in state.items() if k != "content_fingerprint"}  # saved before fingerprints
  pipeline.make_pipeline(other, state=old_state, **kw)


class CountingTokenizer:
  """The tokenizer, with a record of the characters of every text it was asked to encode, call by call."""

  def __init__(self, tok):
    self._tok, self.calls = tok, []

  def __call__(self, texts, *args, **kwargs):
    self.calls.append([len(t) for t in ([texts] if isinstance(texts, str) else texts)])
    return self._tok(texts, *args, **kwargs)

  def encode(self, text, *args, **kwargs):
    self.calls.append([len(text)])
    return self._tok.encode(text, *args, **kwargs)

  def __getattr__(self, name):
    return getattr(self._tok, name)


def test_prompt_room_of_20k_task_rows_is_batched(tok):
  """All 20k rows of the default run are measured in a few batched tokenizer calls (not one per row)."""
  from jaxghpo.data import prompt_room
  config = default_config()
  problems = experiment.load_problems(config)
  counting = CountingTokenizer(tok)
  experiment.check_prompt_room(config, problems, counting)
  assert len(problems.train) == int(config.data.task_configs.chains.num_train)
  rows = len(problems.train) + sum(len(v) for v in problems.eval_sets.values())
  assert sum(len(c) for c in counting.calls) >= len(problems.train)  # every row was measured
  assert len(counting.calls) <= 2 * (rows // prompt_room.BATCH_ROWS + 1) * 2 + 16, len(counting.calls)


@pytest.mark.parametrize("key, value, message", [
    ("checkpoint_every_steps", 0, "checkpoint_every_steps=0: must be >= 1"),
    ("rl.micro_batches", 0, "rl.micro_batches=0: must be >= 1"),
    ("rollout.temperature", 0.0, "rollout.temperature=0.0: RL needs sampling: at temperature 0 the G responses"),
    ("rollout.temperature", -0.5, "rollout.temperature=-0.5: must be >= 0"),
    ("rollout.top_p", 0.0, r"rollout.top_p=0.0: must be in \(0, 1\]"),
    ("rollout.top_p", 1.5, r"rollout.top_p=1.5: must be in \(0, 1\]"),
    ("rollout.top_k", -1, "rollout.top_k=-1: must be >= 0"),
    ("model.path", "", "model.path='': is empty"),
    ("eval.num_samples", 99, "eval.num_samples=99: must be <= config.rollout.group_size=8"),
    ("keep_checkpoints", 0, "keep_checkpoints=0: must be >= 1"),
    ("data.on_bad_row", "ignore", "data.on_bad_row='ignore': must be 'error' or 'skip'"),
    ("max_skipped_updates_in_a_row", -1, "max_skipped_updates_in_a_row=-1: must be >= 0"),
    ("rl.learning_rate", float("nan"), "rl.learning_rate=nan: must be a finite number"),
])
def test_values_that_would_fail_later_are_refused_at_start(key, value, message):
  config = default_config()
  experiment.validate(config, 8, 1)
  section, _, name = key.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises(ValueError, match=message):
    experiment.validate(config, 8, 1)


def test_greedy_sampling_is_fine_outside_rl():
  config = default_config()
  config.mode = "sft"
  config.rollout.temperature = 0.0
  experiment.validate(config, 8, 1)


def test_a_10mb_row_is_named_without_encoding_it(tmp_path, tok):
  rows = [row(i, ["a=1", "b=2"]) for i in range(3)] + [{"problem": "q" * 10_000_000, "solution": "a=1\nb=2",
                                                        "answer": "x"}]
  config = files_config([write_rows(tmp_path / "big.jsonl", rows)])
  problems = experiment.load_problems(config)
  counting = CountingTokenizer(tok)
  with pytest.raises(ValueError, match=r"big\.jsonl:line 4 needs at least \d+ tokens"):
    experiment.check_prompt_room(config, problems, counting)
  longest = max((n for call in counting.calls for n in call), default=0)
  assert longest < 10_000, longest  # the 10 MB row was never encoded (encoding it took 84 s)


def test_a_damaged_parquet_file_is_named(tmp_path):
  from jaxghpo.data import files
  path = tmp_path / "broken.parquet"
  path.write_bytes(b"PAR1" + b"\x00garbage" * 50)
  with pytest.raises(ValueError, match=r"broken\.parquet: cannot be read as Parquet \(.*re-export the file"):
    files.load_file(path)
  with pytest.raises(FileNotFoundError, match=r"nowhere\.parquet: no such file"):
    files.load_file(tmp_path / "nowhere.parquet")
