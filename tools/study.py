"""The embedded study: every arm at an equal budget of generated tokens, over several seeds.

    python tools/study.py --out runs/study --quick            # the quick preset (see QUICK below)
    python tools/study.py --out runs/study                    # the full study (its time: see below)
    python tools/study.py --out runs/study --arms grpo,ghpo --seeds 0,1,2,3,4
    python tools/study.py --out runs/study --report_only      # the table and plots from finished runs

Arms (jaxghpo/experiments/chains/arms.py, ARMS): GRPO (no hints), GRPO rewarded for a valid trace, DAPO-style filter,
GHPO (paper ladder 0.25/0.5/0.75), GHPO with the step ladder (one rung per remaining step), GHPO with
the hint as a response prefix, adaptive, annealed hints, UFT (annealed Binomial hint length + hint
NLL, response placement), and GHPO with corrupted hints (another problem's trace; shuffled steps;
every hint line but the last garbled). Each (arm, seed) is one run of
jaxghpo.train.run in OUT/ARM/seedS, in this process, one after another; a run that already finished
is skipped, an interrupted one resumes from its checkpoint. Compiled programs are kept in
OUT/.jax_cache, so only the first run pays for compilation.

Equal budget: every run stops once it has generated `budget_tokens` tokens (config.max_gen_tokens;
GHPO's retries are counted; the check is per step, so a run overshoots by less than one step), with
`max_steps` as a cap that should not bind (the table says when it did). Every arm's learning-rate
schedule runs over the same `max_steps`, so the rate at a given update does not depend on how many
updates the arm's budget buys. Evaluation is on the fixed evaluation set (evaluation.fixed_level_set):
the same problems for every arm and seed.

Statistics (jaxghpo/seed_stats.py): the seed, one training run, is the unit of replication. One
pre-declared primary comparison, unhinted valid pass@1 on the hard levels after training, GHPO minus
GRPO (PRIMARY_ARM, BASELINE); every other arm against GRPO is secondary. Each comparison is tested over
seeds: the paired t-interval (Welch when the arms' seeds differ) and an exact permutation test (sign
flips of the per-seed differences over all 2^n patterns; label permutations unpaired), both reported,
with Holm's correction across the secondary arms on each; the seed-level correlation of the two arms;
a power line (the difference detectable at 80% power from the observed SD of the per-seed differences,
and the seeds a 0.10 difference needs). No p-value is printed below 1/2^n for n seeds (a smaller t p
reads "< 1/2^n"). The paired bootstrap over seeds and problems stays as a within-run description of
problem-level uncertainty, without a p-value: it is not a test over seeds. Tables also give mean ±
95% t-interval over seeds per metric, per-seed paired differences, and the lowest seed per level.

    python tools/study.py --from_json docs/results/study/study.json --out docs/results/study

rewrites study.md from a finished study's study.json (no run directories needed; the plots and
study.json are left as they are, and a hand-written "## Provenance" section at the end of the old
study.md is kept).

Outputs in OUT: study.md (tables), study.json (every run's summary, the comparisons), and PNG plots:
study_hard_pass.png (hard valid pass@1 without hint against generated tokens; one point per
evaluation, mid-run ones with --eval_every), study_signal_yield.png, study_valid_signal_yield.png,
study_hint_ratio.png, study_shortcut.png. The same seeds give the same tables (runs are deterministic
on CPU); wall times are in a separate table because they are not.

Time on the 2-core development machine: one run of configs/default.py (120k generated tokens, two
evaluations of the fixed set at 32 problems x 4 samples per level) takes a few minutes; the full
study (10 arms x 5 seeds) is 50 such runs: estimate it from the tool's running estimate.
"""
from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import math
import os
import sys
import time
from typing import Any, Mapping, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from jaxghpo import report, seed_stats  # noqa: E402

from jaxghpo.experiments.chains import compare  # noqa: E402
from jaxghpo.experiments.chains.arms import ARM_LABELS, ARMS, arm_config, parse_arms, set_dotted  # noqa: E402,F401

BASELINE = "grpo"
# The one pre-declared primary comparison: unhinted valid pass@1 on the hard levels after training,
# this arm minus the baseline, at equal generated tokens (paired bootstrap over problems and seeds).
# Every other arm's difference to the baseline is secondary, with Holm's correction.
PRIMARY_ARM = "ghpo"
PRIMARY_SPLIT = "hard"
PRIMARY_KEY = f"valid_pass@1/{PRIMARY_SPLIT}/sampled/after"
POWER_DIFFERENCE = 0.10  # the power line gives the seeds needed to detect this difference
PROVENANCE = "## Provenance"  # a hand-written last section of study.md that --from_json keeps

# Presets: overrides of the base config file. `steps` is the nominal length (the budget and cap derive from it).
FULL = {"steps": None, "overrides": {"export_at_end": False}, "eval_every": None}
QUICK = {"steps": 10, "eval_every": 0,
         "overrides": {"export_at_end": False, "data.prompts_per_step": 8, "eval.num_problems": 8,
                       "eval.num_samples": 4}}

# The table's metrics: (key in the run summary, column label).
OUTCOMES = (("valid_pass@1/hard/sampled/before", "hard valid before"),
            ("valid_pass@1/hard/sampled/after", "hard valid after"),
            ("valid_pass@1/mid/sampled/after", "level 4 valid after"),
            ("valid_pass@1/easy/sampled/after", "easy valid after"),
            ("valid_pass@1/ood/sampled/after", "ood (longer) valid after"),
            ("valid_pass@1/ood_ops/sampled/after", "ood (rare offsets) valid after"),
            ("pass@1/hard/sampled/before", "hard before (avg@k)"),
            ("pass@1/hard/sampled/after", "hard after (avg@k)"),
            ("pass@1/hard/greedy/before", "hard before (greedy)"),
            ("pass@1/hard/greedy/after", "hard after (greedy)"),
            ("pass@1/easy/sampled/after", "easy after (avg@k)"),
            ("pass@1/ood/sampled/after", "ood after (avg@k)"))
PROCESS = (("signal_yield/hard/mean", "signal yield, hard"),
           ("signal_yield/valid_hard/mean", "valid signal yield, hard"),
           ("hint_ratio/all/mean", "mean hint ratio"),
           ("diag/shortcut/hard/hint0/sampled/after/shortcut_rate", "shortcut rate, hard"),
           ("diag/shortcut/hard/hint0/sampled/after/correct_shortcut_rate", "shortcuts among correct, hard"),
           ("diag/shortcut/hard/hint0/sampled/after/work_steps_mean", "steps written, hard"),
           ("gen_tokens", "generated tokens"),
           ("steps", "steps"))
