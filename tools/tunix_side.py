"""The peer side of tools/bench_rl_step.py and tools/bench_sampler.py: Tunix's GRPO step and sampler.

Runs in Tunix's own virtual environment (google-tunix pins older transformers and safetensors), so it
imports nothing from jaxghpo; the driver tools call it as a subprocess with the same model directory
(HF safetensors written by transformers) and the same prompts, and read one JSON line from stdout.

  VENV/bin/python tools/tunix_side.py --mode=rl --model_dir=DIR --prompts=prompts.json \
      --group_size=8 --max_prompt_len=32 --max_new_tokens=64 --beta=0.04 --learning_rate=1e-5 --steps=4

Timing: `rl` wraps Tunix's own phases, each ended when its arrays are ready: rollout
(`RLCluster.generate`), reference logprobs (`get_ref_per_token_logps`) and the policy update
(`update_actor`); a step is one global step of `GRPOLearner.train`, wall clock. `sampler` times
`tunix.generate.Sampler.__call__` (prefill + decode + detokenize), best of --repeats after a warm-up.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

RESULT = "TUNIX_RESULT "  # the line of stdout that carries the result as JSON


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--mode", choices=("rl", "sampler"), required=True)
  p.add_argument("--model_dir", required=True)
  p.add_argument("--prompts", required=True,
                 help='JSON {"prompts": [P strings], "answers": [P strings]}: one step\'s problems')
  p.add_argument("--group_size", type=int, default=8)
  p.add_argument("--max_prompt_len", type=int, default=32)
  p.add_argument("--max_new_tokens", type=int, default=64)
  p.add_argument("--beta", type=float, default=0.04)
  p.add_argument("--learning_rate", type=float, default=1e-5)
  p.add_argument("--max_grad_norm", type=float, default=1.0)
  p.add_argument("--weight_decay", type=float, default=0.01)
  p.add_argument("--temperature", type=float, default=1.0)
  p.add_argument("--micro_batches", type=int, default=1,
                 help="rl: split each step's prompts into this many micro-batches for the reference logprobs "
                      "and the update (gradient accumulation; Tunix's train_micro_batch_size)")
  p.add_argument("--steps", type=int, default=4, help="rl: timed steps after --warmup steps")
  p.add_argument("--warmup", type=int, default=2)
  p.add_argument("--repeats", type=int, default=3, help="sampler: timed calls after one warm-up call")
  p.add_argument("--sampler_modes", default="greedy,sampled")
  p.add_argument("--eos_id", type=int, default=-1,
                 help="-1: the tokenizer's EOS; -2: none (no row ends early); else this id ends a row")
  p.add_argument("--platform", default="", help="force a JAX platform (cpu, cuda)")
  return p.parse_args(argv)


def run(python: str, model_dir: str, prompts, answers, flags) -> dict:
  """Runs this file with `python` (Tunix's venv) on `model_dir` and the given problems; returns its result.

  Called by the driver tools (in jaxghpo's environment); the jaxghpo-side PYTHONPATH and XLA_FLAGS
  are not passed on.
  """
  import subprocess
  prompts_file = os.path.join(model_dir, "prompts.json")
  with open(prompts_file, "w") as f:
    json.dump({"prompts": list(prompts), "answers": list(answers)}, f)
  cmd = [python, os.path.abspath(__file__), f"--model_dir={model_dir}", f"--prompts={prompts_file}", *flags]
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
  for line in proc.stdout.splitlines():
    if line.startswith(RESULT):
      return json.loads(line[len(RESULT):])
  raise RuntimeError(f"tools/tunix_side.py failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")


def eos_tokens(eos_id: int):
  """Tunix's eos_tokens argument: None (the tokenizer's), or a list; [-1] matches no token id."""
  return None if eos_id == -1 else [-1] if eos_id == -2 else [eos_id]


def tunix_config(hf: dict):
  from tunix.models.qwen2 import model as qwen2
  return qwen2.ModelConfig(
      num_layers=hf["num_hidden_layers"], vocab_size=hf["vocab_size"], embed_dim=hf["hidden_size"],
      hidden_dim=hf["intermediate_size"], num_heads=hf["num_attention_heads"],
      head_dim=hf.get("head_dim") or hf["hidden_size"] // hf["num_attention_heads"],
      num_kv_heads=hf["num_key_value_heads"], rope_theta=int(hf.get("rope_theta", 10000)),
      norm_eps=hf["rms_norm_eps"], use_tied_embedding=bool(hf.get("tie_word_embeddings", False)))


def load(args):
  import jax
  from transformers import AutoTokenizer
  from tunix.models.qwen2 import params as qwen2_params
  with open(os.path.join(args.model_dir, "config.json")) as f:
    hf = json.load(f)
  cfg = tunix_config(hf)
  mesh = jax.make_mesh((1, len(jax.devices())), ("fsdp", "tp"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 2)
  with mesh:
    model = qwen2_params.create_model_from_safe_tensors(args.model_dir, cfg, mesh)
  tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
  return model, cfg, tokenizer, mesh


def run_sampler(args, prompts):
  import jax
  from tunix.generate import sampler as sampler_lib
  model, cfg, tokenizer, mesh = load(args)
  G = args.group_size
  batch = [p for p in prompts["prompts"] for _ in range(G)]
  cache = sampler_lib.CacheConfig(cache_size=args.max_prompt_len + args.max_new_tokens + 1,
                                  num_layers=cfg.num_layers, num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim)
  sampler = sampler_lib.Sampler(model, tokenizer, cache)
  eos = eos_tokens(args.eos_id)
  out = {}
  for mode in args.sampler_modes.split(","):
    kw = dict(temperature=1e-9 if mode == "greedy" else args.temperature, top_p=None if mode == "greedy" else 1.0)
    if mode == "filtered":
      kw.update(top_k=50, top_p=0.95)

    def call(seed):
      with mesh:
        res = sampler(batch, max_generation_steps=args.max_new_tokens, max_prompt_length=args.max_prompt_len,
                      eos_tokens=eos, seed=seed, **kw)
      return res

    call(0)
    best, n_tokens = float("inf"), 0
    for r in range(args.repeats):
      t0 = time.perf_counter()
      res = call(r + 1)
      dt = time.perf_counter() - t0
      if dt < best:
        best = dt
        n_tokens = sum(len(tokenizer.encode(t, add_special_tokens=False)) for t in res.text)
    out[mode] = {"seconds": best, "rows": len(batch), "new_tokens_max": args.max_new_tokens,
                 "decoded_tokens": n_tokens}
  return out


class PhaseTimer:
  """Wraps a method so each call's wall time (until its returned arrays are ready) is summed per step."""

  def __init__(self):
    self.totals = {}

  def wrap(self, obj, name: str, label: str):
    import jax
    fn = getattr(obj, name)

    def timed(*a, **kw):
      t0 = time.perf_counter()
      out = fn(*a, **kw)
      jax.block_until_ready(jax.tree.leaves(out, is_leaf=lambda x: hasattr(x, "block_until_ready")))
      self.totals[label] = self.totals.get(label, 0.0) + time.perf_counter() - t0
      return out

    setattr(obj, name, timed)

  def take(self):
    out, self.totals = self.totals, {}
    return out


def run_rl(args, prompts):
  import jax
  import numpy as np
  import optax
  from flax import nnx
  from tunix.rl import rl_cluster as rl_cluster_lib
  from tunix.rl.grpo import grpo_learner
  from tunix.rl.rollout import base_rollout

  model, cfg, tokenizer, mesh = load(args)
  ref_model, _, _, _ = load(args) if args.beta != 0 else (None, None, None, None)
  total = args.warmup + args.steps
  optimizer = optax.chain(optax.clip_by_global_norm(args.max_grad_norm),
                          optax.adamw(args.learning_rate, b1=0.9, b2=0.999, eps=1e-8,
                                      weight_decay=args.weight_decay))
  eos = eos_tokens(args.eos_id)
  rollout = base_rollout.RolloutConfig(
      max_tokens_to_generate=args.max_new_tokens, max_prompt_length=args.max_prompt_len,
      kv_cache_size=args.max_prompt_len + args.max_new_tokens + 1, temperature=args.temperature,
      top_p=1.0, top_k=None, eos_tokens=eos)
  P = len(prompts["prompts"])
  micro = {}
  if args.micro_batches > 1:  # one optimizer update per step over P prompts, in micro-batches of P / M
    micro = dict(mini_batch_size=P, train_micro_batch_size=P // args.micro_batches,
                 compute_logps_micro_batch_size=P // args.micro_batches, rollout_micro_batch_size=P)
  training = rl_cluster_lib.RLTrainingConfig(
      actor_optimizer=optimizer, eval_every_n_steps=10**9, max_steps=total,
      metrics_logging_options=None, checkpoint_root_directory=None, **micro)
  roles = {rl_cluster_lib.Role.ACTOR: mesh, rl_cluster_lib.Role.REFERENCE: mesh,
           rl_cluster_lib.Role.ROLLOUT: mesh}
  cluster = rl_cluster_lib.RLCluster(
      actor=model, reference=ref_model, tokenizer=tokenizer,
      cluster_config=rl_cluster_lib.ClusterConfig(role_to_mesh=roles, rollout_engine="vanilla",
                                                  offload_to_cpu=False, training_config=training,
                                                  rollout_config=rollout))
  algo = grpo_learner.GRPOConfig(num_generations=args.group_size, num_iterations=1, beta=args.beta, epsilon=0.2)

  def exact_match(prompts, completions, answer, **_):
    return [float(c.strip().endswith(a)) for c, a in zip(completions, answer)]

  learner = grpo_learner.GRPOLearner(cluster, algo, reward_fns=exact_match)
  timer = PhaseTimer()
  timer.wrap(cluster, "generate", "rollout_s")
  timer.wrap(cluster, "get_ref_per_token_logps", "ref_s")
  timer.wrap(cluster, "update_actor", "update_s")
  steps = []
  run_global = learner._run_global_step  # one global step = one rollout + one optimizer update here

  def timed_global(*a, **kw):
    t0 = time.perf_counter()
    out = run_global(*a, **kw)
    jax.block_until_ready(jax.tree.leaves(nnx.state(cluster.actor_trainer.model)))
    rec = {"step_s": time.perf_counter() - t0, **timer.take()}
    steps.append(rec)
    print(json.dumps({"tunix_step": len(steps), **rec}), file=sys.stderr, flush=True)
    return out

  learner._run_global_step = timed_global
  data = [{"prompts": np.asarray(prompts["prompts"]), "answer": np.asarray(prompts["answers"])}
          for _ in range(total)]  # batches as a grain loader gives them: numpy arrays
  learner.train(data)
  timed = steps[args.warmup:]
  mean = lambda k: float(np.mean([s.get(k, 0.0) for s in timed]))
  return {"steps": steps, "step_s": mean("step_s"), "rollout_s": mean("rollout_s"), "ref_s": mean("ref_s"),
          "update_s": mean("update_s"), "train_s": mean("ref_s") + mean("update_s")}


def main(argv=None):
  args = parse_args(argv)
  if args.platform:
    os.environ["JAX_PLATFORMS"] = args.platform
  import jax
  with open(args.prompts) as f:
    prompts = json.load(f)
  out = run_sampler(args, prompts) if args.mode == "sampler" else run_rl(args, prompts)
  from importlib.metadata import version
  out["versions"] = {"google-tunix": version("google-tunix"), "jax": jax.__version__,
                     "backend": jax.default_backend()}
  print(RESULT + json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
