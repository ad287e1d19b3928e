"""Evaluates a policy on a config's fixed evaluation set at T = 1: the one evaluator as a tool.

    python tools/evaluate.py --model=builtin:chains_base --config=configs/default.py [--num_problems=N]
    python tools/evaluate.py --model=runs/default/export --config=configs/default.py --out=runs/eval

--model: a Hugging Face directory (an exported checkpoint) or builtin:NAME. The evaluation set is
the config's levels (eval.easy/mid/hard_levels from the test split, eval.ood_levels from the
length-OOD split, eval.ood_ops_levels from the operator-OOD split), num_problems per level
(default evaluation.FIXED_SET_PROBLEMS = 128) from evaluation.fixed_level_set: the same problems
for every arm, seed and run, a smaller set being a prefix of the full one. Each problem gets
config.eval.num_samples samples at T = 1 (no top-p / top-k), no hint; scored by
evaluation.evaluate (the code the trainer evaluates with) with the task's trace checker.

Prints a table per level, then ends with ONE JSON line:
    {"valid_pass@1": {"1": v, ..., "8": v, "ood_ops:3": v, ...}, "answer_pass@1": {...}, ...}
(levels as strings; the operator-OOD split under its own keys; extra keys after the two
contract keys: num_problems, num_samples, shortcut_rate).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

import jax  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from jaxghpo.parallel import hosts  # noqa: E402

from jaxghpo import deepconf, evaluation, experiment  # noqa: E402
from jaxghpo.data.tasks import get_task  # noqa: E402
from jaxghpo.rollout import Sampler, penalties  # noqa: E402
from jaxghpo.rollout import groups  # noqa: E402
from study import load_config  # noqa: E402  (tools/: one loader of config files for the tools)


def eval_sets(config, num_problems: int) -> dict[str, list]:
  """{level key: problems}: the config's levels, one key per level ("ood_ops:L" for that split)."""
  e = config.eval
  task = get_task(config.data.task)
  test = sorted({lv for key in ("easy_levels", "mid_levels", "hard_levels")
                 for lv in experiment.parse_levels(e.get(key, ""))})
  return evaluation.fixed_eval_sets(task, num_problems, levels=test,
                                    ood_levels=experiment.parse_levels(e.get("ood_levels", "")),
                                    ood_ops_levels=experiment.parse_levels(e.get("ood_ops_levels", "")))