PAIRED = (("valid_pass@1/hard/sampled/after", "hard valid"), ("valid_pass@1/easy/sampled/after", "easy valid"),
          ("pass@1/hard/sampled/after", "hard (avg@k)"), ("pass@1/hard/greedy/after", "hard (greedy)"),
          ("pass@1/easy/sampled/after", "easy (avg@k)"), ("pass@1/ood/sampled/after", "ood (avg@k)"))
COST = (("time/wall_s", "wall time per run (s)"), ("time/steps_s", "training steps (s)"))
COUNTS = {"gen_tokens", "steps", "time/wall_s", "time/steps_s"}
NEEDED = "diag/shortcut/hard/hint0/sampled/after/level_mean"  # steps the hard problems need, on average


# ------------------------------------------------------------------------------------ configs
def load_config(spec: str):
  """get_config() of a config file; "path.py:arg" passes arg (configs/default.py:mode=none)."""
  path, _, arg = spec.partition(":")
  if not os.path.exists(path) and os.path.exists(os.path.join(ROOT, path)):
    path = os.path.join(ROOT, path)  # configs/... relative to the repository, from any directory
  if not os.path.exists(path):
    raise FileNotFoundError(f"--config {spec!r}: no file {path}")
  module_spec = importlib.util.spec_from_file_location(f"study_config_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def get_dotted(config, key: str):
  node = config
  for part in key.split("."):
    if part not in node:
      raise KeyError(f"override {key!r}: config has no key {part!r}; known: {sorted(node.keys())}")
    node = node[part]
  return node


def parse_value(text: str, current=None):
  """A --set value for a key whose value is now `current`: the raw text for string keys, else a
  Python literal (1, 0.5, (0.25, 0.5), True, {"2": 1.0}), or the raw text when it is none."""
  if isinstance(current, str):
    return text
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def plan(args) -> tuple[list[tuple[str, int, Any]], dict]:
  """[(arm, seed, config)] of the study, and the study's settings (budget, cap, ...)."""
  preset = QUICK if args.quick else FULL
  base = load_config(args.config)
  steps = int(args.steps or preset["steps"] or base.num_steps)
  overrides = dict(preset["overrides"])
  if args.model:
    overrides["model.path"] = args.model
  for item in args.set or []:
    key, sep, value = item.partition("=")
    if not sep:
      raise ValueError(f"--set {item!r}: expected key=value (e.g. --set rl.learning_rate=1e-4)")
    overrides[key] = parse_value(value, get_dotted(base, key))
  for key, value in overrides.items():
    set_dotted(base, key, value)
  P, G = int(base.data.prompts_per_step), int(base.rollout.group_size)
  budget = int(args.budget_tokens or steps * P * G * int(base.rollout.max_new_tokens) // 4)
  max_steps = int(args.max_steps or 4 * steps)
  eval_every = args.eval_every if args.eval_every is not None else preset["eval_every"]
  eval_every = max(steps // 4, 1) if eval_every is None else int(eval_every)
  settings = {"config": args.config, "preset": "quick" if args.quick else "full", "steps": steps,
              "budget_tokens": budget, "max_steps": max_steps, "eval_every_steps": eval_every,
              "overrides": {k: v for k, v in overrides.items()}, "seeds": parse_ints(args.seeds),
              "arms": parse_arms(args.arms or base.get("arms", ()) or tuple(ARMS)),
              "baseline": BASELINE, "primary_arm": PRIMARY_ARM}
  runs = []
  for arm in settings["arms"]:
    for seed in settings["seeds"]:
      c = load_config(args.config)
      for key, value in overrides.items():
        set_dotted(c, key, value)
      c = arm_config(c, arm)  # the arm's overrides, no side-by-side arms: one run per (arm, seed)
      c.seed = int(seed)
      c.num_steps = max_steps  # the learning-rate schedule runs over the cap, the same for every arm
      c.max_gen_tokens = budget
      c.eval_every_steps = eval_every
      c.checkpoint_every_steps = min(int(c.checkpoint_every_steps), max_steps)
      c.curriculum.anneal_steps = steps  # the anneal arm decays over the nominal length, not the cap
      runs.append((arm, int(seed), c))
  return runs, settings


def set_comparison(baseline: str, primary: str) -> None:
  """Sets the baseline arm and the primary arm of every table and test (--baseline, --primary)."""
  global BASELINE, PRIMARY_ARM
  parse_arms(f"{baseline},{primary}")
  if baseline == primary:
    raise ValueError(f"--primary {primary!r} is the baseline: compare it with another arm")
  BASELINE, PRIMARY_ARM = baseline, primary


def parse_ints(text: str) -> list[int]:
  values = [int(x) for x in str(text).split(",") if x.strip()]
  if not values:
    raise ValueError(f"--seeds {text!r}: give at least one seed, e.g. 0,1,2")
  return values


# ------------------------------------------------------------------------------------ running
def run_dir(out: str, arm: str, seed: int) -> str:
  return os.path.join(out, arm, f"seed{seed}")


def _config_text(config) -> str:
  return config.to_json_best_effort(sort_keys=True, indent=1)


def run_state(workdir: str, config) -> str:
  """"done" (summary.json says complete), "finished" (metrics complete, report missing), "partial"
  (started: resume it) or "new". A workdir started with another config is an error."""
  marker = os.path.join(workdir, "study_run.json")
  if os.path.exists(marker):
    with open(marker, encoding="utf-8") as f:
      old = json.load(f)["config"]
    new = json.loads(_config_text(config))
    if old != new:
      diff = sorted(_diff_keys(old, new))
      raise ValueError(f"{workdir} holds a run of another configuration (differs in {diff[:8]}); "
                       "use another --out or delete that directory")
  summary_path = os.path.join(workdir, report.SUMMARY_JSON)
  if os.path.exists(summary_path):
    with open(summary_path, encoding="utf-8") as f:
      if json.load(f).get("complete"):
        return "done"
  if os.path.exists(os.path.join(workdir, "metrics.jsonl")):
    try:
      if report.summarize(workdir, config, with_diagnostics=False)["complete"]:
        return "finished"
    except (KeyError, ValueError, IndexError):
      pass
    return "partial"
  return "new"


def _diff_keys(a, b, prefix=""):
  if isinstance(a, dict) and isinstance(b, dict):
    for key in set(a) | set(b):
      yield from _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")
  elif a != b:
    yield prefix.rstrip(".")


def execute(runs, out: str, log=print) -> list[dict]:
  """Runs (or skips) every (arm, seed); returns each run's summary dict with arm and seed added."""
  from jaxghpo import train  # heavy: only when something may run
  summaries = []
  timings = []
  for i, (arm, seed, config) in enumerate(runs):
    workdir = run_dir(out, arm, seed)
    state = run_state(workdir, config)
    if state == "new":
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, "study_run.json"), "w", encoding="utf-8") as f:
        json.dump({"arm": arm, "seed": seed, "config": json.loads(_config_text(config))}, f, indent=1)
    if state in ("new", "partial"):
      resuming = " (resuming)" if state == "partial" else ""
      log(f"[study] run {i + 1}/{len(runs)}: {arm} seed {seed} -> {workdir}{resuming}")
      t0 = time.perf_counter()
      train.run(config, workdir)
      timings.append(time.perf_counter() - t0)
      left = sum(1 for a, s, c in runs[i + 1:] if run_state(run_dir(out, a, s), c) != "done")
      log(f"[study] {arm} seed {seed} took {report.fmt_seconds(timings[-1])}; "
          f"about {report.fmt_seconds(left * float(np.mean(timings)))} left for {left} runs")
    elif state == "finished":
      # The budget ended the run but its report is missing: rerunning train.run would train on.
      report.finish(workdir, config, console=False, is_main_process=True)
    else:
      log(f"[study] run {i + 1}/{len(runs)}: {arm} seed {seed} already finished, skipped")
    with open(os.path.join(workdir, report.SUMMARY_JSON), encoding="utf-8") as f:
      summaries.append({**json.load(f), "arm": arm, "seed": seed, "workdir": workdir})
  return summaries


# ------------------------------------------------------------------------------------ statistics
def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float | None, float | None, int]:
  """(mean, half-width of the two-sided t-interval, n) over the finite values; half-width None if n < 2."""
  x = np.asarray([v for v in values if v is not None and math.isfinite(float(v))], np.float64)
  if x.size == 0:
    return None, None, 0
  if x.size == 1:
    return float(x[0]), None, 1
  half = float(seed_stats.t_quantile(0.5 + confidence / 2, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
  return float(x.mean()), half, int(x.size)


def by_arm(summaries: Sequence[Mapping]) -> dict[str, list[Mapping]]:
  out: dict[str, list[Mapping]] = {}
  for s in summaries:
    out.setdefault(s["arm"], []).append(s)
  for runs in out.values():
    runs.sort(key=lambda s: s["seed"])
  return out


def cell(values, key: str) -> str:
  mean, half, n = t_interval(values)
  if mean is None:
    return "-"
  if key in COUNTS:
    text = f"{mean:,.0f}" + (f" ± {half:,.0f}" if half is not None else "")
  else:
    text = f"{mean:.3f}" + (f" ± {half:.3f}" if half is not None else "")
  return text


def aggregate(summaries: Sequence[Mapping]) -> dict[str, dict[str, dict]]:
  """{arm: {metric: {"mean", "ci95", "n", "values"}}} over the seeds, for study.json."""
  out = {}
  for arm, runs in by_arm(summaries).items():
    out[arm] = {}
    for key, _ in OUTCOMES + PROCESS + COST:
      values = [r.get(key) for r in runs]
      mean, half, n = t_interval(values)
      out[arm][key] = {"mean": mean, "ci95": half, "n": n, "values": values}
  return out


def paired_to_baseline(summaries: Sequence[Mapping], key: str, arm: str) -> list[float]:
  """Per seed, arm's value minus the baseline's (seeds both have)."""
  runs = by_arm(summaries)
  base = {s["seed"]: s.get(key) for s in runs.get(BASELINE, [])}
  return [s[key] - base[s["seed"]] for s in runs.get(arm, [])
          if s.get(key) is not None and base.get(s["seed"]) is not None]


def markdown(summaries: Sequence[Mapping], settings: Mapping, elapsed_s: float | None,
             problem_comparisons: Mapping[str, Mapping] | None = None) -> str:
  """study.md. problem_comparisons: the within-run bootstrap per arm (default: computed from the run
  directories; --from_json passes the one stored in study.json)."""
  runs = by_arm(summaries)
  arms = [a for a in settings["arms"] if a in runs]
  seeds = settings["seeds"]
  k = next((s.get("eval_k") for s in summaries if s.get("eval_k")), None)
  lines = ["# Study: GHPO and its neighbours at an equal budget of generated tokens", "",
           f"config `{settings['config']}` ({settings['preset']} preset), seeds {', '.join(map(str, seeds))}; "
           f"every run stops after {settings['budget_tokens']:,} generated tokens (retries included; cap "
           f"{settings['max_steps']} steps, schedules over {settings['steps']} steps). "
           f"Cells: mean ± half-width of the 95% t-interval over the {len(seeds)} seed{'s' if len(seeds) > 1 else ''} "
           "(no interval for one seed). "
           f"avg@k: mean accuracy of k={k or '-'} samples per problem at the evaluation temperature; greedy: "
           "temperature 0. All pass@1 numbers are without hints.", ""]
  if settings.get("overrides"):
    lines += ["Overrides: " + ", ".join(f"`{key}={value}`" for key, value in settings["overrides"].items()), ""]
  for title, metrics in (("pass@1 without hints (before training is the same base policy for every arm)", OUTCOMES),
                         ("Learning signal, hints, shortcuts and budget", PROCESS)):
    metrics = _present(metrics, summaries)
    lines += [f"## {title}", "", "| arm | " + " | ".join(label for _, label in metrics) + " |",
              "| --- | " + " | ".join("---:" for _ in metrics) + " |"]
    for arm in arms:
      lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(cell([r.get(key) for r in runs[arm]], key)
                                                          for key, _ in metrics) + " |")
    lines.append("")
  levels = level_keys(summaries)
  if levels:
    lines += ["## Per level: valid pass@1 without hints after training (ops: the operator-offset split)", "",
              "| arm | " + " | ".join(label for _, label in levels) + " |",
              "| --- | " + " | ".join("---:" for _ in levels) + " |",
              "| base policy (before) | " + " | ".join(
                  cell([s.get(key.replace("/after/", "/before/")) for s in summaries], key) for key, _ in levels) + " |"]
    for arm in arms:
      lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(cell([r.get(key) for r in runs[arm]], key)
                                                          for key, _ in levels) + " |")
    lines.append("")
    lines += ["## Per level: the lowest seed's valid pass@1 without hints after training (harm shows in single runs)", "",
              "| arm | " + " | ".join(label for _, label in levels) + " |",
              "| --- | " + " | ".join("---:" for _ in levels) + " |",
              "| base policy (before), lowest run | " + " | ".join(
                  _lowest([s.get(key.replace("/after/", "/before/")) for s in summaries], [s["seed"] for s in summaries])
                  for key, _ in levels) + " |"]
    for arm in arms:
      lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(
          _lowest([r.get(key) for r in runs[arm]], [r["seed"] for r in runs[arm]]) for key, _ in levels) + " |")
    lines.append("")
  needed = t_interval([s.get(NEEDED) for s in summaries])[0]
  if needed is not None:
    lines += [f"Shortcut rate: fraction of completions to hard problems (no hint, sampled, after training) that give "
              f"an answer after fewer steps than the problem needs ({needed:.2f} on average); shortcuts among "
              "correct: the same among correct completions; steps written: well-formed steps per completion.", ""]
  if BASELINE in runs and len(arms) > 1:
    paired = _present(PAIRED, summaries)
    lines += [f"## Difference to {ARM_LABELS[BASELINE]} after training, paired by seed", "",
              "| arm | " + " | ".join(label for _, label in paired) + " |",
              "| --- | " + " | ".join("---:" for _ in paired) + " |"]
    for arm in arms:
      if arm != BASELINE:
        lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(
            _signed(paired_to_baseline(summaries, key, arm)) for key, _ in paired) + " |")
    lines.append("")
    base_yield = t_interval([r.get("signal_yield/hard/mean") for r in runs[BASELINE]])[0]
    for arm in arms:
      arm_yield = t_interval([r.get("signal_yield/hard/mean") for r in runs[arm]])[0]
      if arm != BASELINE and arm_yield is not None and base_yield is not None:
        factor = (f"{arm_yield / base_yield:.1f}x" if base_yield > 0 else
                  "undefined (both 0)" if arm_yield == 0 else "unbounded (GRPO's is 0)")
        lines.append(f"- signal yield on hard groups, {ARM_LABELS[arm]} / {ARM_LABELS[BASELINE]}: {arm_yield:.3f} / {base_yield:.3f} "
                     f"= {factor}")
    lines.append("")
  lines += seed_tests_markdown(summaries, arms)
  lines += exact_markdown(summaries, arms)
  lines += within_run_markdown(summaries, arms, problem_comparisons)
  budget_hit = {arm: sum(1 for r in runs[arm] if (r.get("budget_spent", r.get("gen_tokens")) or 0) >= settings["budget_tokens"])
                for arm in arms}
  short = [f"{ARM_LABELS[a]} ({n}/{len(runs[a])})" for a, n in budget_hit.items() if n < len(runs[a])]
  if short:
    lines += [f"Runs that reached the step cap before the token budget: {', '.join(short)}.", ""]
  lines += ["## Cost (wall clock: not reproducible, unlike the tables above)", "",
            "| arm | " + " | ".join(label for _, label in COST) + " |",
            "| --- | " + " | ".join("---:" for _ in COST) + " |"]
  for arm in arms:
    lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(cell([r.get(key) for r in runs[arm]], key)
                                                        for key, _ in COST) + " |")
  if elapsed_s is not None:
    lines += ["", f"This invocation took {report.fmt_seconds(elapsed_s)} (runs already finished were skipped)."]
  lines += ["", "![hard pass@1 against generated tokens](study_hard_pass.png)",
            "![signal yield](study_signal_yield.png)", "![valid signal yield](study_valid_signal_yield.png)", "![hint ratio](study_hint_ratio.png)",
            "![shortcut rate](study_shortcut.png)", "![per level](study_levels.png)", ""]
  return "\n".join(lines)


