"""File datasets (jaxghpo/data/files.py): MATH-style JSONL/Parquet rows -> Examples, bad rows."""
import json
import shutil

import ml_collections
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxghpo.data import files
from jaxghpo.data.example import Example, stable_id

ROWS = [
    # answer field present; solution in blank-line paragraphs; MATH's "Level 3".
    {"problem": "What is $1+2$?", "solution": "Add them.\n\nSo $1+2=3$, i.e. $\\boxed{3}$.",
     "answer": "3", "level": "Level 3"},
    # no answer field: taken from the LAST box, nested braces kept whole.
    {"problem": "Simplify.", "solution": "First $\\boxed{x}$ is wrong.\nThen $\\boxed{\\frac{a}{b^{2}}}$.",
     "level": 5},
    # GHPO's Math3to5: the trace is cut from solution_hint, not from the solution.
    {"problem": "Find $y$.", "solution": "Short: $\\boxed{7}$.", "answer": "7",
     "solution_hint": "Step one.\nStep two.\nSo $y=7$."},
    # one-line solution: split into sentences, not inside $...$ math or after 'e.g.'.
    {"problem": "One line?", "solution": "We have $x=3.5$. Then e.g. the sum is $4$. So \\fbox{4}.",
     "level": "Level ?"},
]


def write_jsonl(path, rows, *, raw_lines=()):
  with open(path, "wb") as f:
    for row in rows:
      f.write(json.dumps(row).encode("utf-8") + b"\n")
    for line in raw_lines:
      f.write(line)
  return str(path)


def test_math_rows_become_examples(tmp_path):
  path = write_jsonl(tmp_path / "math_train.jsonl", ROWS)
  examples, report = files.load_file(path)
  assert (report.rows_read, report.loaded, report.skipped) == (4, 4, {})
  a, b, c, d = examples
  assert a == Example(problem_id=stable_id("math_train", "What is $1+2$?"), problem="What is $1+2$?",
                      steps=("Add them.", "So $1+2=3$, i.e. $\\boxed{3}$."), answer="3", level=3,
                      step_sep="\n")
  assert b.answer == "\\frac{a}{b^{2}}"
  assert b.steps == ("First $\\boxed{x}$ is wrong.", "Then $\\boxed{\\frac{a}{b^{2}}}$.")
  assert b.level == 5
  assert c.steps == ("Step one.", "Step two.", "So $y=7$.") and c.answer == "7"
  assert d.steps == ("We have $x=3.5$.", "Then e.g. the sum is $4$.", "So \\fbox{4}.")
  assert d.answer == "4" and d.level == -1
  assert report.level_unknown == 2  # row c has no level, row d has "Level ?"


def test_ids_depend_on_dataset_name_and_problem_not_on_directory(tmp_path):
  path = write_jsonl(tmp_path / "math_train.jsonl", ROWS)
  elsewhere = tmp_path / "other" / "dir"
  elsewhere.mkdir(parents=True)
  moved = shutil.copy(path, elsewhere / "math_train.jsonl")
  ids = [e.problem_id for e in files.load_file(path)[0]]
  assert ids == [e.problem_id for e in files.load_file(moved)[0]]
  named = [e.problem_id for e in files.load_file(path, dataset_name="math")[0]]
  assert named == [stable_id("math", r["problem"]) for r in ROWS]
  assert len(set(ids) | set(named)) == 8


def test_parquet_reads_like_jsonl(tmp_path):
  jsonl = write_jsonl(tmp_path / "m.jsonl", ROWS)
  columns = {k: [r.get(k) for r in ROWS] for k in ("problem", "solution", "answer", "solution_hint")}
  columns["level"] = [str(r["level"]) if "level" in r else None for r in ROWS]
  pq.write_table(pa.table(columns), tmp_path / "m.parquet")
  from_parquet, report = files.load_file(tmp_path / "m.parquet")
  assert from_parquet == files.load_file(jsonl)[0]
  assert (report.rows_read, report.loaded) == (4, 4)


def test_field_names_are_configurable(tmp_path):
  rows = [{"question": "2+2?", "sol": "It is 4.\nDone: \\boxed{4}", "difficulty": "Level 1"}]
  path = write_jsonl(tmp_path / "renamed.jsonl", rows)
  with pytest.raises(ValueError, match=r"renamed.jsonl:line 1: no field 'problem'.*fields\['problem'\]"):
    files.load_file(path)
  fields = ml_collections.ConfigDict({"problem": "question", "solution": "sol", "level": "difficulty"})
  (example,), _ = files.load_file(path, fields=fields)
  assert (example.problem, example.steps, example.answer, example.level) == (
      "2+2?", ("It is 4.", "Done: \\boxed{4}"), "4", 1)
  with pytest.raises(ValueError, match="unknown key 'question'"):
    files.load_file(path, fields={"question": "problem"})


HOSTILE_LINES = [
    (b'{"problem": "p1", "solution": "s \\\\boxed{1}"}\n', None),
    (b'\n', "blank"),                                               # not a row
    (b'{"problem": "caf\xe9", "solution": "\\\\boxed{2}"}\n', "invalid_utf8"),
    (b'["problem", "solution"]\n', "not_an_object"),
    (b'{"problem": null, "solution": "\\\\boxed{3}"}\n', "null_field"),
    (b'{"problem": "p4", "solution": "   "}\n', "empty_solution"),
    (b'{"problem": "p5", "solution": "no box here", "answer": null}\n', "no_answer"),
    (b'{"problem": "p6", "solution": "\\\\boxed{6"}\n', "no_answer"),  # unclosed box
    (b'{"problem": {"a": 1}, "solution": "\\\\boxed{7}"}\n', "wrong_type"),
    (b'{"problem": "p1", "solution": "again \\\\boxed{1}"}\n', "duplicate"),
    (b'{"problem": "huge", "solution": "' + b"x = 1. " * 300_000 + b'\\\\boxed{\\\\frac{a}{b^{2}}}"}\n', None),
    (b'{"problem": "p9", "solution": "trunc', "invalid_json"),       # truncated last line
]


