"""tools/study.py: the arms' configs, the t-interval, and a miniature study (2 arms x 2 seeds, at most 2 steps
each, tiny random policy) that writes its table and plots, skips finished runs on a rerun, and reproduces a
run's numbers from its seed in another directory."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.train_fixtures import make_tiny_policy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import study  # noqa: E402

T_975 = {1: 12.706204736, 2: 4.302652730}  # Student t quantiles, two-sided 95%, by degrees of freedom
# Small sizes for the tiny policy (tests/train_fixtures.tiny_config's), minimal evaluation.
TINY = ["--config", "configs/smoke.py", "--steps", "2", "--max_steps", "2", "--eval_every", "0",
        "--set", "rollout.max_new_tokens=24", "--set", "rollout.max_prompt_len=40",
        "--set", "data.task_configs.chains.train_levels={'2': 1.0, '3': 1.0}", "--set", "data.task_configs.chains.num_train=64",
        "--set", "data.task_configs.chains.easy_levels=(2,)", "--set", "data.task_configs.chains.hard_levels=(3,)", "--set", "eval.num_problems=2",
        "--set", "eval.num_samples=2"]
# 4 prompts x 4 samples x 24 tokens = 384 tokens at most per sampling round: GRPO needs 2 steps for this budget,
# GHPO spends it in its first step (a random policy fails every group, so every group climbs the ladder).
BUDGET = ["--budget_tokens", "385"]


def test_t_interval_hand_worked():
  mean, half, n = study.t_interval([1.0, 2.0, 3.0])  # sd 1
  assert (mean, n) == (2.0, 3) and half == pytest.approx(T_975[2] / math.sqrt(3))
  assert study.t_interval([0.5, None, float("nan")]) == (0.5, None, 1)
  assert study.t_interval([]) == (None, None, 0)


def _args(*argv):
  return study.argparse.Namespace(**{**dict(config="configs/smoke.py", quick=False, steps=0, model="", set=None,
                                            budget_tokens=0, max_steps=0, eval_every=None, seeds="0,1,2",
                                            arms=",".join(study.ARMS)), **dict(argv)})


def test_plan_builds_every_arm_at_an_equal_budget():
  runs, settings = study.plan(_args(("model", "/some/policy")))
  assert len(runs) == len(study.ARMS) * 3 and settings["seeds"] == [0, 1, 2]
  smoke = study.load_config("configs/smoke.py")
  smoke_steps = smoke.num_steps
  most_tokens = smoke_steps * smoke.data.prompts_per_step * smoke.rollout.group_size * smoke.rollout.max_new_tokens
  assert settings["budget_tokens"] == most_tokens // 4 and settings["max_steps"] == 4 * smoke_steps
  by = {(arm, seed): c for arm, seed, c in runs}
  assert {c.max_gen_tokens for c in by.values()} == {settings["budget_tokens"]}
  assert {c.num_steps for c in by.values()} == {settings["max_steps"]}
  assert by[("grpo", 0)].curriculum.mode == "none" and by[("filter", 1)].curriculum.mode == "filter"
  assert tuple(by[("ghpo", 2)].curriculum.ladder) == (0.25, 0.5, 0.75)
  assert (by[("ghpo_other", 0)].curriculum.mode, by[("ghpo_other", 0)].hints.corruption) == ("ghpo", "other")
  assert by[("ghpo_shuffle", 0)].hints.corruption == "shuffle" and by[("ghpo", 0)].hints.corruption == "none"
  assert by[("ghpo_garble", 0)].hints.corruption == "garble"
  valid = by[("grpo_valid", 0)]
  assert dict(valid.rewards.weights) == {"valid_trace": 1.0} and valid.curriculum.mode == "none"
  assert dict(by[("grpo", 0)].rewards.weights) == {"exact": 1.0}
  assert by[("anneal", 0)].curriculum.anneal_steps == smoke_steps
  assert by[("ghpo_steps", 0)].curriculum.ladder_kind == "steps" and by[("ghpo", 0)].curriculum.ladder_kind == "ratios"
  assert by[("ghpo_response", 0)].hints.placement == "response"
  assert by[("uft", 0)].rl.hint_nll_coef > 0 and by[("uft", 0)].curriculum.anneal_random
  assert {c.arms for c in by.values()} == {()}  # one run per (arm, seed), never the side-by-side mode
  assert by[("adaptive", 1)].seed == 1 and by[("adaptive", 1)].model.path == "/some/policy"


def test_plan_rejects_unknown_arms_and_keys():
  with pytest.raises(ValueError, match="unknown arms"):
    study.plan(_args(("arms", "grpo,ppo")))
  with pytest.raises(KeyError, match="learning_rat"):
    study.plan(_args(("set", ["rl.learning_rat=1e-4"])))


def _study(*argv, cache):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1", JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "study.py"), *argv, "--compile_cache", cache],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.stdout


def _table(md, heading):
  """{row label: {column label: cell}} of the markdown table under `heading`."""
  block = md.split(heading, 1)[1].split("\n## ", 1)[0]
  rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines() if line.startswith("| ")]
  header = rows[0]
  return {r[0]: dict(zip(header[1:], r[1:])) for r in rows[2:]}  # rows[1] is the --- line


def _untimed(summary):
  return {k: v for k, v in summary.items() if not k.startswith("time/") and k != "workdir"}


def test_miniature_study_table_resume_and_reproducibility(tmp_path, capsys):
  policy = make_tiny_policy(str(tmp_path / "policy"))
  out, cache = str(tmp_path / "study"), str(tmp_path / "jax_cache")
  args = ["--model", policy, "--arms", "grpo,ghpo", "--seeds", "0,1", *TINY, *BUDGET]
  _study("--out", out, *args, cache=cache)

  md = open(os.path.join(out, "study.md")).read()
  outcomes = _table(md, "## pass@1 without hints")
  process = _table(md, "## Learning signal, hints, shortcuts and budget")
  assert list(outcomes) == list(process) == ["GRPO (no hints)", "GHPO 0.25/0.5/0.75"]
  for name in ("study_hard_pass.png", "study_signal_yield.png", "study_hint_ratio.png", "study_shortcut.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0

  # The cells come from the runs' files: generated tokens = mean over seeds ± t(1 df) * |a - b| / 2.
  summaries = {}
  for arm in ("grpo", "ghpo"):
    for seed in (0, 1):
      wd = os.path.join(out, arm, f"seed{seed}")
      last = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))][-1]
      summaries[(arm, seed)] = json.load(open(os.path.join(wd, "summary.json")))
      assert summaries[(arm, seed)]["gen_tokens"] == last["gen_tokens_total"] >= 385
  a, b = summaries[("grpo", 0)]["gen_tokens"], summaries[("grpo", 1)]["gen_tokens"]
  assert process["GRPO (no hints)"]["generated tokens"] == f"{(a + b) / 2:,.0f} ± {T_975[1] * abs(a - b) / 2:,.0f}"
  assert process["GHPO 0.25/0.5/0.75"]["steps"] == "1 ± 0"
  # Equal budget: GHPO's retries spend it in one step, GRPO needs its 2 steps.
  assert [summaries[("ghpo", s)]["steps"] for s in (0, 1)] == [1, 1]
  assert [summaries[("grpo", s)]["steps"] for s in (0, 1)] == [2, 2]
  # GHPO hinted (each group's ratio is a rung of 0.25/0.5/0.75; the tiny random policy rarely succeeds, so most
  # groups end on the top rung: the mean depends on the run's draws), GRPO never did.
  assert 0.25 < summaries[("ghpo", 0)]["hint_ratio/all/mean"] <= 0.75
  assert summaries[("grpo", 0)]["hint_ratio/all/mean"] == 0.0

  # A rerun skips the finished runs and writes the same tables.
  mtimes = {k: os.path.getmtime(os.path.join(out, k[0], f"seed{k[1]}", "metrics.jsonl")) for k in summaries}
  study.main(["--out", out, *args, "--compile_cache", ""])  # in this process: nothing may compile or train
  assert capsys.readouterr().out.count("already finished, skipped") == 4
  assert mtimes == {k: os.path.getmtime(os.path.join(out, k[0], f"seed{k[1]}", "metrics.jsonl")) for k in summaries}
  assert open(os.path.join(out, "study.md")).read().split("## Cost")[0] == md.split("## Cost")[0]

  # The same seed in another directory gives the same numbers.
  again = str(tmp_path / "again")
  _study("--out", again, "--model", policy, "--arms", "grpo", "--seeds", "1", *TINY, *BUDGET, cache=cache)
  rerun = json.load(open(os.path.join(again, "grpo", "seed1", "summary.json")))
  assert _untimed(rerun) == _untimed(summaries[("grpo", 1)])


# ------------------------------------------------------------------------------------ tests over seeds
STUDY_JSON = os.path.join(ROOT, "docs", "results", "study", "study.json")
P_COLUMNS = ("t p", "exact p", "t p (Holm)", "exact p (Holm)")
SEED_TESTS = "tests over seeds"


def _p_values(table):
  """Every printed p of the seed-test table as a number ("< x" reads x; "-" is left out)."""
  out = []
  for row in table.values():
    for column in P_COLUMNS:
      text = row[column]
      if text != "-":
        out.append(float(text.lstrip("< ")))
  return out


def _settings(arms, seeds):
  return {"config": "configs/default.py", "preset": "full", "steps": 25, "budget_tokens": 100, "max_steps": 100,
          "seeds": seeds, "arms": arms, "overrides": {}}


def test_seed_tests_on_the_committed_study():
  data = json.load(open(STUDY_JSON))
  md = study.markdown(data["runs"], data["settings"], None, problem_comparisons=data["comparisons"])
  committed = open(os.path.join(ROOT, "docs", "results", "study", "study.md")).read()
  assert committed.split(study.PROVENANCE)[0] == md + "\n"  # the committed report is this tool's output
  table = _table(md, SEED_TESTS)
  floor = 1 / 2 ** 5
  assert len(table) == 8 and min(_p_values(table)) >= floor
  primary = table["GHPO 0.25/0.5/0.75 (primary)"]
  assert primary["seeds"] == "5 paired" and primary["difference"] == "-0.146"
  assert primary["95% t-interval"] == "[-0.276, -0.016]" and primary["exact p"] == "0.0625"
  assert float(primary["t p"]) == pytest.approx(0.0355, abs=1e-3) and primary["r"] == "-0.28"
  # Holm over the 7 secondary arms: only the valid-trace reward's t p stays below 0.05; no exact p does.
  holm_t = {arm: float(row["t p (Holm)"].lstrip("< ")) for arm, row in table.items() if "primary" not in arm}
  assert [arm for arm, p in holm_t.items() if p < 0.05] == ["GRPO, valid-trace reward"]
  assert table["adaptive"]["t p (Holm)"] == "0.237" and table["UFT (anneal + hint NLL)"]["t p (Holm)"] == "0.163"
  assert {row["exact p (Holm)"] for row in table.values()} >= {"0.438"}
  assert "a 0.10 difference needs 11 seeds" in md and "detects a difference of 0.176 with 80% power" in md
  # The bootstrap stays, as a description without a p-value.
  within = _table(md, "## Within-run description (problems), not a test over seeds")
  assert within["GHPO 0.25/0.5/0.75 (primary)"]["95% interval (seeds, problems)"] == "[-0.232, -0.062]"
  assert not any("p" in column.split() for column in next(iter(within.values())))
  # Harm per level is shown seed by seed: level 3 fell to 0.805 (GRPO seed 3) and 0.863 (GHPO seed 4).
  lowest = _table(md, "## Per level: the lowest seed's")
  assert lowest["GRPO (no hints)"]["L3"] == "0.805 (s3)" and lowest["GHPO 0.25/0.5/0.75"]["L3"] == "0.863 (s4)"


def test_seed_tests_never_print_below_the_seed_floor(tmp_path):
  # 5 seeds, every one of them 0.3 worse with the arm: the t p is ~1e-6, the exact p its floor 2/32.
  rng = np.random.default_rng(0)
  base = 0.9 + 0.01 * rng.standard_normal(5)
  runs = ([{"arm": "grpo", "seed": s, study.PRIMARY_KEY: float(base[s])} for s in range(5)]
          + [{"arm": "ghpo", "seed": s, study.PRIMARY_KEY: float(base[s] - 0.3 - 0.01 * s)} for s in range(5)])
  md = study.markdown(runs, _settings(["grpo", "ghpo"], list(range(5))), None, problem_comparisons={})
  row = _table(md, SEED_TESTS)["GHPO 0.25/0.5/0.75 (primary)"]
  assert study.seed_comparisons(runs, ["grpo", "ghpo"])["ghpo"]["p"] < 1e-4
  assert row["t p"] == "< 0.0313" and row["exact p"] == "0.0625"
  assert min(_p_values(_table(md, SEED_TESTS))) >= 1 / 2 ** 5
  assert "Within-run description" not in md  # no run directories: no bootstrap to describe
  # --from_json writes the same report and keeps a hand-written provenance section.
  path = tmp_path / "study.json"
  path.write_text(json.dumps({"settings": _settings(["grpo", "ghpo"], list(range(5))), "runs": runs,
                              "comparisons": {}}))
  (tmp_path / "study.md").write_text("old table\n\n## Provenance\n\nRun by hand.\n")
  study.main(["--from_json", str(path), "--out", str(tmp_path)])
  assert (tmp_path / "study.md").read_text() == md + "\n## Provenance\n\nRun by hand.\n"


def test_seed_tests_unpaired_when_seeds_differ():
  runs = ([{"arm": "grpo", "seed": s, study.PRIMARY_KEY: v} for s, v in ((0, 0.5), (1, 0.6))]
          + [{"arm": "adaptive", "seed": s, study.PRIMARY_KEY: v} for s, v in ((2, 0.7), (3, 0.8))])
  result = study.seed_comparisons(runs, ["grpo", "adaptive"])["adaptive"]
  assert not result["paired"] and result["diff"] == pytest.approx(0.2) and result["p_exact"] == pytest.approx(1 / 3)
  md = study.markdown(runs, _settings(["grpo", "adaptive"], [0, 1, 2, 3]), None, problem_comparisons={})
  assert _table(md, SEED_TESTS)["adaptive"]["seeds"] == "2 + 2 unpaired"


def test_exact_tables_tests_over_seeds_and_manipulation_check():
  # Two arms x 3 seeds with exact measures on levels 3 and 7 (7 the primary split): every metric of level 7 and
  # p_valid of level 3 are tested over seeds; the co-primaries of the primary arm are Holm-corrected as a pair.
  summaries = []
  for arm, shift, ratio in (("grpo", 0.0, 0.0), ("ghpo", 1.0, 0.3)):
    for seed in range(3):
      s = {"arm": arm, "seed": seed, "valid_pass@1/hard/sampled/after/level_7": 0.0,
           "hint_ratio/hard/mean": ratio if arm != "grpo" else 0.0}
      for when in ("before", "after"):
        d = shift + 0.1 * seed if when == "after" else 0.0
        s.update({f"exact/level_3/p_valid/{when}": 0.9, f"exact/level_3/first_line_logp/{when}": -0.1,
                  f"exact/level_7/p_valid/{when}": 1e-40, f"exact/level_7/first_line_logp/{when}": -60.0 + d})
      summaries.append(s)
  assert study.exact_tested_keys(summaries) == ["exact/level_3/p_valid/after", "exact/level_7/p_valid/after",
                                                "exact/level_7/first_line_logp/after"]
  text = "\n".join(study.exact_markdown(summaries, ["grpo", "ghpo"]))
  assert "| L7 first-line log p | GHPO 0.25/0.5/0.75 (primary) | 3 | +1 |" in text
  assert "Holm-corrected as a pair" in text
  assert "| GHPO 0.25/0.5/0.75 | 0.300 ± 0.000 | 0.300 | pass |" in text
  assert "L3 first-line log p" in text.splitlines()[4]  # shown in the table, not tested
