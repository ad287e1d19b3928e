"""Memory of one RL update of a random Qwen2.5-0.5B-shaped model on CPU, in one micro-batch.

    python tools/bench_update_memory.py [--rows=16 --prompt_len=512 --new_tokens=48 --remat=full ...]
        [--compile_only]

The model is built locally with random weights (no download): vocabulary 151,936 with tied embeddings,
hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4864 (Qwen2.5-0.5B's shape), float32. The batch is
--rows sequences (4 prompts x 4 samples by default) of a left-padded --prompt_len prompt bucket and
--new_tokens response tokens, as the trainer lays it out (rl.make_batch). The step is the trainer's
(rl.make_train_step) with config.rl.micro_batches = --micro_batches.

Prints XLA's compiled memory of the step (arguments + temporaries) and, unless --compile_only, runs the
update once and prints the process's peak resident memory (ru_maxrss) and the update's time. The last
line is JSON. XLA:CPU's sequential scheduler is used (as tools/estimate_memory.py --compile does), so
remat's recomputation runs one layer at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

QWEN25_05B = dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_layers=24,
                  num_heads=14, num_kv_heads=2, head_dim=64, rope_theta=1000000.0, tie_word_embeddings=True,
                  attention_bias=True, max_position_embeddings=32768)


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--rows", type=int, default=16, help="sequences of the update (prompts x samples)")
  p.add_argument("--prompt_len", type=int, default=512, help="prompt bucket (left-padded)")
  p.add_argument("--new_tokens", type=int, default=48)
  p.add_argument("--micro_batches", type=int, default=1)
  p.add_argument("--remat", default="full", choices=["none", "dots_saveable", "full"])
  p.add_argument("--attention", default="xla", choices=["xla", "splash"])
  p.add_argument("--logprob_chunk_tokens", type=int, default=4096)
  p.add_argument("--layers", type=int, default=QWEN25_05B["num_layers"], help="fewer for a quick check")
  p.add_argument("--compile_only", action="store_true", help="compile, never allocate the model or run")
  return p.parse_args(argv)


def main(args) -> dict:
  import estimate_memory as em
  em.set_cpu_devices(1)
  import jax
  import numpy as np
  from flax import nnx

  from jaxghpo import models, parallel, rl

  cfg = models.ModelConfig(**{**QWEN25_05B, "num_layers": args.layers}, remat=args.remat, attention=args.attention)
  rl_cfg = rl.resolve_config(dict(micro_batches=args.micro_batches, logprob_chunk_tokens=args.logprob_chunk_tokens,
                                  learning_rate=1e-6))
  mesh = parallel.make_mesh((1, 1, 1), devices=jax.devices()[:1])
  optimizer = rl.make_optimizer(rl_cfg, 10)
  rng = np.random.default_rng(0)
  B, P, N = args.rows, args.prompt_len, args.new_tokens
  prompt_len = rng.integers(P // 2, P + 1, B)
  prompt_valid = np.arange(P)[None] >= (P - prompt_len)[:, None]
  response_valid = np.arange(N)[None] < rng.integers(1, N + 1, B)[:, None]
  batch = rl.make_batch(rng.integers(0, cfg.vocab_size, (B, P)), prompt_valid, rng.integers(0, cfg.vocab_size, (B, N)),
                        response_valid, rng.normal(size=B).astype(np.float32),
                        np.log(rng.uniform(0.01, 0.5, (B, N))) * response_valid)

  graphdef, state = nnx.split(models.abstract_model(cfg))
  shardings = parallel.param_shardings(state, mesh)
  step = rl.make_train_step(graphdef, rl_cfg, mesh, optimizer, shardings)
  abstract = jax.tree.map(lambda s, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shardings, state)
  opt_abstract = jax.tree.map(lambda s, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                              rl.optimizer_shardings(optimizer, abstract, shardings, mesh),
                              jax.eval_shape(optimizer.init, abstract))
  t0 = time.time()
  executable = step.lower(abstract, opt_abstract, batch, jax.random.key(0)).compile()
  compiled = em.CompiledMemory.of(executable)
  out = {"model_params": cfg.num_params(), "rows": B, "tokens_per_row": P + N, "micro_batches": args.micro_batches,
         "remat": args.remat, "attention": args.attention, "compiled_bytes": compiled.total,
         "compiled_temp_bytes": compiled.temporaries, "compile_seconds": round(time.time() - t0, 1)}
  print(f"compiled: {compiled.total / 1e9:.2f} GB (arguments {compiled.arguments / 1e9:.2f}, temporaries "
        f"{compiled.temporaries / 1e9:.2f}) in {out['compile_seconds']} s", flush=True)
  if not args.compile_only:
    model = parallel.shard_model(models.init_model(cfg, seed=0), mesh)
    _, params = nnx.split(model)
    del model
    opt_state = rl.init_opt_state(optimizer, params, shardings, mesh)
    t0 = time.time()
    as_compiled = lambda tree, like: jax.tree.unflatten(jax.tree.structure(like), jax.tree.leaves(tree))
    params, opt_state = as_compiled(params, abstract), as_compiled(opt_state, opt_abstract)
    with jax.set_mesh(mesh):  # the executable compiled above: no second compilation
      params, opt_state, metrics = executable(params, opt_state, batch, jax.random.key(0))
    loss = float(metrics["loss"])  # waits for the update
    out["update_seconds"] = round(time.time() - t0, 1)
    out["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["loss"] = loss
    print(f"update: {out['update_seconds']} s, peak resident "
          f"{out['peak_rss_bytes'] / 1e9:.2f} GB, loss {loss:.4f}", flush=True)
  print(json.dumps(out))
  return out


if __name__ == "__main__":
  main(parse_args())
