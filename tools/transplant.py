"""The transplant test (E2, README "Mechanism test (E2)"): does an early hinted phase cause the late drop?

Phase 1 trains each --first arm (GHPO, GRPO) from the base policy to --first_tokens generated tokens and
exports it. Phase 2 continues every export with the --then arm (plain GRPO) to --total_tokens in all (a
new run from the export: fresh optimizer and warm-up, the same for every phase-1 arm). If the
GHPO-started runs end with more miscopied tails (right answers whose trace miscopies the tail of
remaining operations: tools/trace_errors.py) than the GRPO-started ones, the early hinted phase caused
them, since the late phase was plain GRPO in both.

    python tools/transplant.py --out runs/transplant --seeds 0,1,2,3,4,5,6,7 \
        --set eval.num_problems=64 --set eval.sample_before=False
    python tools/transplant.py --out runs/transplant --seeds 0,...,7 --report_only   # the tables only

Layout: OUT/first/ARM/seedS (phase 1, with its export), OUT/then/ARM/seedS (phase 2 started from
OUT/first/ARM/seedS/export; ARM names the phase-1 arm). Finished runs are skipped, interrupted ones
resume (tools/study.py's runner). Outputs: OUT/transplant.md and OUT/transplant.json: per phase-1 arm,
after phase 1 and after phase 2, hard (levels 5-6) valid pass@1 and the share of hard completions with
a miscopied tail, and the paired tests over seeds of GHPO-started minus GRPO-started
(jaxghpo/seed_stats.py: t-interval and exact sign flip; no p below 1/2^n).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from typing import Mapping, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import study  # noqa: E402
import trace_errors  # noqa: E402

from jaxghpo import report, seed_stats  # noqa: E402
from jaxghpo.experiments.chains.arms import arm_config, parse_arms, set_dotted  # noqa: E402

SPLIT = "hard"
VALID_KEY = f"valid_pass@1/{SPLIT}/sampled/after"
METRICS = ("valid", "tail_share")  # per run: hard valid pass@1, share of hard completions with a miscopied tail
PRIMARY = "tail_share"  # pre-declared (README): GHPO-started minus GRPO-started, after phase 2


def run_config(args, arm: str, seed: int, budget: int, model_path: str = ""):
  """The config of one run: --config, the --set overrides, the arm, the seed and the token budget."""
  c = study.load_config(args.config)
  for item in args.set or []:
    key, _, value = item.partition("=")
    set_dotted(c, key, study.parse_value(value, study.get_dotted(c, key)))
  c = arm_config(c, arm)
  if model_path:
    c.model.path = model_path
  c.seed = int(seed)
  c.num_steps = int(args.max_steps)  # the learning-rate schedule runs over the cap in both phases
  c.max_gen_tokens = int(budget)
  c.eval_every_steps = 0
  c.export_at_end = True
  c.checkpoint_every_steps = min(int(c.checkpoint_every_steps), int(args.max_steps))
  return c


def plan(args) -> tuple[list, list]:
  """([(arm, seed, config)] of phase 1, [(phase-1 arm, seed, config)] of phase 2)."""
  first_arms, seeds = parse_arms(args.first), study.parse_ints(args.seeds)
  parse_arms(args.then)
  if not 0 < args.first_tokens < args.total_tokens:
    raise ValueError(f"--first_tokens {args.first_tokens} must lie in (0, --total_tokens {args.total_tokens})")
  phase1 = [(arm, seed, run_config(args, arm, seed, args.first_tokens)) for arm in first_arms for seed in seeds]
  phase2 = [(arm, seed, run_config(args, args.then, seed, args.total_tokens - args.first_tokens,
                                   os.path.abspath(os.path.join(study.run_dir(os.path.join(args.out, "first"),
                                                                              arm, seed), "export"))))
            for arm in first_arms for seed in seeds]
  return phase1, phase2


def run_metrics(workdir: str) -> dict[str, float]:
  """Hard valid pass@1 (from the run's summary) and the tail share of its last sampled hard evaluation."""
  with open(os.path.join(workdir, report.SUMMARY_JSON), encoding="utf-8") as f:
    summary = json.load(f)
  files = trace_errors.after_training_files(workdir, SPLIT)
  if not files:
    raise FileNotFoundError(f"{workdir}: no sampled {SPLIT} evaluation after training")
  kinds = collections.Counter()
  completions, _ = trace_errors.classify(files[0], kinds)
  return {"valid": float(summary[VALID_KEY]), "tail_share": kinds["tail"] / max(completions, 1),
          "hint_ratio": float(summary.get("hint_ratio/all/mean", 0.0)), "steps": float(summary["steps"]),
          "gen_tokens": float(summary["gen_tokens"])}


def analyse(out: str, first_arms: Sequence[str], seeds: Sequence[int]) -> dict:
  """{phase: {arm: {seed: metrics}}} and the paired tests of the first arm minus the second per phase."""
  table: dict = {}
  for phase in ("first", "then"):
    table[phase] = {arm: {s: run_metrics(study.run_dir(os.path.join(out, phase), arm, s)) for s in seeds
                          if os.path.exists(os.path.join(study.run_dir(os.path.join(out, phase), arm, s),
                                                         report.SUMMARY_JSON))} for arm in first_arms}
  treated, control = first_arms[0], first_arms[-1]
  tests = {}
  for phase in ("first", "then"):
    for metric in METRICS:
      a = {s: m[metric] for s, m in table[phase][control].items()}
      b = {s: m[metric] for s, m in table[phase][treated].items()}
      if len(a) >= 2 and len(b) >= 2:
        tests[f"{phase}/{metric}"] = seed_stats.compare_seeds(a, b)
  return {"runs": table, "tests": tests, "treated": treated, "control": control}


def markdown(result: Mapping, settings: Mapping) -> str:
  treated, control = result["treated"], result["control"]
  lines = [f"# Transplant test: {treated}- and {control}-started runs continued by {settings['then']}", "",
           f"Phase 1: each arm from the base policy to {settings['first_tokens']:,} generated tokens. Phase 2: "
           f"`{settings['then']}` from each phase-1 export to {settings['total_tokens']:,} tokens in all. Seeds "
           f"{settings['seeds']}. Hard = levels {SPLIT} (5-6), unhinted, sampled. Tail share = share of hard "
           "completions whose answer is right and whose first wrong line miscopies the tail of operations.", "",
           "| phase | started as | seeds | hard valid pass@1 | tail share | mean hint ratio | steps |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
  for phase in ("first", "then"):
    for arm, by_seed in result["runs"][phase].items():
      vals = list(by_seed.values())
      cells = [study.cell([v[k] for v in vals], k) for k in ("valid", "tail_share", "hint_ratio", "steps")]
      lines.append(f"| {'1' if phase == 'first' else '2'} | {arm} | {len(vals)} | " + " | ".join(cells) + " |")
  lines += ["", f"Paired by seed, {treated}-started minus {control}-started (t-interval over seeds; p: paired t / "
            "exact sign flip, none printed below 1/2^n):", "",
            "| phase | metric | difference [95% t-interval] | p: t / exact | per seed | r | detectable at 80% |",
            "| --- | --- | ---: | ---: | --- | ---: | ---: |"]
  for name, t in result["tests"].items():
    phase, metric = name.split("/")
    floor = t["p_print_floor"]
    tag = " (primary)" if phase == "then" and metric == PRIMARY else ""
    r = "" if t.get("correlation") is None else f"{t['correlation']:+.2f}"
    lines.append(f"| {'1' if phase == 'first' else '2'} | {metric}{tag} | {t['diff']:+.3f} "
                 f"[{t['low']:+.3f}, {t['high']:+.3f}] | {seed_stats.format_p(t['p'], floor)} / "
                 f"{seed_stats.format_p(t['p_exact'], floor)} | "
                 + ", ".join(f"{d:+.3f}" for d in t.get("per_seed", [])) + f" | {r} | {t['detectable_80']:.3f} |")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--out", required=True)
  p.add_argument("--config", default="configs/default.py")
  p.add_argument("--first", default="ghpo,grpo", help="phase-1 arms: the treated arm first, the control last")
  p.add_argument("--then", default="grpo", help="the phase-2 arm")
  p.add_argument("--seeds", default="0,1,2,3,4,5,6,7")
  p.add_argument("--first_tokens", type=int, default=60_000)
  p.add_argument("--total_tokens", type=int, default=120_000)
  p.add_argument("--max_steps", type=int, default=400)
  p.add_argument("--set", action="append", help="config override key=value (repeatable), both phases")
  p.add_argument("--report_only", action="store_true")
  args = p.parse_args(argv)
  t0 = time.perf_counter()
  os.makedirs(args.out, exist_ok=True)
  import jax  # noqa: PLC0415
  jax.config.update("jax_compilation_cache_dir", os.path.abspath(os.path.join(args.out, ".jax_cache")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  phase1, phase2 = plan(args)
  if not args.report_only:
    log = lambda m: print(m, flush=True)  # noqa: E731
    study.execute(phase1, os.path.join(args.out, "first"), log=log)
    study.execute(phase2, os.path.join(args.out, "then"), log=log)
  settings = {"config": args.config, "first": args.first, "then": args.then, "seeds": study.parse_ints(args.seeds),
              "first_tokens": args.first_tokens, "total_tokens": args.total_tokens, "max_steps": args.max_steps,
              "overrides": args.set or []}
  result = analyse(args.out, parse_arms(args.first), settings["seeds"])
  with open(os.path.join(args.out, "transplant.json"), "w", encoding="utf-8") as f:
    json.dump({"settings": settings, **result}, f, indent=1, default=str)
  text = markdown(result, settings)
  with open(os.path.join(args.out, "transplant.md"), "w", encoding="utf-8") as f:
    f.write(text)
  print(text + f"\n[transplant] {args.out}/transplant.md ({report.fmt_seconds(time.perf_counter() - t0)})",
        flush=True)
  return result


if __name__ == "__main__":
  main()