holm = seed_stats.holm  # Holm-adjusted p-values (kept under this name for callers of the tool)


def comparisons(summaries: Sequence[Mapping], arms: Sequence[str]) -> dict[str, dict]:
  """{arm: paired bootstrap of its unhinted valid pass@1 on PRIMARY_SPLIT minus the baseline's},
  over the seeds both have and the fixed evaluation problems both evaluated: a within-run description
  of problem-level uncertainty (its p, kept in study.json, is not a test over seeds and is not printed)."""
  runs = by_arm(summaries)
  if BASELINE not in runs:
    return {}
  base = {r["seed"]: compare.per_problem_valid(r["workdir"], PRIMARY_SPLIT) for r in runs[BASELINE]}
  out = {}
  for arm in arms:
    if arm == BASELINE or arm not in runs:  # an arm without finished runs has nothing to compare
      continue
    a_rows, b_rows = [], []
    for r in runs[arm]:
      mine, theirs = compare.per_problem_valid(r["workdir"], PRIMARY_SPLIT), base.get(r["seed"])
      if mine and theirs and set(mine) == set(theirs):
        ids = sorted(mine)
        a_rows.append([theirs[i] for i in ids])
        b_rows.append([mine[i] for i in ids])
    if a_rows and len({len(r) for r in a_rows}) == 1:
      out[arm] = compare.paired_bootstrap(a_rows, b_rows)
  return out


