"""Makes the embedded experiment's base policy: SFT of a small Qwen2-style model on letter chains
written by a NOISY TEACHER, so that the policy's competence is a ramp in the chain length.

The teacher (chains.noisy_steps) writes the line with tail t (t operations still to copy after the
one it applies) correctly with probability q(t) (1 for t <= 2, then --q); otherwise it writes that
line with a wrong letter and stops (an early, chance-level answer). Levels 1-6, with and without
in-prompt hints of whole true steps. Every problem of a level gets the same chance of a valid trace
(per-problem success is intermediate, not bimodal); tails >= 6 (levels 7, 8) are never seen.

Measured: the policy's realized chance of a valid line with tail t is about q(t)^2, not q(t) (after
writing a letter it cannot fully tell whether the letter was right, so it also stops early after right
ones). The shipped recipe (jaxghpo/assets/chains_base; three stages, 2500 steps in all, ~56 min on the
shared 2-core machine, logs in docs/results/base_policy/):

    python tools/make_base_policy.py --out /tmp/s1                       # q = 0.45/0.3/0.15, 2000 steps
    python tools/make_base_policy.py --init /tmp/s1 --previous_report /tmp/s1/base_policy_report.json \
        --q 3:0.85,4:0.65,5:0.6 --steps 300 --lr 3e-4 --warmup 30 --seed 1 --out /tmp/s2
    python tools/make_base_policy.py --init /tmp/s2 --previous_report /tmp/s2/base_policy_report.json \
        --q 3:0.67,4:0.55,5:0.39 --steps 200 --lr 3e-4 --warmup 20 --seed 2 --out jaxghpo/assets/chains_base

(stage 1 alone lands below the ramp at levels 4-6, stage 2 above it; stage 3's q = sqrt of the target
per-line rates lands inside). A one-stage run with stage 3's q from scratch should do the same; it
was not run for lack of time. Deterministic from the seeds on one machine.

The tool ends with the profile measured on the fixed evaluation set (evaluation.fixed_eval_sets): the
EXACT per-problem valid pass probability at T = 1 (exp of the true trace's log-probability; the valid
trace is unique), by level, with its per-problem histogram, and the SAMPLED profile by tools/evaluate.py
(T = 1, 8 samples per problem); both go with the recipe into OUT/base_policy_report.json.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np
import optax
from flax import nnx

from jaxghpo import evaluation, models, sft
from jaxghpo.curriculum import hints as hints_lib
from jaxghpo.data import templates, tokenizer as tok_lib
from jaxghpo.data.tasks import chains

HIST_EDGES = (0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.95, 0.99, 1.0)


def model_config(tok, args) -> models.ModelConfig:
  return models.ModelConfig(
      model_type="qwen2", vocab_size=64, hidden_size=args.hidden, intermediate_size=args.mlp,
      num_layers=args.layers, num_heads=args.hidden // 32, num_kv_heads=args.hidden // 32, head_dim=32,
      rope_theta=10000.0, tie_word_embeddings=True, attention_bias=True, max_position_embeddings=512,
      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def parse_q(text: str) -> dict[int, float]:
  """"3:0.45,4:0.3,5:0.15" -> {3: 0.45, 4: 0.3, 5: 0.15} (tails not named: 1.0)."""
  out = {}
  for item in filter(None, text.split(",")):
    tail, q = item.split(":")
    out[int(tail)] = float(q)
  return out


def encode_noisy(examples, tok, q_by_tail, rng, max_len: int, hint_prob: float) -> sft.SFTBatch:
  """Teacher-forcing rows: prompt (with a true hint of 1..L-1 steps with prob hint_prob) + the noisy
  teacher's lines after the hint + EOS; loss on the written lines and EOS."""
  B = len(examples)
  tokens = np.full((B, max_len), tok.pad_token_id, np.int32)
  loss = np.zeros((B, max_len), np.float32)
  valid = np.zeros((B, max_len), bool)
  for i, ex in enumerate(examples):
    s = int(rng.integers(1, ex.level)) if ex.level > 1 and rng.random() < hint_prob else 0
    hint = "".join(step + chains.STEP_SEP for step in ex.steps[:s])
    prompt = list(templates.render(ex, hint, "prompt", tok, "plain").prompt_ids)
    target = tok.encode(chains.STEP_SEP.join(chains.noisy_steps(ex, q_by_tail, rng, start=s)),
                        add_special_tokens=False) + [tok.eos_token_id]
    ids = prompt + target
    tokens[i, :len(ids)] = ids
    valid[i, :len(ids)] = True
    loss[i, len(prompt):len(ids)] = 1.0
  return sft.SFTBatch(tokens, loss, valid)


