"""File datasets: MATH-style rows from JSONL or Parquet files, as `Example`s.

A row carries `problem`, `solution` and usually `answer`; optionally `solution_hint` (GHPO's Math3to5
field: the trace hints are cut from, kept as the Example's steps) and `level` (MATH writes "Level 3").
Column names are configurable through `fields` (our name -> the file's name).

Nothing silently disappears: every row read is either loaded or counted under a reason in the
`LoadReport` (with on_bad_row="skip"), or stops the load with an error naming the file, the 1-based
line (row for Parquet), the fault and how to mend it (with on_bad_row="error").
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Iterator, Mapping

from jaxghpo.data.example import Example, stable_id

FIELD_NAMES = ("problem", "solution", "answer", "solution_hint", "level")
REQUIRED_FIELDS = ("problem", "solution")
STEP_SEP = "\n"
_MAX_LINES_KEPT = 10  # line numbers kept per skip reason in the report
_MAX_CONFLICTS_KEPT = 50  # duplicates with conflicting answers named in the report (all are counted)


class BadRow(ValueError):
  """A row that cannot become an Example; `reason` is the LoadReport key it is counted under."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


@dataclasses.dataclass
class LoadReport:
  """What happened to every row of one file.

  rows_read == loaded + sum(skipped.values()) always holds (blank JSONL lines are not rows).
  skipped: reason -> count; reasons are invalid_utf8, invalid_json, not_an_object, missing_field,
    null_field, wrong_type, empty_problem, empty_solution, no_answer, duplicate (here), and
    prompt_too_long (experiment.check_prompt_room, after the load).
  skipped_lines: reason -> the first few 1-based line (or row) numbers, to find them in the file.
  level_unknown: loaded rows whose level was absent or unparseable (kept, with level -1).
  conflicts: duplicates whose answer differs from the kept row's (the first few, all counted in
    num_conflicts): {"line", "kept_line", "answer", "kept_answer"}.
  example_lines: the 1-based line (row) of each loaded example, in order (for errors found later).
  """
  path: str
  rows_read: int = 0
  loaded: int = 0
  skipped: dict[str, int] = dataclasses.field(default_factory=dict)
  skipped_lines: dict[str, list[int]] = dataclasses.field(default_factory=dict)
  level_unknown: int = 0
  conflicts: list[dict] = dataclasses.field(default_factory=list)
  num_conflicts: int = 0
  example_lines: list[int] = dataclasses.field(default_factory=list, repr=False)
  unit: str = "line"

  @property
  def duplicates(self) -> int:
    return self.skipped.get("duplicate", 0)

  def count_skip(self, reason: str, line: int) -> None:
    """Counts one skipped row (1-based line or row number) under `reason`."""
    self.skipped[reason] = self.skipped.get(reason, 0) + 1
    lines = self.skipped_lines.setdefault(reason, [])
    if len(lines) < _MAX_LINES_KEPT:
      lines.append(line)

  def count_conflict(self, line: int, kept_line: int, answer: str, kept_answer: str) -> None:
    """A duplicate (already counted) whose answer differs from the kept row's."""
    self.num_conflicts += 1
    if len(self.conflicts) < _MAX_CONFLICTS_KEPT:
      self.conflicts.append({"line": line, "kept_line": kept_line, "answer": answer[:200],
                             "kept_answer": kept_answer[:200]})

  def drop_loaded(self, keep: list[bool], reason: str) -> None:
    """Moves the loaded examples where keep[i] is False to skipped[reason] (a check after the load)."""
    if len(keep) != self.loaded or len(self.example_lines) != self.loaded:
      raise ValueError(f"{self.path}: drop_loaded got {len(keep)} flags for {self.loaded} loaded rows")
    for line, kept in zip(self.example_lines, keep):
      if not kept:
        self.count_skip(reason, line)
    self.example_lines = [line for line, kept in zip(self.example_lines, keep) if kept]
    self.loaded = len(self.example_lines)

  def where(self, index: int) -> str:
    """"path:line N" of the index-th loaded example."""
    return f"{self.path}:{self.unit} {self.example_lines[index]}"

  def to_json(self) -> dict:
    """The report as data_report.json writes it (rows read == kept + sum of skipped)."""
    return {"path": self.path, "rows_read": self.rows_read, "kept": self.loaded,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_lines": {k: list(v) for k, v in sorted(self.skipped_lines.items())},
            "duplicates": self.duplicates, "conflicting_duplicates": self.num_conflicts,
            "conflicts": list(self.conflicts), "level_unknown": self.level_unknown, "unit": self.unit}

  def __str__(self) -> str:
    skipped = ", ".join(f"{k}={v}" for k, v in sorted(self.skipped.items())) or "none"
    conflicts = f", {self.num_conflicts} duplicates with a different answer" if self.num_conflicts else ""
    return (f"{self.path}: {self.rows_read} rows read, {self.loaded} kept, skipped: {skipped}{conflicts}, "
            f"level unknown: {self.level_unknown}")