def per_seed(summaries: Sequence[Mapping], arm: str, key: str = PRIMARY_KEY) -> dict[int, float]:
  """{seed: the arm's value of key} over its runs that have it."""
  return {r["seed"]: float(r[key]) for r in by_arm(summaries).get(arm, []) if r.get(key) is not None}


def seed_comparisons(summaries: Sequence[Mapping], arms: Sequence[str], key: str = PRIMARY_KEY) -> dict[str, dict]:
  """{arm: seed_stats.compare_seeds(baseline, arm)} on key, for every arm with at least 2 seeds (and the
  baseline's), paired on the seeds both have when they share at least 2; Holm across the secondary arms (all but PRIMARY_ARM) on the t p ("p_holm") and on the
  exact permutation p ("p_exact_holm")."""
  base_all = per_seed(summaries, BASELINE, key)
  out = {}
  for arm in arms:
    mine = per_seed(summaries, arm, key)
    # Paired on the seeds both arms have (an arm run on fewer seeds than the baseline keeps its pairing);
    # unpaired only when fewer than 2 seeds are shared.
    common = sorted(set(mine) & set(base_all))
    base = {s: base_all[s] for s in common} if len(common) >= 2 else base_all
    mine = {s: mine[s] for s in common} if len(common) >= 2 else mine
    if arm == BASELINE or len(mine) < 2 or len(base) < 2:
      continue
    out[arm] = seed_stats.compare_seeds(base, mine, power_difference=POWER_DIFFERENCE)
  secondary = [arm for arm in out if arm != PRIMARY_ARM]
  for field, adjusted in (("p_holm", holm({a: out[a]["p"] for a in secondary})),
                          ("p_exact_holm", holm({a: out[a]["p_exact"] for a in secondary}))):
    for arm, p in adjusted.items():
      out[arm][field] = p
  return out