def profile(model, tok, num_problems: int) -> dict:
  """Exact valid pass@1 at T = 1 per problem of the fixed evaluation set: mean, quantiles and a
  histogram per key (level / OOD split); also with a one-step hint for the ladder's view."""
  out = {}
  for key, exs in evaluation.fixed_eval_sets(chains, num_problems).items():
    p = np.exp(evaluation.true_trace_logprob(model, tok, exs))
    counts, _ = np.histogram(p, bins=HIST_EDGES)
    out[key] = {"valid_pass@1": float(p.mean()), "p10": float(np.quantile(p, 0.1)),
                "median": float(np.median(p)), "p90": float(np.quantile(p, 0.9)),
                "hist_counts": counts.tolist(), "num_problems": len(exs),
                "per_problem": [float(f"{x:.6g}") for x in p]}
  return out


RAMP = {"1": (0.95, 1.0), "2": (0.95, 1.0), "3": (0.95, 1.0), "4": (0.3, 0.6), "5": (0.05, 0.25),
        "6": (0.005, 0.05)}  # the acceptance profile: unhinted valid pass@1 at T = 1 by level


def write_report(out_dir: str, model, tok, extra: dict, num_problems: int, samples: int) -> dict:
  """Measures the profile (exact per problem, and sampled by tools/evaluate.py's code) and writes
  OUT/base_policy_report.json."""
  import sys
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import evaluate as evaluate_tool  # tools/evaluate.py: the sampled profile, as anyone can re-measure it
  prof = profile(model, tok, num_problems)
  for key, row in prof.items():
    print(f"{key:>10}: exact valid pass@1 {row['valid_pass@1']:.4f}  p10 {row['p10']:.4f} median {row['median']:.4f} "
          f"p90 {row['p90']:.4f}  hist {row['hist_counts']}", flush=True)
  sampled = evaluate_tool.main(["--model", out_dir, "--config", "configs/default.py",
                                "--num_problems", str(num_problems), "--num_samples", str(samples)])
  inside = {lv: lo <= prof[lv]["valid_pass@1"] <= hi for lv, (lo, hi) in RAMP.items()}
  report = {**extra, "profile_method": "exact: exp(log-prob of the true trace + EOS) at T = 1 per problem of "
                                       "evaluation.fixed_eval_sets(chains, num_problems); sampled: "
                                       "tools/evaluate.py (T = 1) on the same problems",
            "num_problems": num_problems, "hist_edges": list(HIST_EDGES), "ramp": RAMP, "inside_ramp": inside,
            "profile": prof, "sampled": sampled}
  with open(os.path.join(out_dir, "base_policy_report.json"), "w") as f:
    json.dump(report, f, indent=1)
  print("inside the ramp:", inside, flush=True)
  return report


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--out", default=None)
  p.add_argument("--steps", type=int, default=2000)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--hidden", type=int, default=128)
  p.add_argument("--layers", type=int, default=3)
  p.add_argument("--mlp", type=int, default=384)
  p.add_argument("--short_levels", default="1,2,3", help="levels of the odd steps' batches")
  p.add_argument("--long_levels", default="4,5,6", help="levels of the even steps' batches")
  p.add_argument("--q", default="3:0.45,4:0.3,5:0.15", help="tail:probability the teacher's line is right")
  p.add_argument("--hint_prob", type=float, default=0.25)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--warmup", type=int, default=100)
  p.add_argument("--eval_problems", type=int, default=128)
  p.add_argument("--log_every", type=int, default=50)
  p.add_argument("--profile_every", type=int, default=0, help="0: profile only at the end")
  p.add_argument("--profile_only", action="store_true", help="re-measure the policy in --out, no training")
  p.add_argument("--init", default="", help="start from this saved policy instead of a random model")
  p.add_argument("--previous_report", default="", help="a stage's report to keep inside this one's")
  p.add_argument("--profile_samples", type=int, default=8, help="samples per problem of the sampled profile")
  args = p.parse_args()
  tok = tok_lib.load(tok_lib.task_tokenizer_path())
  if args.profile_only:
    with open(os.path.join(args.out, "base_policy_report.json")) as f:
      old = json.load(f)
    m, _ = models.from_pretrained(args.out)
    extra = {k: old[k] for k in ("args", "train_seconds", "params") if k in old}
    write_report(args.out, m, tok, extra, args.eval_problems, args.profile_samples)
    return
  q_by_tail = parse_q(args.q)
  groups = [[int(x) for x in g.split(",")] for g in (args.short_levels, args.long_levels) if g]
  lens = [-(-max(chains.problem_len(l) + chains.solution_len(l) + 3 for l in g) // 8) * 8 for g in groups]
  if args.init:  # a second stage: continue from a saved policy (its architecture), with this stage's q
    model, cfg = models.from_pretrained(args.init)
  else:
    cfg = model_config(tok, args)
    model = models.init_model(cfg, seed=args.seed)
  print(f"params: {sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))):,}; q(tail) {q_by_tail}")
  schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, min(args.warmup, args.steps // 10), args.steps,
                                                args.lr * 0.05)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b2=0.98, weight_decay=0.01))
  graphdef, params = nnx.split(model)
  opt_state = optimizer.init(params)
  step_fn = sft.make_sft_step(graphdef, optimizer)
  rng = np.random.default_rng(args.seed)
  t0 = time.time()
  losses = []
  for step in range(1, args.steps + 1):
    g = step % len(groups)
    exs = chains.generate("train", args.batch, args.seed * 1_000_003 + step, levels=groups[g])
    b = encode_noisy(exs, tok, q_by_tail, rng, lens[g], args.hint_prob)
    params, opt_state, loss = step_fn(params, opt_state, b.tokens_BxT, b.loss_mask_BxT, b.valid_BxT)
    losses.append(float(loss))
    if step % args.log_every == 0:
      print(f"step {step} loss(last {args.log_every}) {np.mean(losses[-args.log_every:]):.4f} "
            f"{time.time() - t0:.0f}s", flush=True)
    if args.profile_every and step % args.profile_every == 0 and step < args.steps:
      prof = profile(nnx.merge(graphdef, params), tok, 32)
      print(f"step {step} valid pass@1:", " ".join(f"{k}:{r['valid_pass@1']:.3f}" for k, r in prof.items()),
            flush=True)
  elapsed = time.time() - t0
  print(f"trained {args.steps} steps in {elapsed:.0f}s", flush=True)
  m = nnx.merge(graphdef, params)
  if not args.out:
    for key, row in profile(m, tok, args.eval_problems).items():
      print(f"{key:>10}: exact valid pass@1 {row['valid_pass@1']:.4f} hist {row['hist_counts']}", flush=True)
    return
  models.save_pretrained(m, cfg, args.out)
  tok.save_pretrained(args.out)
  extra = {"args": vars(args), "train_seconds": round(elapsed, 1), "params": int(cfg.num_params())}
  if args.previous_report:  # the recipe is every stage's arguments, in order
    with open(args.previous_report) as f:
      prev = json.load(f)
    extra["previous_stages"] = prev.get("previous_stages", []) + [
        {k: prev[k] for k in ("args", "train_seconds") if k in prev}]
  write_report(args.out, m, tok, extra, args.eval_problems, args.profile_samples)
  print("saved", args.out)


if __name__ == "__main__":
  main()