def hostile_file(tmp_path):
  return write_jsonl(tmp_path / "hostile.jsonl", [], raw_lines=[line for line, _ in HOSTILE_LINES])


def test_hostile_rows_are_skipped_and_counted(tmp_path):
  examples, report = files.load_file(hostile_file(tmp_path), on_bad_row="skip")
  assert [e.problem for e in examples] == ["p1", "huge"]
  assert examples[1].answer == "\\frac{a}{b^{2}}"
  # one line: sentences split only before a word that does not start lowercase
  assert len(examples[1].steps[0]) > 2_000_000 and examples[1].steps[1:] == ("\\boxed{\\frac{a}{b^{2}}}",)
  expected = {}
  for _, reason in HOSTILE_LINES:
    if reason not in (None, "blank"):
      expected[reason] = expected.get(reason, 0) + 1
  assert report.skipped == expected
  assert report.rows_read == len(HOSTILE_LINES) - 1 == report.loaded + sum(report.skipped.values())
  assert report.duplicates == 1
  assert report.skipped_lines["no_answer"] == [7, 8] and report.skipped_lines["invalid_json"] == [12]


@pytest.mark.parametrize("line_no", [3, 4, 5, 6, 7, 9, 12])
def test_first_bad_row_raises_naming_file_line_and_mend(tmp_path, line_no):
  lines = [HOSTILE_LINES[0][0]] + [HOSTILE_LINES[line_no - 1][0]]  # one good row, then the bad one
  path = write_jsonl(tmp_path / "bad.jsonl", [], raw_lines=lines)
  reason = HOSTILE_LINES[line_no - 1][1]
  mend = {"invalid_utf8": "re-encode the file as UTF-8", "not_an_object": "must be one object",
          "null_field": r"'problem' \(problem\) is null; give the row a problem", "empty_solution": "give one or drop the row",
          "no_answer": r"add the answer, or map it with fields\['answer'\]",
          "wrong_type": "expected text", "invalid_json": "looks truncated"}[reason]
  with pytest.raises(ValueError, match=rf"bad\.jsonl:line 2: .*{mend}.*on_bad_row='skip'"):
    files.load_file(path)


def test_no_answer_without_boxed_fallback(tmp_path):
  path = write_jsonl(tmp_path / "m.jsonl", [{"problem": "p", "solution": "so \\boxed{2}"}])
  assert files.load_file(path)[0][0].answer == "2"
  with pytest.raises(ValueError, match="answer_from_boxed is off"):
    files.load_file(path, answer_from_boxed=False)


def test_parquet_missing_column_and_bad_row_name_the_fix(tmp_path):
  pq.write_table(pa.table({"question": ["a"], "solution": ["\\boxed{1}"]}), tmp_path / "q.parquet")
  with pytest.raises(ValueError, match=r"q.parquet: no column 'problem'.*\['question', 'solution'\]"):
    files.load_file(tmp_path / "q.parquet")
  pq.write_table(pa.table({"problem": ["a", "b", "c"], "solution": ["\\boxed{1}", None, "\\boxed{3}"]}),
                 tmp_path / "n.parquet")
  with pytest.raises(ValueError, match=r"n.parquet:row 2: field 'solution' \(solution\) is null"):
    files.load_file(tmp_path / "n.parquet")
  examples, report = files.load_file(tmp_path / "n.parquet", on_bad_row="skip")
  assert [e.answer for e in examples] == ["1", "3"] and report.skipped_lines == {"null_field": [2]}


@pytest.mark.parametrize("text, answer", [
    ("\\boxed{\\frac{a}{b^{2}}}", "\\frac{a}{b^{2}}"),
    ("$\\boxed{1}$ then $\\boxed{2}$", "2"),                     # the last one
    ("\\fbox{ 3 }", "3"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),                          # escaped braces do not count
    ("\\boxed{\\left\\{x\\right.}", "\\left\\{x\\right."),           # even unbalanced ones
    ("\\boxed 5$", "5"),                                          # MATH's braceless form
    ("\\boxed{[1,2)}", "[1,2)"),
    ("\\boxed{1} and an unclosed \\boxed{2", None),
    ("\\boxed{}", None),
    ("\\boxedfoo{1}", None),
    ("{" * 5000 + "\\boxed{" + "{" * 3000 + "x" + "}" * 3000 + "}", "{" * 3000 + "x" + "}" * 3000),
])
def test_last_boxed(text, answer):
  assert files.last_boxed(text) == answer


def test_split_steps_keeps_display_math_whole():
  solution = ("We compute.\n\\begin{align*}\na &= 1 \\\\[2pt]\nb &= 2\n\\end{align*}\n"
              "$$\nc = 3\n$$\n\\[ d = 4 \\]\nSo the answer is $4$.")
  assert files.split_steps(solution) == (
      "We compute.", "\\begin{align*}\na &= 1 \\\\[2pt]\nb &= 2\n\\end{align*}", "$$\nc = 3\n$$",
      "\\[ d = 4 \\]", "So the answer is $4$.")
  assert files.split_steps("A.\r\n\r\nB\nstill B.\n\n\nC.") == ("A.", "B\nstill B.", "C.")
  assert files.split_steps("  ") == ()