# ----------------------------------------------------------------------------------------------
# Answers: the last \boxed{...} / \fbox{...} of a solution.

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _braced_content(text: str, open_pos: int) -> str | None:
  """Content of the brace group opening at text[open_pos] == '{', or None if it never closes.

  Escaped braces (\\{ and \\}) do not count, so `\\boxed{\\{1,2\\}}` gives `\\{1,2\\}`.
  """
  depth = 0
  i = open_pos
  while i < len(text):
    c = text[i]
    if c == "\\":
      i += 2  # skip the escaped character, whatever it is
      continue
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth == 0:
        return text[open_pos + 1:i]
    i += 1
  return None


def last_boxed(text: str) -> str | None:
  """The content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, nested braces handled.

  `\\boxed 5` (MATH's braceless form) gives "5". Returns None when there is no box, when the last
  box never closes, or when it is empty.
  """
  matches = list(_BOX_RE.finditer(text))
  if not matches:
    return None
  end = matches[-1].end()
  rest = text[end:]
  stripped = rest.lstrip()
  if stripped.startswith("{"):
    content = _braced_content(text, end + len(rest) - len(stripped))
  else:
    # Braceless form: `\boxed 5$` -> the token up to whitespace or `$`.
    token = re.match(r"\s+([^\s$]+)", rest)
    content = token.group(1) if token else None
  if content is None:
    return None
  content = content.strip()
  return content or None


# ----------------------------------------------------------------------------------------------
# Steps: a solution split on line breaks, kept whole inside display math and environments.

_DISPLAY_OPEN_RE = re.compile(r"(?<!\\)\\\[")
_DISPLAY_CLOSE_RE = re.compile(r"(?<!\\)\\\]")


def _merge_open_blocks(chunks: list[str]) -> list[str]:
  """Joins consecutive chunks while a `$$`, `\\[` or `\\begin{}` block is open, so no step ends
  inside display math (a hint cut at a step boundary must stay well-formed LaTeX)."""
  steps: list[str] = []
  current: list[str] = []
  open_blocks = 0
  dollars_open = False
  for chunk in chunks:
    current.append(chunk)
    open_blocks += len(re.findall(r"\\begin\{", chunk)) - len(re.findall(r"\\end\{", chunk))
    # `\[` opens display math; `\\[2pt]` (a line break with spacing) does not.
    open_blocks += len(_DISPLAY_OPEN_RE.findall(chunk)) - len(_DISPLAY_CLOSE_RE.findall(chunk))
    if chunk.count("$$") % 2:
      dollars_open = not dollars_open
    if open_blocks <= 0 and not dollars_open:
      steps.append("\n".join(current))
      current, open_blocks = [], 0
  if current:
    steps.append("\n".join(current))
  return steps