def _corr(value) -> str:
  return "-" if value is None else f"{value:+.2f}"


def seed_tests_markdown(summaries: Sequence[Mapping], arms: Sequence[str]) -> list[str]:
  result = seed_comparisons(summaries, arms)
  if not result:
    return []
  n_max = max(r["n"] for r in result.values())
  lines = [f"## Unhinted valid pass@1 on the {PRIMARY_SPLIT} levels after training, minus {ARM_LABELS[BASELINE]}: "
           "tests over seeds", "",
           f"The seed (one training run) is the unit of replication. Primary comparison (declared before running): "
           f"{ARM_LABELS[PRIMARY_ARM]} vs {ARM_LABELS[BASELINE]}; the other arms are secondary, Holm-corrected "
           "across them. Difference: mean over seeds of the per-seed difference; 95% paired t-interval and two-sided "
           "t p (Welch when the arms' seeds differ); exact p: two-sided sign-flip test over all 2^n sign patterns of "
           "the per-seed differences (label permutations when unpaired), whose smallest possible value at n seeds "
           f"is 2/2^n ({seed_stats.format_p(seed_stats.sign_flip_floor(n_max), 0.0)} at {n_max}). No p-value is "
           f"printed below 1/2^n ({seed_stats.format_p(seed_stats.p_floor(n_max), 0.0)} at {n_max} seeds; unpaired: "
           "1 over the number of label splits): a smaller t p rests on the normal model alone and reads "
           "\"< 1/2^n\". r: seed-level correlation of the two "
           "arms' values (what pairing by seed buys). Detectable: the difference the paired t-test detects with 80% "
           "power (two-sided 0.05) at the observed SD of the per-seed differences; seeds: those a "
           f"{POWER_DIFFERENCE:.2f} difference needs at that SD.", "",
           "| arm | seeds | difference | 95% t-interval | t p | exact p | t p (Holm) | exact p (Holm) | r | "
           f"detectable (80%) | seeds for {POWER_DIFFERENCE:.2f} |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
  for arm in arms:
    if arm not in result:
      continue
    r = result[arm]
    n, floor = r["n"], r["p_print_floor"]
    primary = arm == PRIMARY_ARM
    seeds = f"{n} paired" if r["paired"] else f"{r['n_a']} + {r['n_b']} unpaired"
    need = r["seeds_for_difference"]
    lines.append(f"| {ARM_LABELS[arm]}{' (primary)' if primary else ''} | {seeds} | {r['diff']:+.3f} "
                 f"| [{r['low']:+.3f}, {r['high']:+.3f}] | {seed_stats.format_p(r['p'], floor)} "
                 f"| {seed_stats.format_p(r['p_exact'], floor)} "
                 f"| {'-' if primary else seed_stats.format_p(r.get('p_holm'), floor)} "
                 f"| {'-' if primary else seed_stats.format_p(r.get('p_exact_holm'), floor)} | {_corr(r['correlation'])} "
                 f"| {r['detectable_80']:.3f} | {need if need is not None else '> 10000'} |")
  lines.append("")
  if PRIMARY_ARM in result:
    r = result[PRIMARY_ARM]
    need = r["seeds_for_difference"]
    lines += [f"Power (primary): with {r['n']} seeds and the observed SD of the per-seed differences "
              f"({r['sd_difference']:.3f}), the {'paired' if r['paired'] else 'two-sample'} t-test (two-sided 0.05) "
              f"detects a difference of {r['detectable_80']:.3f} with 80% power; a {POWER_DIFFERENCE:.2f} difference "
              f"needs {need if need is not None else 'more than 10000'} seeds. Per-seed "
              f"{ARM_LABELS[PRIMARY_ARM]} minus {ARM_LABELS[BASELINE]}: "
              + ", ".join(f"{d:+.3f}" for d in r.get("per_seed", [])) + ".", ""]
  return lines


# Exact teacher-forced measures (the task's exact sets; jaxghpo/evaluation/exact.py): summary keys
# exact/level_L/<metric>/{before,after}. The levels of the primary split get every metric tested over seeds;
# the others their p_valid (the expected unhinted valid pass@1 of that level, without sampling noise).
EXACT_LABELS = {"p_valid": "exact valid p", "trace_logp": "trace log p", "first_line_logp": "first-line log p",
                "p_rest_given_line1": "exact p, 1-line hint"}
MANIPULATION_KEY, MANIPULATION_MIN = "hint_ratio/hard/mean", 0.2  # frontier (E1): hint ratio of trained hard groups


def _exact_keys(summaries: Sequence[Mapping], when: str = "after") -> list[tuple[int, str, str]]:
  """(level, metric, key) of the exact measures present, by level then metric."""
  found = set()
  for s in summaries:
    for key in s:
      parts = key.split("/")
      if len(parts) == 4 and parts[0] == "exact" and parts[3] == when and parts[1].startswith("level_"):
        found.add((int(parts[1][len("level_"):]), parts[2], key))
  order = list(EXACT_LABELS)
  return sorted(found, key=lambda t: (t[0], order.index(t[1]) if t[1] in order else len(order), t[1]))


def exact_tested_keys(summaries: Sequence[Mapping]) -> list[str]:
  """The exact keys tested over seeds: every metric of the primary split's levels, p_valid of the others."""
  hard = {int(s["hard_level"]) for s in summaries if s.get("hard_level") is not None}
  if not hard:  # the hard split's levels from the per-level keys of the primary metric
    hard = {int(k.rsplit("_", 1)[1]) for s in summaries for k in s if k.startswith(PRIMARY_KEY + "/level_")}
  return [key for level, metric, key in _exact_keys(summaries) if level in hard or metric == "p_valid"]


def exact_markdown(summaries: Sequence[Mapping], arms: Sequence[str]) -> list[str]:
  """Tables of the exact measures (mean ± t half-width over seeds), their tests over seeds against the
  baseline (seed_comparisons on each key: t-interval, t p, exact sign-flip p, Holm across the secondary
  arms), the primary arm's co-primaries Holm-corrected as a pair, and the manipulation check."""
  keys = _exact_keys(summaries)
  if not keys:
    return []
  runs = by_arm(summaries)
  fmt = lambda v, key: cell(v, key)  # noqa: E731
  lines = ["## Exact measures (teacher-forced, no sampling noise)", "",
           "Per level L: exact valid p = mean over the fixed test problems of the probability of the unique valid "
           "trace (the expected unhinted valid pass@1); trace log p = mean log-probability of that trace; first-line "
           "log p = mean log-probability of its first line; exact p, 1-line hint = the expected valid pass@1 after a "
           "one-line hint placed as the start of the response.", "",
           "| arm | " + " | ".join(f"L{lv} {EXACT_LABELS.get(m, m)}" for lv, m, _ in keys) + " |",
           "| --- | " + " | ".join("---:" for _ in keys) + " |",
           "| base policy (before) | " + " | ".join(fmt([s.get(k.replace("/after", "/before")) for s in summaries], k)
                                                  for _, _, k in keys) + " |"]
  for arm in arms:
    if arm in runs:
      lines.append(f"| {ARM_LABELS[arm]} | " + " | ".join(fmt([r.get(k) for r in runs[arm]], k) for _, _, k in keys)
                   + " |")
  lines.append("")
  tested = exact_tested_keys(summaries)
  labels = {k: f"L{lv} {EXACT_LABELS.get(m, m)}" for lv, m, k in keys}
  results = {key: seed_comparisons(summaries, arms, key) for key in tested}
  if any(results.values()):
    lines += [f"Tests over seeds against {ARM_LABELS[BASELINE]} (per-seed differences; t-interval, t p, exact sign-flip "
              "p; Holm across the secondary arms on each measure):", "",
              "| measure | arm | seeds | difference | 95% t-interval | t p | exact p | exact p (Holm) | r |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for key in tested:
      for arm in arms:
        r = results[key].get(arm)
        if r is None:
          continue
        floor, primary = r["p_print_floor"], arm == PRIMARY_ARM
        lines.append(f"| {labels[key]} | {ARM_LABELS[arm]}{' (primary)' if primary else ''} | {r['n']} | {r['diff']:+.4g} "
                     f"| [{r['low']:+.4g}, {r['high']:+.4g}] | {seed_stats.format_p(r['p'], floor)} "
                     f"| {seed_stats.format_p(r['p_exact'], floor)} "
                     f"| {'-' if primary else seed_stats.format_p(r.get('p_exact_holm'), floor)} "
                     f"| {_corr(r['correlation'])} |")
    lines.append("")
    # The co-primaries: p_valid and first_line_logp of the level(s) that have a first-line measure in the tests.
    firsts = [k for k in tested if "/first_line_logp/" in k]
    co = {k: results[k][PRIMARY_ARM] for first in firsts for k in (first.replace("/first_line_logp/", "/p_valid/"), first)
          if PRIMARY_ARM in results.get(k, {})}
    if len(co) == 2:
      t_holm, e_holm = (holm({k: v[f] for k, v in co.items()}) for f in ("p", "p_exact"))
      floor = min(v["p_print_floor"] for v in co.values())
      lines += [f"Co-primaries ({ARM_LABELS[PRIMARY_ARM]} minus {ARM_LABELS[BASELINE]}), Holm-corrected as a pair: "
                + "; ".join(f"{labels[k]} {co[k]['diff']:+.4g}, t p (Holm) {seed_stats.format_p(t_holm[k], floor)}, "
                            f"exact p (Holm) {seed_stats.format_p(e_holm[k], floor)}" for k in co) + ".", ""]
  checks = [(arm, t_interval([r.get(MANIPULATION_KEY) for r in runs[arm]])) for arm in arms
            if arm in runs and arm != BASELINE]
  checks = [(arm, stat) for arm, stat in checks if stat[0] is not None]
  if checks:
    lines += [f"Manipulation check: mean hint ratio of the trained hard groups (`{MANIPULATION_KEY}`), pass when the "
              f"lowest seed is > {MANIPULATION_MIN}:", "", "| arm | mean ± t | lowest seed | check |",
              "| --- | ---: | ---: | --- |"]
    for arm, (mean, half, _) in checks:
      low = min(r.get(MANIPULATION_KEY) for r in runs[arm] if r.get(MANIPULATION_KEY) is not None)
      lines.append(f"| {ARM_LABELS[arm]} | {mean:.3f}{f' ± {half:.3f}' if half is not None else ''} | {low:.3f} "
                   f"| {'pass' if low > MANIPULATION_MIN else 'FAIL'} |")
    lines.append("")
  return lines


def within_run_markdown(summaries: Sequence[Mapping], arms: Sequence[str],
                        problem_comparisons: Mapping[str, Mapping] | None = None) -> list[str]:
  """The paired bootstrap over seeds and problems: a description of problem-level uncertainty, no p-value."""
  result = comparisons(summaries, arms) if problem_comparisons is None else problem_comparisons
  if not result:
    return []
  lines = ["## Within-run description (problems), not a test over seeds", "",
           "Paired bootstrap over the seeds and the fixed evaluation problems (95% interval) of the same difference. "
           "It describes how precisely the evaluation measures these runs; it is not a test over seeds (with few "
           "seeds it is narrower than the t-interval, and its p would be 0 whenever every seed agrees), so no "
           "p-value is given.", "",
           "| arm | difference | 95% interval (seeds, problems) | seeds x problems |",
           "| --- | ---: | ---: | ---: |"]
  for arm in arms:
    if arm in result:
      r = result[arm]
      tag = " (primary)" if arm == PRIMARY_ARM else ""
      lines.append(f"| {ARM_LABELS[arm]}{tag} | {r['diff']:+.3f} | [{r['low']:+.3f}, {r['high']:+.3f}] "
                   f"| {r['seeds']} x {r['problems']} |")
  return lines + [""]


def _present(metrics, summaries):
  """The metrics some run has a value for (a split or greedy decoding the config does not evaluate is left out)."""
  return tuple((key, label) for key, label in metrics if any(s.get(key) is not None for s in summaries))


def level_keys(summaries: Sequence[Mapping], when: str = "after") -> list[tuple[str, str]]:
  """(summary key, column label) of valid pass@1 (answer pass@1 where no run has a trace checker) per level
  of every evaluated split, in level order, the operator-offset split last ("ops L3")."""
  metric = "valid_pass@1" if any(k.startswith("valid_pass@1/") for s in summaries for k in s) else "pass@1"
  found = {}
  for s in summaries:
    for key in s:
      parts = key.split("/")
      if (len(parts) == 5 and parts[0] == metric and parts[2] == "sampled" and parts[3] == when
              and parts[4].startswith("level_")):
        level = int(parts[4][len("level_"):])
        found[key] = ((parts[1] == "ood_ops", level), f"{'ops ' if parts[1] == 'ood_ops' else ''}L{level}")
  return [(key, label) for key, (_, label) in sorted(found.items(), key=lambda kv: kv[1][0])]


def _lowest(values, seeds) -> str:
  """The lowest value and its seed ("0.805 (s3)")."""
  pairs = [(float(v), s) for v, s in zip(values, seeds) if v is not None and math.isfinite(float(v))]
  if not pairs:
    return "-"
  value, seed = min(pairs, key=lambda p: p[0])
  return f"{value:.3f} (s{seed})"


def _signed(values) -> str:
  mean, half, n = t_interval(values)
  if mean is None:
    return "-"
  return f"{mean:+.3f}" + (f" ± {half:.3f}" if half is not None else "")


# ------------------------------------------------------------------------------------ plots
def _mean_curve(curves: Sequence[tuple[np.ndarray, np.ndarray]], points: int = 60):
  """Mean (and min, max) of several (x, y) curves on a common x grid over their shared x range."""
  curves = [(np.asarray(x, float), np.asarray(y, float)) for x, y in curves if len(x) > 0]
  if not curves:
    return None
  lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
  if hi <= lo:
    return None
  grid = np.linspace(lo, hi, points)
  ys = np.stack([np.interp(grid, x, y) for x, y in curves])
  return grid, ys.mean(0), ys.min(0), ys.max(0)


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
  if y.size < window or window < 2:
    return y
  kernel = np.ones(window) / window
  padded = np.concatenate([np.full(window - 1, y[0]), y])
  return np.convolve(padded, kernel, mode="valid")


def plots(out: str, summaries: Sequence[Mapping], settings: Mapping) -> list[str]:
  """The study's PNG plots; returns their paths."""
  import matplotlib
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  runs = by_arm(summaries)
  arms = [a for a in settings["arms"] if a in runs]
  # One colour per arm of this study (ARMS has more arms than a 10-colour cycle; up to 20 stay distinct).
  palette = [f"C{i}" for i in range(10)] if len(arms) <= 10 else list(matplotlib.colormaps["tab20"].colors)
  colors = {arm: palette[i % len(palette)] for i, arm in enumerate(arms)}
  metrics = {(arm, r["seed"]): report.read_metrics(r["workdir"]) for arm in arms for r in runs[arm]}
  paths = []

  def new_fig(title, xlabel, ylabel, size=(7, 4.2)):
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax

  def save(fig, ax, name):
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = os.path.join(out, name)
    fig.savefig(path, dpi=100)
    paths.append(path)

  # Hard pass@1 (no hint, sampled) at each evaluation against generated tokens.
  fig, ax = new_fig("hard problems, valid pass@1 without hint (answer pass@1 for tasks without a checker)",
                    "generated tokens (retries included)", "valid pass@1")
  for arm in arms:
    curves = []
    for r in runs[arm]:
      pts = (report.eval_curve(metrics[(arm, r["seed"])], "hard", "sampled", "valid_pass@1")
             or report.eval_curve(metrics[(arm, r["seed"])], "hard", "sampled"))
      if pts:
        x, y = np.array([p[1] for p in pts]), np.array([p[2] for p in pts])
        ax.plot(x, y, color=colors[arm], alpha=0.35, linewidth=0.8, marker=".")
        curves.append((x, y))
    mean = _mean_curve(curves)
    if mean is not None:
      ax.plot(mean[0], mean[1], color=colors[arm], linewidth=2, label=ARM_LABELS[arm])
  save(fig, ax, "study_hard_pass.png")

  for key, name, title in (("frac_groups_nonzero_adv/hard", "study_signal_yield.png",
                            "learning-signal yield on hard groups (fraction with non-zero advantage)"),
                           ("frac_groups_valid_signal/hard", "study_valid_signal_yield.png",
                            "hard groups with non-zero advantage AND a valid success"),
                           ("hint_ratio_mean", "study_hint_ratio.png", "mean hint ratio of the trained groups")):
    fig, ax = new_fig(title, "generated tokens (retries included)", key)
    for arm in arms:
      curves = []
      for r in runs[arm]:
        rows = [row for row in metrics[(arm, r["seed"])] if int(row["step"]) >= 1
                and isinstance(row.get(key), (int, float)) and isinstance(row.get("gen_tokens_total"), (int, float))]
        if rows:
          x = np.array([row["gen_tokens_total"] for row in rows], float)
          curves.append((x, _smooth(np.array([row[key] for row in rows], float), 5)))
      mean = _mean_curve(curves)
      if mean is not None:
        ax.plot(mean[0], mean[1], color=colors[arm], linewidth=2, label=ARM_LABELS[arm])
        ax.fill_between(mean[0], mean[2], mean[3], color=colors[arm], alpha=0.12)
    ax.set_ylim(-0.03, 1.03)
    save(fig, ax, name)

  # Shortcut rate on hard problems before and after, per arm.
  fig, ax = new_fig("hard problems, no hint, sampled: answered with fewer steps than needed",
                    "", "shortcut rate (fraction of completions)")
  top = 0.05
  xs = np.arange(len(arms))
  for offset, when, hatch in ((-0.2, "before", "//"), (0.2, "after", None)):
    key = f"diag/shortcut/hard/hint0/sampled/{when}/shortcut_rate"
    stats = [t_interval([r.get(key) for r in runs[arm]]) for arm in arms]
    means = [m if m is not None else 0.0 for m, _, _ in stats]
    errs = [h if h is not None else 0.0 for _, h, _ in stats]
    ax.bar(xs + offset, means, width=0.4, yerr=errs, color=[colors[a] for a in arms], hatch=hatch,
           alpha=0.5 if when == "before" else 0.9, label=when, capsize=3)
    top = max([top] + [m + e for m, e in zip(means, errs)])
  ax.set_ylim(0.0, min(1.0, top * 1.1))  # a rate: intervals of few seeds may reach past [0, 1]
  ax.set_xticks(xs)
  ax.set_xticklabels([ARM_LABELS[a] for a in arms], rotation=20, ha="right", fontsize=7)
  save(fig, ax, "study_shortcut.png")

  # Valid pass@1 per level after training (mean over seeds), the base policy dashed.
  levels = level_keys(summaries)
  if levels:
    fig, ax = new_fig("valid pass@1 without hint, per level, after training (mean over seeds)", "level",
                      "valid pass@1", size=(8, 4.2))
    xs = np.arange(len(levels))
    base = [t_interval([s.get(key.replace("/after/", "/before/")) for s in summaries])[0] for key, _ in levels]
    ax.plot(xs, [np.nan if b is None else b for b in base], "k--", marker="o", label="base policy (before)")
    for arm in arms:
      means = [t_interval([r.get(key) for r in runs[arm]])[0] for key, _ in levels]
      ax.plot(xs, [np.nan if m is None else m for m in means], color=colors[arm], marker=".", label=ARM_LABELS[arm])
    ax.set_xticks(xs)
    ax.set_xticklabels([label for _, label in levels], fontsize=8)
    ax.set_ylim(-0.03, 1.03)
    save(fig, ax, "study_levels.png")
  return paths


# ------------------------------------------------------------------------------------ main
def write_outputs(out: str, summaries: Sequence[Mapping], settings: Mapping, elapsed_s: float | None) -> str:
  path = os.path.join(out, "study.md")
  with open(path, "w", encoding="utf-8") as f:
    f.write(markdown(summaries, settings, elapsed_s))
  with open(os.path.join(out, "study.json"), "w", encoding="utf-8") as f:
    json.dump(report._jsonable({"settings": settings, "aggregate": aggregate(summaries),
                                "comparisons": comparisons(summaries, settings["arms"]),
                                "seed_comparisons": seed_comparisons(summaries, settings["arms"]),
                                "exact_seed_comparisons": {key: seed_comparisons(summaries, settings["arms"], key)
                                                           for key in exact_tested_keys(summaries)},
                                "runs": [dict(s) for s in summaries]}), f, indent=1, sort_keys=True)
  plots(out, summaries, settings)
  return path


def write_from_json(path: str, out: str) -> str:
  """study.md in out, rewritten from a finished study's study.json (its runs' summaries and its stored
  within-run bootstrap); a "## Provenance" section at the end of the existing study.md is kept."""
  with open(path, encoding="utf-8") as f:
    study = json.load(f)
  for field in ("settings", "runs", "comparisons"):
    if field not in study:
      raise KeyError(f"{path}: no {field!r}; --from_json needs a study.json written by tools/study.py")
  settings = study["settings"]
  set_comparison(settings.get("baseline", "grpo"), settings.get("primary_arm", "ghpo"))
  md_path = os.path.join(out, "study.md")
  provenance = ""
  if os.path.exists(md_path):
    with open(md_path, encoding="utf-8") as f:
      old = f.read()
    if PROVENANCE in old:
      provenance = old[old.index(PROVENANCE):]
  text = markdown(study["runs"], study["settings"], None, problem_comparisons=study["comparisons"])
  with open(md_path, "w", encoding="utf-8") as f:
    f.write(text + ("\n" + provenance if provenance else ""))
  return md_path


def main(argv: Sequence[str] | None = None) -> str:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True, help="study directory: one workdir per arm and seed, study.md, plots")
  p.add_argument("--config", default="configs/default.py", help="base config file (path[:arg])")
  p.add_argument("--model", default="", help="override config.model.path (an HF directory or builtin:NAME)")
  p.add_argument("--arms", default="", help=f"comma-separated subset of {list(ARMS)} (default: the config's "
                 "config.arms, e.g. configs/frontier.py's six; every arm when the config names none)")
  p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated seeds (at least 5 for the study's power)")
  p.add_argument("--quick", action="store_true", help=f"small preset (about 15 minutes on 2 cores): {QUICK}")
  p.add_argument("--steps", type=int, default=0, help="nominal run length in steps (default: preset / config)")
  p.add_argument("--budget_tokens", type=int, default=0, help="generated tokens per run (default: see above)")
  p.add_argument("--max_steps", type=int, default=0, help="step cap per run (default 4 x steps)")
  p.add_argument("--eval_every", type=int, default=None, help="evaluate every N steps (0: before and after only)")
  p.add_argument("--set", action="append", help="config override key=value (repeatable)")
  p.add_argument("--compile_cache", default="<out>/.jax_cache",
                 help="persistent JAX compilation cache directory ('' to disable)")
  p.add_argument("--report_only", action="store_true", help="write the tables and plots from finished runs")
  p.add_argument("--from_json", default="", help="rewrite OUT/study.md from this study.json (nothing runs)")
  p.add_argument("--baseline", default=BASELINE, help="the arm every other arm is compared with")
  p.add_argument("--primary", default=PRIMARY_ARM, help="the arm of the one pre-declared primary comparison")
  args = p.parse_args(argv)
  set_comparison(args.baseline, args.primary)
  if args.from_json:
    path = write_from_json(args.from_json, args.out)
    print(f"[study] {path} written from {args.from_json}", flush=True)
    return path

  t0 = time.perf_counter()
  os.makedirs(args.out, exist_ok=True)
  if args.compile_cache:
    import jax
    cache = args.compile_cache.replace("<out>", args.out)
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  runs, settings = plan(args)
  print(f"[study] {len(settings['arms'])} arms x {len(settings['seeds'])} seeds = {len(runs)} runs; budget "
        f"{settings['budget_tokens']:,} generated tokens per run (cap {settings['max_steps']} steps) -> {args.out}",
        flush=True)
  if args.report_only:
    summaries = []
    for arm, seed, config in runs:
      path = os.path.join(run_dir(args.out, arm, seed), report.SUMMARY_JSON)
      if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
          summaries.append({**json.load(f), "arm": arm, "seed": seed, "workdir": run_dir(args.out, arm, seed)})
  else:
    summaries = execute(runs, args.out, log=lambda m: print(m, flush=True))
  path = write_outputs(args.out, summaries, settings, time.perf_counter() - t0)
  print(f"[study] {path} written ({report.fmt_seconds(time.perf_counter() - t0)})", flush=True)
  return path


if __name__ == "__main__":
  main()
