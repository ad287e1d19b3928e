"""The end-of-run report: on a finished tiny run (numbers equal metrics.jsonl) and on hand-written metrics."""
import json
import os

import numpy as np
import pytest

from jaxghpo import evaluation, report, train
from tests.train_fixtures import make_tiny_policy, tiny_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  policy = make_tiny_policy(str(tmp_path_factory.mktemp("policy")))
  workdir = str(tmp_path_factory.mktemp("run"))
  config = tiny_config(policy, num_steps=4, export_at_end=False)
  config.evals.hinted = evaluation.evaluator_config(splits=("hard",), hint_ratio=0.5)  # smoke's has greedy already
  summary = train.run(config, workdir)  # train.run calls report.finish
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return workdir, summary, rows


def test_finished_run_writes_summary_files(finished_run):
  workdir, summary, _ = finished_run
  for name in ("summary.md", "summary.json", "curves.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "curves.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  with open(os.path.join(workdir, "summary.json")) as f:
    on_disk = json.load(f)
  assert on_disk["complete"] is True and summary["report"]["complete"] is True
  assert on_disk["pass@1/hard/greedy/before"] == summary["report"]["pass@1/hard/greedy/before"]
  assert summary["wall_s"] > 0 and on_disk["time/wall_s"] == pytest.approx(summary["wall_s"])
  md = open(os.path.join(workdir, "summary.md")).read()
  assert "| hard |" in md and "Learning signal" in md and "Shortcuts on hard problems" in md
  assert "![curves](curves.png)" in md


def test_summary_numbers_equal_the_metrics_file(finished_run):
  workdir, _, rows = finished_run
  s = json.load(open(os.path.join(workdir, "summary.json")))
  first, last = rows[0], rows[-1]
  assert first["step"] == 0 and last["step"] == 4 == s["steps"]
  for split in ("easy", "hard"):
    for mode in ("greedy", "sampled"):
      assert s[f"pass@1/{split}/{mode}/before"] == first[f"eval/{split}/hint0/{mode}/pass@1"]
      assert s[f"pass@1/{split}/{mode}/after"] == last[f"eval/{split}/hint0/{mode}/pass@1"]
  assert s["pass@1/hard/hint0.5/sampled/after"] == last["eval/hard/hint0.5/sampled/pass@1"]
  assert "pass@1/easy/hint0.5/sampled/after" not in s  # easy is not evaluated with hints (evals.hinted.splits)
  assert s["eval_k"] == 2 and s["pass@k/hard/sampled/after"] == last["eval/hard/hint0/sampled/pass@2"]
  train_rows = rows[1:]
  yields = [r["frac_groups_nonzero_adv/hard"] for r in train_rows]
  assert s["signal_yield/hard/mean"] == pytest.approx(np.mean(yields))
  assert s["signal_yield/hard/first_quarter"] == pytest.approx(yields[0])  # 4 steps: a quarter is one step
  assert s["signal_yield/hard/last_quarter"] == pytest.approx(yields[-1])
  ratios = [r["hint_ratio_mean"] for r in train_rows]
  assert [s[f"hint_ratio/all/q{q}"] for q in range(1, 5)] == pytest.approx(ratios)
  assert s["gen_tokens"] == last["gen_tokens_total"] == sum(r["gen_tokens"] for r in train_rows)
  assert s["retries"] == sum(r["retries"] for r in train_rows)
  assert s["time/steps_s"] == pytest.approx(sum(r["time/step_s"] for r in train_rows))
  # Diagnostics read the eval files of step 0 and step 4.
  hard_after = evaluation.eval_rows_path(workdir, "hard", 4, 0.0, tag="sampled")
  n = sum(len(json.loads(line)["completions"]) for line in open(hard_after))
  assert s["diag/shortcut/hard/hint0/sampled/after/completions"] == n
  assert "diag/regression/easy/greedy/pass@1/after" in s


def _write_metrics(workdir, rows):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for row in rows:
      f.write(json.dumps(row) + "\n")


def test_quarters_and_before_after_from_hand_written_metrics(tmp_path):
  wd = str(tmp_path)
  yields = [0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]
  ratios = [0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0, 0.0]
  rows = [{"step": 0, "eval/hard/hint0/greedy/pass@1": 0.1, "eval/hard/hint0/sampled/pass@1": 0.2,
           "eval/hard/hint0/sampled/pass@4": 0.4, "eval/hard/hint0/sampled/pass@1/level_5": 0.05}]
  for i, (y, r) in enumerate(zip(yields, ratios), 1):
    row = {"step": i, "frac_groups_nonzero_adv/hard": y, "frac_groups_nonzero_adv": y / 2, "hint_ratio_mean": r,
           "gen_tokens": 100.0, "gen_tokens_total": 100.0 * i, "retries": 1.0, "time/step_s": 0.5}
    if i == 4:
      row["eval/hard/hint0/sampled/pass@1"] = 0.3  # a mid-run evaluation
    rows.append(row)
  rows[-1].update({"eval/hard/hint0/greedy/pass@1": 0.6, "eval/hard/hint0/sampled/pass@1": 0.5,
                   "eval/hard/hint0/sampled/pass@4": 0.7, "step": 8})
  rows.insert(2, {"step": 2, "frac_groups_nonzero_adv/hard": "nan"})  # an older row of step 2: the later one wins
  _write_metrics(wd, rows)
  s = report.summarize(wd, {"num_steps": 8, "curriculum": {"mode": "ghpo"}, "max_gen_tokens": 0})
  assert s["complete"] is True and s["mode"] == "ghpo"
  assert s["signal_yield/hard/mean"] == pytest.approx(0.625)
  assert (s["signal_yield/hard/first_quarter"], s["signal_yield/hard/last_quarter"]) == (0.0, 1.0)
  assert s["signal_yield/all/mean"] == pytest.approx(0.3125)
  assert [s[f"hint_ratio/all/q{q}"] for q in range(1, 5)] == [0.75, 0.5, 0.25, 0.0]
  assert s["hint_ratio/hard/mean"] is None  # the rows have no hard-group ratio
  assert (s["pass@1/hard/greedy/before"], s["pass@1/hard/greedy/after"]) == (0.1, 0.6)
  assert (s["pass@1/hard/sampled/before"], s["pass@1/hard/sampled/after"]) == (0.2, 0.5)
  assert s["pass@1/hard/sampled/before/level_5"] == 0.05
  assert (s["eval_k"], s["pass@k/hard/sampled/after"]) == (4, 0.7)
  assert (s["gen_tokens"], s["retries"], s["time/steps_s"]) == (800.0, 8.0, 4.0)
  assert report.eval_curve(report.read_metrics(wd)) == [(0, 0.0, 0.2), (4, 400.0, 0.3), (8, 800.0, 0.5)]
  # Fewer than 4 steps: the missing quarters are None, first/last quarter are the first/last step.
  assert report.quarter_means([1.0, 3.0]) == [1.0, 3.0, None, None]
  assert report.first_last_quarter([1.0, 3.0]) == (1.0, 3.0)


def test_a_run_without_its_final_evaluation_is_partial(tmp_path):
  wd = str(tmp_path)
  _write_metrics(wd, [{"step": 0, "eval/hard/hint0/greedy/pass@1": 0.1},
                      {"step": 1, "frac_groups_nonzero_adv/hard": 0.5, "gen_tokens_total": 10.0}])
  s = report.summarize(wd, {"num_steps": 5})
  assert s["complete"] is False and s["pass@1/hard/greedy/after"] is None and s["eval_step/after"] is None
  # A token budget counts as the end once spent (with the final evaluation at that step).
  _write_metrics(wd, [{"step": 0, "eval/hard/hint0/greedy/pass@1": 0.1},
                      {"step": 1, "gen_tokens_total": 10.0, "eval/hard/hint0/greedy/pass@1": 0.2}])
  assert report.summarize(wd, {"num_steps": 5, "max_gen_tokens": 8})["complete"] is True


def test_only_the_main_process_writes(tmp_path):
  wd = str(tmp_path)
  _write_metrics(wd, [{"step": 0, "eval/hard/hint0/greedy/pass@1": 0.1}])
  assert report.finish(wd, {"num_steps": 1}, is_main_process=False) == {}
  assert not os.path.exists(os.path.join(wd, "summary.json"))


def test_missing_metrics_file_names_the_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match="workdir"):
    report.summarize(str(tmp_path / "nowhere"))


