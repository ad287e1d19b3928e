"""Evaluates a policy on a config's fixed evaluation set at T = 1: the trainer's evaluator as a tool.

    python tools/evaluate.py --model=builtin:chains_base --config=configs/default.py [--num_problems=N]
    python tools/evaluate.py --model=runs/default/export --config=configs/default.py --out=runs/eval

--model: a Hugging Face directory (an exported checkpoint) or builtin:NAME. The evaluation set is the
config's (experiment.load_problems, the task's named sets: for the shipped task data.task_configs.chains
easy/mid/hard_levels from the test split, ood_levels from the length-OOD split, ood_ops_levels from the
operator-OOD split), num_problems per level (default
evaluation.FIXED_SET_PROBLEMS = 128) from evaluation.fixed_level_set: the same problems for every arm,
seed and run, a smaller set being a prefix of the full one. Each problem gets --num_samples samples
(default config.eval.num_samples) at T = 1, no hint.

The code is the trainer's: evaluation.Evaluator with one sampled evaluator (config.evals replaced by
{"sampled": T = 1, no hint, every set}) on the evaluation GroupSampler built as experiment.setup builds
it (the config's evaluation sizes, top-p / top-k, TIP penalty, DeepConf online), the task's trace checker,
--batch problems per sampler call (config.data.prompts_per_step) and the sampling keys of --seed
(config.seed). So for the same config, policy, --batch = data.prompts_per_step and --seed = seed, the
numbers are those of the trainer's evaluation at step 0 (tests/test_evaluate_tool.py).

Prints a line per evaluation set, then ends with ONE JSON line:
    {"valid_pass@1": {"1": v, ..., "8": v, "ood_ops:3": v, ...}, "answer_pass@1": {...}, ...}
(levels as strings; the operator-OOD split under its own keys; extra keys after the two
contract keys: shortcut_rate, num_problems, num_samples). --out writes every level's rows to
OUT/<level>.jsonl (OUT/ood_ops_3.jsonl for "ood_ops:3").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import ml_collections  # noqa: E402
from flax import nnx  # noqa: E402

from jaxghpo import evaluation, experiment  # noqa: E402
from jaxghpo.rollout import groups, penalties  # noqa: E402
from study import load_config  # noqa: E402  (tools/: one loader of config files for the tools)


def tool_config(config, *, model: str, num_problems: int, num_samples: int = 0, batch: int = 32,
                seed: int | None = None):
  """`config` (changed in place) as the tool evaluates it: the policy at `model`, num_problems per level,
  one sampled evaluator at T = 1 without hint drawing num_samples (0: config.eval.num_samples) per problem,
  `batch` problems per sampler call (at most num_problems), sampling keys of `seed` (None: config.seed), no
  exact sets (the tool reports sampled measures)."""
  if config.data.source != "task":
    raise ValueError("tools/evaluate.py evaluates a procedural task (config.data.source='task'), not "
                     f"{config.data.source!r}")
  n = int(num_samples or config.eval.num_samples)
  config.model.path = model
  config.eval.num_problems = int(num_problems)
  for section in config.data.task_configs.values():  # the task's exact sets: the tool reports sampled measures
    if "exact_levels" in section:
      section.exact_levels = ()
  config.rollout.group_size = max(int(config.rollout.group_size), n)  # one group per problem holds the samples
  config.data.prompts_per_step = min(int(batch), int(num_problems))
  if seed is not None:
    config.seed = int(seed)
  config.evals = ml_collections.ConfigDict({"sampled": evaluation.evaluator_config(temperature=1.0, samples=n)})
  experiment.validate_values(config)
  return config


def build(config):
  """(the parts evaluation.Evaluator reads, params): the policy, the problems (prompt room checked) and the
  evaluation GroupSampler, built as experiment.setup builds them, without the training pieces."""
  mesh = experiment.make_mesh(config)
  model, _, tokenizer = experiment.load_policy(config, mesh)
  problems = experiment.load_problems(config)
  experiment.check_prompt_room(config, problems, tokenizer)
  eval_rollout = groups.GroupSampler(model, mesh, tokenizer, experiment.reward_fn(config, problems), config,
                                     P=int(config.data.prompts_per_step), divisors=(1,),
                                     penalty=penalties.from_config(config.rollout, tokenizer, "eval"),
                                     **experiment.sampler_sizes(config)["eval"])
  graphdef, params = nnx.split(model)
  return types.SimpleNamespace(problems=problems, eval_rollout=eval_rollout, tokenizer=tokenizer,
                               graphdef=graphdef), params


def level_key(split: str, level: int) -> str:
  """The result key of a level: "5", or "ood_ops:3" for the operator-OOD split."""
  return f"ood_ops:{int(level)}" if split == "ood_ops" else str(int(level))


def shortcut_rate(rows) -> float | None:
  """Of the samples with the right answer, the fraction whose trace is not valid (lucky or skipped work)."""
  right = sum(sum(r["answer_right"]) for r in rows)
  bad = sum(a and not v for r in rows for a, v in zip(r["answer_right"], r["valid"]))
  return bad / right if right else None


def run(config, parts, params, *, out: str = "") -> dict:
  """The tool's result (module docstring) from evaluation.Evaluator(config, parts) at step 0."""
  t0 = time.time()
  result = {"valid_pass@1": {}, "answer_pass@1": {}, "shortcut_rate": {}}
  for spec, split, metrics, rows in evaluation.Evaluator(config, parts).sampled(params, 0):
    prefix = f"eval/{split}/hint{spec.hint_ratio:g}/{spec.mode}/"
    for level in sorted({int(r["level"]) for r in rows}):
      key = level_key(split, level)
      level_rows = [r for r in rows if int(r["level"]) == level]
      result["valid_pass@1"][key] = metrics.get(f"{prefix}valid_pass@1/level_{level}")
      result["answer_pass@1"][key] = metrics[f"{prefix}answer_pass@1/level_{level}"]
      result["shortcut_rate"][key] = shortcut_rate(level_rows) if "valid" in level_rows[0] else None
      if out and jax.process_index() == 0:
        evaluation.write_rows(os.path.join(out, f"{key.replace(':', '_')}.jsonl"), level_rows)
    print(f"{split:>10}: valid pass@1 {metrics.get(prefix + 'valid_pass@1', float('nan')):.4f}  answer pass@1 "
          f"{metrics[prefix + 'answer_pass@1']:.4f}  ({len(rows)} problems x {spec.samples}, {time.time() - t0:.0f}s)",
          flush=True)
  # Levels in order, the operator-OOD split after the others.
  order = lambda key: (key.startswith("ood_ops:"), int(key.split(":")[-1]))  # noqa: E731
  for name in ("valid_pass@1", "answer_pass@1", "shortcut_rate"):
    result[name] = {key: result[name][key] for key in sorted(result[name], key=order)}
  result.update({"num_problems": int(config.eval.num_problems), "num_samples": int(config.evals.sampled.samples)})
  return result


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", required=True, help="HF directory or builtin:NAME")
  p.add_argument("--config", required=True, help="config file (path.py or path.py:arg)")
  p.add_argument("--num_problems", type=int, default=evaluation.FIXED_SET_PROBLEMS, help="per level")
  p.add_argument("--num_samples", type=int, default=0, help="samples per problem (0: config.eval.num_samples)")
  p.add_argument("--batch", type=int, default=32, help="problems per sampler call (config.data.prompts_per_step)")
  p.add_argument("--seed", type=int, default=None, help="seed of the sampling keys (default: config.seed)")
  p.add_argument("--out", default="", help="write the rows to OUT/<level>.jsonl")
  args = p.parse_args(argv)
  config = tool_config(load_config(args.config), model=args.model, num_problems=args.num_problems,
                       num_samples=args.num_samples, batch=args.batch, seed=args.seed)
  parts, params = build(config)
  result = run(config, parts, params, out=args.out)
  print(json.dumps(result), flush=True)
  return result


if __name__ == "__main__":
  main()