def _split_sentences(text: str) -> list[str]:
  """Splits one line into sentences at '.', '!' or '?' followed by space, outside `$...$` math and
  braces, and only when the next word does not start lowercase (so 'e.g. the' stays whole)."""
  sentences, start, in_math, depth = [], 0, False, 0
  i = 0
  while i < len(text):
    c = text[i]
    if c == "\\":
      i += 2
      continue
    if c == "$":
      in_math = not in_math
    elif c == "{":
      depth += 1
    elif c == "}":
      depth = max(depth - 1, 0)
    elif c in ".!?" and not in_math and depth == 0:
      j = i + 1
      if j < len(text) and text[j].isspace():
        while j < len(text) and text[j].isspace():
          j += 1
        if j < len(text) and not text[j].islower():
          sentences.append(text[start:i + 1].strip())
          start = j
    i += 1
  sentences.append(text[start:].strip())
  return [s for s in sentences if s]


def split_steps(solution: str) -> tuple[str, ...]:
  """A solution as a tuple of steps (joined by "\\n" it reads as the solution).

  Blank-line paragraphs when the text has them, else lines, else sentences (one-line solutions);
  a display-math block or LaTeX environment spanning several lines stays in one step.
  """
  text = solution.replace("\r\n", "\n").replace("\r", "\n").strip()
  if not text:
    return ()
  if re.search(r"\n[ \t]*\n", text):
    chunks = re.split(r"\n[ \t]*\n", text)
  elif "\n" in text:
    chunks = text.split("\n")
  else:
    return tuple(_split_sentences(text))
  chunks = [c.strip() for c in chunks if c.strip()]
  return tuple(_merge_open_blocks(chunks))


# ----------------------------------------------------------------------------------------------
# Rows -> Examples.

def _field_map(fields: Mapping[str, str] | Any | None) -> dict[str, str]:
  """Our field name -> the file's column name; accepts a dict or an ml_collections ConfigDict."""
  mapping = {name: name for name in FIELD_NAMES}
  if fields is None:
    return mapping
  items = fields.items() if hasattr(fields, "items") else dict(fields).items()
  for ours, theirs in items:
    if ours not in mapping:
      raise ValueError(f"fields has unknown key {ours!r}; the keys are our field names "
                       f"{list(FIELD_NAMES)}, each mapped to the file's column name.")
    if not isinstance(theirs, str) or not theirs:
      raise ValueError(f"fields[{ours!r}] = {theirs!r}: expected the file's column name (a string).")
    mapping[ours] = theirs
  return mapping


def _text_field(row: dict, ours: str, fmap: dict[str, str], required: bool) -> str | None:
  """The row's value of one field as str (numbers are written as text), None when absent/null."""
  theirs = fmap[ours]
  value = row.get(theirs)
  if value is None:
    if required and theirs in row:
      raise BadRow("null_field", f"field {theirs!r} ({ours}) is null; give the row a {ours} or drop it")
    if required:
      present = ", ".join(sorted(map(str, row))[:20]) or "none"
      raise BadRow("missing_field",
                   f"no field {theirs!r} ({ours}) in the row (its fields: {present}); if the {ours} "
                   f"is under another name, set fields[{ours!r}] (config: data.fields.{ours}) to it")
    return None
  if isinstance(value, bytes):
    try:
      value = value.decode("utf-8")
    except UnicodeDecodeError as e:
      raise BadRow("invalid_utf8", f"field {theirs!r} is not valid UTF-8 ({e.reason} at byte "
                   f"{e.start}); re-encode the file as UTF-8") from None
  if isinstance(value, bool) or not isinstance(value, (str, int, float)):
    raise BadRow("wrong_type", f"field {theirs!r} ({ours}) is a {type(value).__name__}, expected "
                 f"text; fix the row or map {ours} to another column with fields[{ours!r}]")
  return str(value)


def _parse_level(value: Any) -> int:
  """'Level 3' / '3' / 3 -> 3; anything else (None, 'Level ?') -> -1."""
  if isinstance(value, bool):
    return -1
  if isinstance(value, int):
    return value
  if isinstance(value, float) and value.is_integer():
    return int(value)
  if isinstance(value, bytes):
    value = value.decode("utf-8", errors="replace")
  if isinstance(value, str):
    m = re.fullmatch(r"\s*(?:level\s*)?(-?\d+)\s*", value, flags=re.IGNORECASE)
    if m:
      return int(m.group(1))
  return -1