def test_a_run_without_greedy_evaluation_prints_no_placeholder_cells(tmp_path):
  """Console and summary.md name valid pass@1 and answer pass@1, and leave out the greedy columns when the run
  evaluated no greedy pass (before: "greedy - -> -" on every split)."""
  wd = str(tmp_path)
  _write_metrics(wd, [{"step": 0, "eval/hard/hint0/sampled/pass@1": 0.2, "eval/hard/hint0/sampled/valid_pass@1": 0.1,
                       "eval/hard/hint0/sampled/pass@4": 0.3},
                      {"step": 1, "gen_tokens_total": 10.0, "eval/hard/hint0/sampled/pass@1": 0.5,
                       "eval/hard/hint0/sampled/valid_pass@1": 0.4, "eval/hard/hint0/sampled/pass@4": 0.6}])
  s = report.summarize(wd, {"num_steps": 1}, with_diagnostics=False)
  lines = report.console_lines(s)
  assert "valid pass@1" in lines[1] and "answer pass@1" in lines[1] and "greedy" not in "\n".join(lines)
  assert lines[2].split() == ["hard", "0.100", "->", "0.400", "|", "0.200", "->", "0.500"]
  md = report.markdown(s)
  body = md.split("\n", 1)[1]  # below the title, which names the workdir
  section = body.split("## answer pass@1 without hints", 1)[1].split("\n## ", 1)[0]
  assert "greedy" not in body and "| - |" not in section and "| hard | 0.200 | 0.500 | +0.300 | 0.300 | 0.600 |" in section
