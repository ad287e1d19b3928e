"""Seconds per RL step: jaxghpo's trainer against Tunix's GRPO learner, same weights and sizes, in one run.

For each size (hidden x layers) a random Qwen2 is written by transformers (HF safetensors) with the
embedded task's tokenizer beside it; both frameworks load that directory and run plain GRPO (no hints:
jaxghpo's curriculum mode "none", Tunix's GRPOLearner) on the same problems with the same number of
prompts P, group size G, prompt bucket, new tokens, temperature, KL coefficient (both compute reference
logprobs with a frozen copy) and optimizer (AdamW, global-norm clipping 1.0, constant learning rate).

jaxghpo runs `Trainer.rl_step` (pipeline, scheduler, sampling, rewards, advantages, batch building,
the sharded train step) back to back as `Trainer.run` does, without evaluation or checkpoints; Tunix
runs in its own virtual environment through tools/tunix_side.py. Each side reports the mean over
--steps steps after --warmup steps (compilation excluded), split into rollout (sampling) and train
(the rest of the step: reference logprobs, the update, host work; Tunix's reference and update phases
are also shown on their own).

  python tools/bench_rl_step.py --tunix_python=/path/to/tunix-venv/bin/python
  python tools/bench_rl_step.py --sizes=64x2 --steps=2          # ours only when --tunix_python is empty
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--sizes", default="64x2,256x4,512x8", help="comma-separated HIDDENxLAYERS")
  p.add_argument("--prompts_per_step", type=int, default=8)
  p.add_argument("--group_size", type=int, default=8)
  p.add_argument("--max_prompt_len", type=int, default=32)
  p.add_argument("--max_new_tokens", type=int, default=64)
  p.add_argument("--beta", type=float, default=0.04, help="KL coefficient (both sides)")
  p.add_argument("--learning_rate", type=float, default=1e-5)
  p.add_argument("--micro_batches", type=int, default=1,
                 help="both sides: the update and the reference logprobs in this many micro-batches "
                      "(ours: config.rl.micro_batches; Tunix: train_micro_batch_size = P / M)")
  p.add_argument("--rounds", type=int, default=1,
                 help="run ours and Tunix alternately this many times per size; each side's median round is reported "
                      "(the shared machine's speed drifts by 10-30% over minutes)")
  p.add_argument("--steps", type=int, default=3)
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--tunix_python", default=os.environ.get("TUNIX_PYTHON", ""),
                 help="python of a virtual environment with google-tunix; empty: ours only")
  p.add_argument("--platform", default="cpu")
  p.add_argument("--out", default="", help="also write the results as JSON here")
  return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
  os.environ.setdefault("JAX_PLATFORMS", ARGS.platform)

import jax  # noqa: E402
import numpy as np  # noqa: E402

import bench_models  # noqa: E402
import tunix_side  # noqa: E402


def problems(P: int, seed: int = 0):
  """P chains problems (levels 1-6, no hints) as the trainer renders them: (prompt texts, answers)."""
  from jaxghpo.data import tokenizer as tok_lib
  from jaxghpo.data import templates
  from jaxghpo.data.tasks import get_task
  tok = tok_lib.load(bench_models.CHAINS_TOKENIZER)
  exs = get_task("chains").generate("train", P, seed, levels={l: 1.0 for l in range(1, 7)})
  return [templates.render(ex, "", "prompt", tok, "plain").prompt_text for ex in exs], [ex.answer for ex in exs]


def our_config(model_dir: str, args):
  from study import load_config
  c = load_config(os.path.join(REPO, "configs", "default.py"))
  c.model.path = model_dir
  c.model.tokenizer = ""
  c.curriculum.mode = "none"  # plain GRPO: the same work as Tunix's learner (no hint retries)
  c.data.prompts_per_step = args.prompts_per_step
  c.rollout.group_size = args.group_size
  c.rollout.max_prompt_len = args.max_prompt_len
  c.rollout.max_new_tokens = args.max_new_tokens
  c.eval.max_prompt_len = args.max_prompt_len
  c.eval.max_new_tokens = args.max_new_tokens
  c.rl.kl_coef = args.beta
  c.rl.micro_batches = args.micro_batches
  c.rl.learning_rate = args.learning_rate
  c.rl.lr_schedule = "constant"
  c.rl.warmup_steps = 0
  c.num_steps = args.warmup + args.steps
  return c


def run_ours(model_dir: str, args) -> dict:
  from jaxghpo.train import Trainer
  with tempfile.TemporaryDirectory() as workdir:
    trainer = Trainer(our_config(model_dir, args), workdir)
    rng = jax.random.key(0)
    recs, t_prev = [], None
    for step in range(args.warmup + args.steps):
      if step == args.warmup:
        jax.block_until_ready(trainer.params)
        t_prev = time.perf_counter()
      host, _ = trainer.rl_step(step, jax.random.fold_in(rng, step))
      recs.append(host)
    jax.block_until_ready(trainer.params)  # the last update: counted in the timed steps
    total = time.perf_counter() - t_prev
    trainer.checkpointer.close()
  timed = recs[args.warmup:]
  mean = lambda k: float(np.mean([r[k] for r in timed]))
  step_s = total / args.steps
  rollout_s = mean("time/rollout_s") + mean("time/reward_s")
  # The update runs on the device while the host starts the next step, so "train" is what the step
  # spends outside sampling: reference logprobs, the update and the host work between them.
  return {"step_s": step_s, "rollout_s": rollout_s, "train_s": step_s - rollout_s}


def run_tunix(model_dir: str, texts, answers, args) -> dict:
  return tunix_side.run(args.tunix_python, model_dir, texts, answers, [
      "--mode=rl", f"--group_size={args.group_size}", f"--max_prompt_len={args.max_prompt_len}",
      f"--max_new_tokens={args.max_new_tokens}", f"--beta={args.beta}", f"--learning_rate={args.learning_rate}",
      f"--steps={args.steps}", f"--warmup={args.warmup}", f"--platform={args.platform}",
      f"--micro_batches={args.micro_batches}"])


def median_round(recs: list) -> dict:
  """The round whose step time is the median (the lower middle one for an even count)."""
  return sorted(recs, key=lambda r: r["step_s"])[(len(recs) - 1) // 2]


def main(args):
  texts, answers = problems(args.prompts_per_step)
  print(f"P={args.prompts_per_step} prompts x G={args.group_size}, prompt bucket {args.max_prompt_len}, "
        f"{args.max_new_tokens} new tokens, T=1, KL {args.beta}, AdamW lr {args.learning_rate}, "
        f"{args.micro_batches} micro-batches; "
        f"{args.warmup} warm-up + {args.steps} timed steps; jax {jax.__version__} on {jax.devices()[0].device_kind}, "
        f"{len(os.sched_getaffinity(0))} CPUs", flush=True)
  results = []
  for size in args.sizes.split(","):
    hidden, layers = (int(x) for x in size.split("x"))
    with tempfile.TemporaryDirectory() as model_dir:
      special = bench_models.copy_chains_tokenizer(model_dir)
      bench_models.write_qwen2(model_dir, hidden=hidden, layers=layers, vocab=special["vocab"],
                               bos_id=special["bos"], eos_id=special["eos"], pad_id=special["pad"])
      rounds = []
      for _ in range(args.rounds):
        rounds.append({"ours": run_ours(model_dir, args),
                       "tunix": run_tunix(model_dir, texts, answers, args) if args.tunix_python else None})
    ours = median_round([r["ours"] for r in rounds])
    theirs = median_round([r["tunix"] for r in rounds]) if args.tunix_python else None
    rec = {"size": size, "ours": ours, "tunix": theirs, "rounds": rounds}
    if theirs and args.rounds > 1:
      rec["round_ratios"] = [r["tunix"]["step_s"] / r["ours"]["step_s"] for r in rounds]
    line = (f"{size:>6s} ours {ours['step_s']:7.2f} s/step (rollout {ours['rollout_s']:6.2f}, "
            f"train {ours['train_s']:6.2f})")
    if theirs:
      rec["ratio"] = theirs["step_s"] / ours["step_s"]
      line += (f" | tunix {theirs['step_s']:7.2f} s/step (rollout {theirs['rollout_s']:6.2f}, "
               f"train {theirs['train_s']:6.2f} = ref {theirs['ref_s']:5.2f} + update {theirs['update_s']:5.2f})"
               f" | tunix/ours {rec['ratio']:4.2f}x")
      if "round_ratios" in rec:
        line += " (rounds: " + ", ".join(f"{x:.2f}x" for x in rec["round_ratios"]) + ")"
    print(line, flush=True)
    results.append(rec)
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
  main(ARGS)