def make_generate(config, model, tokenizer, mesh, sets, *, num_samples: int, batch: int, seed: int):
  """generate_fn(examples, hint_ratio, n, stop=None) for evaluation.evaluate: one fixed-shape Sampler of
  `batch` problems (all processes), T = 1, decoding with config.rollout's TIP penalty for evaluation;
  with config.eval.deepconf.enabled it returns token confidences and takes DeepConf's stop=(thresholds,
  window)."""
  task = get_task(config.data.task)
  longest_prompt = max(len(groups.render([ex], [""], placement="prompt", style=config.data.style,
                                         tokenizer=tokenizer, max_prompt_len=10**6)[0][0])
                       for exs in sets.values() for ex in exs[:8])
  max_level = max(ex.level for exs in sets.values() for ex in exs)
  max_prompt = -(-longest_prompt // 8) * 8
  max_new = -(-(task.solution_len(max_level) + 2) // 8) * 8  # a whole trace of the longest level + EOS
  confidence = bool(config.eval.deepconf.enabled)
  sampler = Sampler(model, batch_size=batch, max_prompt_len=max_prompt, max_new_tokens=max_new,
                    num_samples=num_samples, mesh=mesh, return_confidence=confidence)
  penalty = penalties.from_config(config.rollout, tokenizer, "eval")
  params = nnx.state(model)
  key = [jax.random.key(seed)]

  def generate(chunk, hint_ratio, n, stop=None):
    assert hint_ratio == 0.0 and n <= num_samples
    prompts, _, _ = groups.render(chunk, [""] * len(chunk), placement="prompt", style=config.data.style,
                                  tokenizer=tokenizer, max_prompt_len=max_prompt)
    key[0], sub = jax.random.split(key[0])
    thresholds, window = (None, 1) if stop is None else stop
    out = sampler(params, prompts, rng=sub, temperature=1.0, top_p=1.0, top_k=0,
                  eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id or 0, penalty=penalty,
                  stop_threshold=thresholds, stop_window=window)
    rows = len(chunk) * num_samples
    tokens, lengths = hosts.local_rows(out.tokens)[:rows], hosts.local_rows(out.lengths)[:rows]
    texts = groups.decode(tokenizer, tokens, lengths, tokenizer.eos_token_id)
    conf = hosts.local_rows(out.confidence)[:rows] if confidence else None
    stopped = hosts.local_rows(out.stopped)[:rows] if stop is not None else None
    completions, extras = [], []
    for i in range(len(chunk)):
      picked = range(i * num_samples, i * num_samples + n)
      completions.append([texts[r] for r in picked])
      extra = {"hint": ""}
      if conf is not None:
        extra["token_confidences"] = [np.round(conf[r, :int(lengths[r])], 4).tolist() for r in picked]
      if stopped is not None:
        extra["stopped"] = [bool(stopped[r]) for r in picked]
      extras.append(extra)
    return completions, None, extras

  return generate


def shortcut_rate(rows) -> float | None:
  """Of the samples with the right answer, the fraction whose trace is not valid (lucky or skipped work)."""
  right = sum(sum(r["answer_right"]) for r in rows)
  bad = sum(a and not v for r in rows for a, v in zip(r["answer_right"], r["valid"]))
  return bad / right if right else None


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--model", required=True, help="HF directory or builtin:NAME")
  p.add_argument("--config", required=True, help="config file (path.py or path.py:arg)")
  p.add_argument("--num_problems", type=int, default=evaluation.FIXED_SET_PROBLEMS, help="per level")
  p.add_argument("--num_samples", type=int, default=0, help="samples per problem (0: config.eval.num_samples)")
  p.add_argument("--batch", type=int, default=32, help="problems per sampler call")
  p.add_argument("--seed", type=int, default=0, help="sampling seed")
  p.add_argument("--out", default="", help="write the rows to OUT/<level>.jsonl")
  args = p.parse_args(argv)
  config = load_config(args.config)
  if config.data.source != "task":
    raise ValueError(f"--config {args.config}: tools/evaluate.py evaluates a procedural task "
                     f"(config.data.source='task'), not {config.data.source!r}")
  config.model.path = args.model
  num_samples = int(args.num_samples or config.eval.num_samples)
  t0 = time.time()
  mesh = experiment.make_mesh(config)
  model, _, tokenizer = experiment.load_policy(config, mesh)
  sets = eval_sets(config, args.num_problems)
  batch = min(args.batch, args.num_problems)  # problems per sampler call, all processes together
  generate = make_generate(config, model, tokenizer, mesh, sets, num_samples=num_samples, batch=batch,
                           seed=args.seed)
  dc = deepconf.from_config(config.eval, num_samples)
  result = {"valid_pass@1": {}, "answer_pass@1": {}, "shortcut_rate": {}, "num_problems": args.num_problems,
            "num_samples": num_samples}
  score = lambda texts, answers: np.asarray(
      [float(get_task(config.data.task).extract_answer(t) == a) for t, a in zip(texts, answers)])
  for key, exs in sets.items():
    # Each process samples its share of the problems, batch / process_count per call; metrics are over all.
    metrics, rows = evaluation.evaluate(generate, exs, k=1, num_samples=num_samples,
                                        batch_size=batch // jax.process_count(), score_fn=score,
                                        check_fn=evaluation.chains_check, multihost=True, deepconf=dc,
                                        vote_fn=get_task(config.data.task).extract_answer)
    result["valid_pass@1"][key] = metrics["valid_pass@1"]
    result["answer_pass@1"][key] = metrics["answer_pass@1"]
    rows = [row for share in hosts.allgather_json(rows) for row in share]  # every process's, in order
    result["shortcut_rate"][key] = shortcut_rate(rows)
    print(f"{key:>10}: valid pass@1 {metrics['valid_pass@1']:.4f}  answer pass@1 {metrics['answer_pass@1']:.4f}"
          f"  ({len(exs)} problems x {num_samples}, {time.time() - t0:.0f}s)", flush=True)
    if args.out and jax.process_index() == 0:
      evaluation.write_rows(os.path.join(args.out, f"{key.replace(':', '_')}.jsonl"), rows)
  print(json.dumps(result), flush=True)
  return result


if __name__ == "__main__":
  main()
