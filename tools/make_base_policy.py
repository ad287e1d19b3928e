"""Makes the embedded experiment's base policy: SFT of a small Qwen2-style model on letter chains.

    python tools/make_base_policy.py --out jaxghpo/assets/chains_base

(the defaults are the shipped recipe: 800 steps, batch 64, AdamW 1e-3 with warm-up and cosine
decay, seed 0; about 9-10 minutes on 2 CPU cores). Deterministic from --seed.

What the policy learns: whole traces of levels 1-3 (with and without an in-prompt hint), and the
END of level 4-6 traces: those problems are only shown with a hint that leaves at most 3 steps to
write. So it can finish a long chain but has never started one: without a hint it fails levels
4-6, with a 50% hint it solves them. That is the situation GHPO is for. The tool ends with greedy
pass@1 per level (teacher-forced: the whole trace is the argmax at every position, which is exactly
greedy decoding's success), without hint and with 50% / 75% hints, and writes it to
OUT/base_policy_report.json with the time taken.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxghpo import models
from jaxghpo.curriculum import hints as hints_lib
from jaxghpo.data import templates, tokenizer as tok_lib
from jaxghpo.data.tasks import chains
from jaxghpo import sft


def model_config(tok, args) -> models.ModelConfig:
  return models.ModelConfig(
      model_type="qwen2", vocab_size=64, hidden_size=args.hidden, intermediate_size=args.mlp,
      num_layers=args.layers, num_heads=args.hidden // 32, num_kv_heads=args.hidden // 32, head_dim=32,
      rope_theta=10000.0, tie_word_embeddings=True, attention_bias=True, max_position_embeddings=512,
      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)


def teacher_forced_pass(model, tok, examples, hint_ratio: float, max_len: int) -> float:
  """Fraction of examples whose whole target is the argmax at every position (= greedy pass)."""
  rows = []
  for ex in examples:
    hint = hints_lib.cut(ex.steps, hint_ratio, "steps", step_sep=ex.step_sep) if hint_ratio > 0 else ""
    rows.append((ex, hint))
  ok = []
  for start in range(0, len(rows), 128):
    chunk = rows[start:start + 128]
    toks = np.full((len(chunk), max_len), tok.pad_token_id, np.int32)
    mask = np.zeros((len(chunk), max_len), np.float32)
    valid = np.zeros((len(chunk), max_len), bool)
    for i, (ex, hint) in enumerate(chunk):
      r = templates.render(ex, hint, "prompt", tok, "plain")
      tgt = tok.encode(templates.target_text(ex, hint, "prompt", "plain"), add_special_tokens=False)
      ids = list(r.prompt_ids) + tgt + [tok.eos_token_id]
      toks[i, :len(ids)] = ids
      valid[i, :len(ids)] = True
      mask[i, len(r.prompt_ids):len(ids)] = 1
    logits = _logits(model, toks, valid)
    pred = np.asarray(jnp.argmax(logits[:, :-1], -1))
    wrong = ((pred != toks[:, 1:]) & (mask[:, 1:] > 0)).any(-1)
    ok.extend((~wrong).tolist())
  return float(np.mean(ok))


@nnx.jit
def _logits(model, toks, valid):
  return models.logits_padded(model, toks, valid)


def main():
  p = argparse.ArgumentParser()
  p.add_argument("--out", default=None)
  p.add_argument("--steps", type=int, default=800)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--hidden", type=int, default=128)
  p.add_argument("--layers", type=int, default=3)
  p.add_argument("--mlp", type=int, default=384)
  p.add_argument("--levels", default="1,2,3")
  p.add_argument("--hinted_levels", default="4,5,6",
                 help="levels seen only with a hint that leaves at most --max_remaining steps to write")
  p.add_argument("--max_remaining", type=int, default=3)
  p.add_argument("--hint_prob", type=float, default=0.5)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--warmup", type=int, default=100)
  p.add_argument("--eval_every", type=int, default=0, help="0: only at the end")
  args = p.parse_args()
  levels = [int(x) for x in args.levels.split(",")]
  tok = tok_lib.load(tok_lib.task_tokenizer_path())
  cfg = model_config(tok, args)
  model = models.init_model(cfg, seed=args.seed)
  print(f"params: {sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))):,}")
  schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, min(args.warmup, args.steps // 10), args.steps,
                                                args.lr * 0.05)
  optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule, b2=0.98, weight_decay=0.01))
  graphdef, params = nnx.split(model)
  opt_state = optimizer.init(params)
  step_fn = sft.make_sft_step(graphdef, optimizer)
  hinted = [int(x) for x in args.hinted_levels.split(",") if x]
  max_len = max(chains.problem_len(l) + chains.solution_len(l) + 3 for l in levels)
  max_len = -(-max_len // 8) * 8
  hinted_len = max([chains.problem_len(l) + chains.solution_len(l) + 3 for l in hinted] or [0])
  hinted_len = -(-hinted_len // 8) * 8
  rng = np.random.default_rng(args.seed)
  eval_sets = {l: chains.generate("test", 128, 1000 + l, levels=[l]) for l in range(1, 9)}
  t0 = time.time()
  for step in range(1, args.steps + 1):
    if hinted and step % 2 == 0:  # every other batch: long chains with hints, in their own shape
      exs = chains.generate("train", args.batch, args.seed * 1_000_003 + step, levels=hinted)
      b = sft.encode_examples(exs, tok, max_len=hinted_len, rng=rng, max_remaining=args.max_remaining)
    else:
      exs = chains.generate("train", args.batch, args.seed * 1_000_003 + step, levels=levels)
      b = sft.encode_examples(exs, tok, max_len=max_len, rng=rng, hint_prob=args.hint_prob)
    params, opt_state, loss = step_fn(params, opt_state, b.tokens_BxT, b.loss_mask_BxT, b.valid_BxT)
    if step % 100 == 0:
      m = nnx.merge(graphdef, params)
      logits = np.asarray(_logits(m, b.tokens_BxT, b.valid_BxT))
      pred = logits[:, :-1].argmax(-1)
      tgt, msk = b.tokens_BxT[:, 1:], b.loss_mask_BxT[:, 1:] > 0
      is_letter = (tgt >= 5) & (tgt <= 30)
      prev = b.tokens_BxT[:, :-1]
      prev_in_response = np.concatenate([np.zeros_like(msk[:, :1]), msk[:, :-1]], axis=1)
      new_letter = msk & is_letter & (prev == 43) & prev_in_response  # computed: after a response '='
      copy = msk & ~new_letter
      acc_new = (pred == tgt)[new_letter].mean()
      acc_copy = (pred == tgt)[copy].mean()
      print(f"step {step} loss {float(loss):.4f} acc(new letter) {acc_new:.3f} acc(copy/eos) {acc_copy:.3f} "
            f"{time.time() - t0:.0f}s", flush=True)
    if (args.eval_every and step % args.eval_every == 0) or step == args.steps:
      m = nnx.merge(graphdef, params)
      row = {}
      for l, exs_l in eval_sets.items():
        L = chains.problem_len(l) + chains.solution_len(l) + 4
        row[l] = [teacher_forced_pass(m, tok, exs_l, r, L) for r in (0.0, 0.5, 0.75)]
      print("pass (no hint, 50%, 75%) by level:",
            " ".join(f"L{l}:{a:.2f}/{b:.2f}/{c:.2f}" for l, (a, b, c) in row.items()), flush=True)
  elapsed = time.time() - t0
  print(f"trained {args.steps} steps in {elapsed:.0f}s", flush=True)
  if args.out:
    m = nnx.merge(graphdef, params)
    models.save_pretrained(m, cfg, args.out)
    tok.save_pretrained(args.out)
    report = {"args": vars(args), "train_seconds": round(elapsed, 1), "params": int(cfg.num_params()),
              "greedy_pass_by_level": {str(l): {"no_hint": a, "hint_0.5": b, "hint_0.75": c}
                                       for l, (a, b, c) in row.items()}}
    with open(os.path.join(args.out, "base_policy_report.json"), "w") as f:
      json.dump(report, f, indent=2)
    print("saved", args.out)


if __name__ == "__main__":
  main()