def row_to_example(row: Any, *, fmap: dict[str, str], dataset_name: str,
                   answer_from_boxed: bool) -> tuple[Example, bool]:
  """One parsed row -> (Example, level_known). Raises BadRow naming the fault and the fix."""
  if not isinstance(row, dict):
    raise BadRow("not_an_object", f"the row is a JSON {type(row).__name__}, not an object; each "
                 f"line must be one object like {{\"problem\": ..., \"solution\": ...}}")
  problem = _text_field(row, "problem", fmap, required=True).strip()
  solution = _text_field(row, "solution", fmap, required=True)
  hint = _text_field(row, "solution_hint", fmap, required=False)
  answer = _text_field(row, "answer", fmap, required=False)
  if not problem:
    raise BadRow("empty_problem", f"field {fmap['problem']!r} (problem) is empty; fill it in or "
                 f"drop the row")
  if not solution.strip():
    raise BadRow("empty_solution", f"field {fmap['solution']!r} (solution) is empty; hints are cut "
                 f"from the solution, so give one or drop the row")
  # GHPO's Math3to5 keeps the trace that hints are cut from in `solution_hint`.
  has_hint = hint is not None and bool(hint.strip())
  steps = split_steps(hint if has_hint else solution)
  answer = answer.strip() if answer is not None else ""
  if not answer:
    boxed = last_boxed(solution) if answer_from_boxed else None
    if boxed is None and answer_from_boxed and has_hint:
      boxed = last_boxed(hint)
    if boxed is None:
      how = ("it has no complete, non-empty \\boxed{...} to take the answer from" if answer_from_boxed
             else "answer_from_boxed is off")
      raise BadRow("no_answer", f"no answer: field {fmap['answer']!r} is absent or empty and {how}; "
                   f"add the answer, or map it with fields['answer'] (config: data.fields.answer)")
    answer = boxed
  level_raw = row.get(fmap["level"])
  level = _parse_level(level_raw)
  example = Example(problem_id=stable_id(dataset_name, problem), problem=problem, steps=steps,
                    answer=answer, level=level, step_sep=STEP_SEP)
  return example, level_raw is not None and level >= 0


def _jsonl_rows(path: str) -> Iterator[tuple[int, Any]]:
  """(1-based line, parsed row or BadRow) for each non-blank line; read as bytes so one invalid
  UTF-8 line is one bad row, not a failed file."""
  with open(path, "rb") as f:
    for line_no, raw in enumerate(f, start=1):
      if not raw.strip():
        continue
      try:
        text = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        yield line_no, BadRow("invalid_utf8", f"line is not valid UTF-8 ({e.reason} at byte "
                              f"{e.start} of the line); re-encode the file as UTF-8")
        continue
      try:
        yield line_no, json.loads(text)
      except json.JSONDecodeError as e:
        hint = (" (the file looks truncated: re-export it)" if not raw.endswith(b"\n") else "")
        yield line_no, BadRow("invalid_json", f"invalid JSON: {e.msg} at column {e.colno}{hint}; "
                              f"each line must be one complete JSON object")


def _parquet_rows(path: str, fmap: dict[str, str]) -> Iterator[tuple[int, Any]]:
  """(1-based row, row dict) for each Parquet row, read in record batches (bounded memory)."""
  import pyarrow  # only Parquet users pay for the import
  import pyarrow.parquet as pq
  try:
    pfile = pq.ParquetFile(path)
  except (OSError, pyarrow.ArrowException) as e:
    raise ValueError(f"{path}: cannot be read as Parquet ({type(e).__name__}: {e}); check the path, or "
                     "re-export the file (a .parquet file must be complete Parquet)") from None
  columns = set(pfile.schema_arrow.names)
  for ours in REQUIRED_FIELDS:
    if fmap[ours] not in columns:
      raise ValueError(f"{path}: no column {fmap[ours]!r} ({ours}); the columns are "
                       f"{sorted(columns)}. Set fields[{ours!r}] (config: data.fields.{ours}) to "
                       f"the column that holds the {ours}.")
  wanted = [c for c in dict.fromkeys(fmap.values()) if c in columns]
  row_no = 0
  batches = pfile.iter_batches(batch_size=1024, columns=wanted)
  while True:
    try:
      batch = next(batches)
    except StopIteration:
      return
    except (OSError, pyarrow.ArrowException) as e:
      raise ValueError(f"{path}: reading Parquet rows after row {row_no} failed ({type(e).__name__}: "
                       f"{e}); the file is corrupt or truncated: re-export it") from None
    for row in batch.to_pylist():
      row_no += 1
      yield row_no, row


def load_file(path: str | os.PathLike, *, fields: Mapping[str, str] | Any | None = None,
              on_bad_row: str = "error", answer_from_boxed: bool = True,
              dataset_name: str | None = None, keep_duplicates: bool = False,
              ) -> tuple[list[Example], LoadReport]:
  """Reads a JSONL (.jsonl/.json) or Parquet (.parquet) file of MATH-style rows.

  Args:
    path: the file; its format is chosen by the extension.
    fields: our field name -> the file's column name, for any of problem, solution, answer,
      solution_hint, level (dict or ConfigDict); unnamed fields keep their own name.
    on_bad_row: "error" raises ValueError at the first bad row (file, line, fault, mend);
      "skip" skips it and counts it in the report under its reason.
    answer_from_boxed: take the answer from the solution's last \\boxed{} when the answer field is
      absent or empty.
    dataset_name: part of every problem id (stable_id(dataset_name, problem)), so a problem keeps
      its id wherever the file lives; default: the file name without directory and extension.
    keep_duplicates: rows whose problem text repeats an earlier row's (same id) are dropped and
      counted as "duplicate" unless this is set.

  Returns:
    (examples in file order, LoadReport).
  """
  path = os.fspath(path)
  if on_bad_row not in ("error", "skip"):
    raise ValueError(f"on_bad_row={on_bad_row!r}: expected 'error' or 'skip'.")
  fmap = _field_map(fields)
  base = os.path.basename(path)
  if dataset_name is None:
    dataset_name = base.split(".", 1)[0]
  ext = base.lower().rsplit(".", 1)[-1] if "." in base else ""
  if ext in ("jsonl", "json", "ndjson"):
    rows, unit = _jsonl_rows(path), "line"
  elif ext in ("parquet", "pq"):
    rows, unit = _parquet_rows(path, fmap), "row"
  else:
    raise ValueError(f"{path}: unknown file type {ext!r}; use .jsonl (one JSON object per line) "
                     f"or .parquet.")

  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file (config.data.files / config.eval.files)")
  report = LoadReport(path=path, unit=unit)
  examples: list[Example] = []
  seen: dict[int, tuple[int, str]] = {}  # problem id -> (line, answer) of the kept row
  for line_no, row in rows:
    report.rows_read += 1
    try:
      if isinstance(row, BadRow):
        raise row
      example, level_known = row_to_example(row, fmap=fmap, dataset_name=dataset_name,
                                            answer_from_boxed=answer_from_boxed)
    except BadRow as bad:
      if on_bad_row == "error":
        raise ValueError(f"{path}:{unit} {line_no}: {bad} (or pass on_bad_row='skip' to skip and "
                         f"count such rows)") from None
      report.count_skip(bad.reason, line_no)
      continue
    if example.problem_id in seen and not keep_duplicates:
      report.count_skip("duplicate", line_no)
      kept_line, kept_answer = seen[example.problem_id]
      if example.answer != kept_answer:
        report.count_conflict(line_no, kept_line, example.answer, kept_answer)
      continue
    seen.setdefault(example.problem_id, (line_no, example.answer))
    examples.append(example)
    report.example_lines.append(line_no)
    report.loaded += 1
    report.level_unknown += not level_known
  return examples, report
