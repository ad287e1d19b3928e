"""Train-step efficiency: achieved FLOP/s of jaxghpo's RL train step over this machine's measured matmul peak.

1. The peak: the best rate of a jitted float32 (or --dtype) `a @ b` in JAX on this machine, over square
   sizes 512-2048 and the train step's own largest matmul shape, best of --repeats runs each (2 n^3
   FLOP per n x n product).
2. The step: `rl.make_train_step` (forward, backward, AdamW; clipped PPO loss with a k3 KL term) on a
   random Qwen2 of the benchmark family (tools/bench_models.dims) and a batch of --rows sequences of
   --prompt_len + --new_tokens tokens, best of --repeats steps after a warm-up step.
3. FLOPs of the step, counted from the model: every matmul of the forward pass (2 x multiply-adds:
   q/k/v/o, MLP, LM head; attention's QK^T and PV over the full T x T tile, as computed), times 3 for
   forward + backward (weights' and activations' gradients). XLA's own cost analysis of the compiled
   step is printed beside it.

  python tools/bench_train_step.py                      # hidden 512, 8 layers, 128 rows x (64 + 64)
  python tools/bench_train_step.py --profile            # adds where the step's time goes, by XLA op kind
"""
from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--hidden", type=int, default=512)
  p.add_argument("--layers", type=int, default=8)
  p.add_argument("--vocab", type=int, default=64, help="64: the embedded task's tokenizer")
  p.add_argument("--rows", type=int, default=128, help="sequences per step (P x G)")
  p.add_argument("--prompt_len", type=int, default=64)
  p.add_argument("--new_tokens", type=int, default=64)
  p.add_argument("--kl_coef", type=float, default=0.04)
  p.add_argument("--micro_batches", type=int, default=1, help="config.rl.micro_batches (gradient accumulation)")
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--peak_sizes", default="512,1024,2048",
                 help="square matmul sizes for the peak (an accelerator needs larger: 2048,4096,8192)")
  p.add_argument("--platform", default="cpu")
  p.add_argument("--devices", type=int, default=1,
                 help="data-parallel over this many host devices (XLA's --xla_force_host_platform_device_count)")
  p.add_argument("--profile", action="store_true")
  return p.parse_args(argv)


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:
  os.environ.setdefault("JAX_PLATFORMS", ARGS.platform)
  if ARGS.devices > 1:  # must be set before jax is imported
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={ARGS.devices}").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import bench_models  # noqa: E402


def best_time(fn, repeats: int) -> float:
  fn()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - t0)
  return best


def matmul_peak(dtype, repeats: int, shapes) -> dict:
  """FLOP/s of a jitted `a @ b` per (m, k, n) shape; each call chains 8 products so dispatch is amortised."""
  out = {}
  for m, k, n in shapes:
    a = jnp.asarray(np.random.default_rng(0).standard_normal((m, k)), dtype)
    b = jnp.asarray(np.random.default_rng(1).standard_normal((k, n)), dtype)

    @jax.jit
    def f(a, b):
      return [a @ (b + i) for i in range(8)]  # 8 independent products; the adds are n*k, negligible

    sec = best_time(lambda: jax.block_until_ready(f(a, b)), repeats)
    out[(m, k, n)] = 8 * 2 * m * k * n / sec
  return out


def model_flops(cfg, rows: int, T: int) -> float:
  """Training FLOPs of one step: 3 x the forward pass's matmuls (see the module docstring)."""
  d, L = cfg.hidden_size, cfg.num_layers
  q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
  per_token_layer = 2 * (d * q + 2 * d * kv + q * d + 3 * d * cfg.intermediate_size)
  attention_layer = 2 * 2 * T * T * q  # QK^T and PV over the full tile, per sequence
  lm_head = 2 * d * cfg.vocab_size
  forward = rows * (T * (L * per_token_layer + lm_head) + L * attention_layer)
  return 3.0 * forward


def make_step(args):
  from flax import nnx
  from jaxghpo import models, parallel, rl
  d = bench_models.dims(args.hidden)
  cfg = models.ModelConfig(model_type="qwen2", vocab_size=args.vocab, hidden_size=args.hidden,
                           intermediate_size=d["mlp"], num_layers=args.layers, num_heads=d["heads"],
                           num_kv_heads=d["kv_heads"], head_dim=d["head_dim"], attention_bias=True,
                           dtype=args.dtype, param_dtype="float32")
  mesh = parallel.make_mesh((args.devices, 1, 1), devices=jax.devices()[:args.devices])
  with jax.set_mesh(mesh):
    model = parallel.shard_model(models.init_model(cfg), mesh)
  graphdef, params = nnx.split(model)
  rcfg = rl.resolve_config(dict(learning_rate=1e-5, lr_schedule="constant", kl_coef=args.kl_coef,
                                micro_batches=args.micro_batches))
  shardings = parallel.param_shardings(params, mesh)
  optimizer = rl.make_optimizer(rcfg, 1000)
  opt_state = rl.init_opt_state(optimizer, params, shardings, mesh)
  step = rl.make_train_step(graphdef, rcfg, mesh, optimizer, shardings)

  B, P, N = args.rows, args.prompt_len, args.new_tokens
  rs = np.random.RandomState(0)
  prompt_valid = np.arange(P)[None] >= (P - rs.randint(P // 4, P + 1, B))[:, None]
  response_valid = np.arange(N)[None] < rs.randint(N // 2, N + 1, B)[:, None]
  batch = rl.make_batch(rs.randint(3, args.vocab, (B, P)), prompt_valid, rs.randint(3, args.vocab, (B, N)),
                        response_valid, rs.randn(B).astype(np.float32), -np.abs(rs.randn(B, N)).astype(np.float32),
                        ref_logp=-np.abs(rs.randn(B, N)).astype(np.float32))
  batch = jax.device_put(batch, parallel.batch_sharding(mesh, 1))
  return cfg, step, params, opt_state, batch


def main(args):
  cfg, step, params, opt_state, batch = make_step(args)
  B, T = args.rows, args.prompt_len + args.new_tokens
  dtype = jnp.dtype(args.dtype)
  shapes = [(n, n, n) for n in map(int, args.peak_sizes.split(","))]
  shapes.append((B * T, cfg.hidden_size, cfg.intermediate_size))
  peaks = matmul_peak(dtype, args.repeats, shapes)
  peak = max(peaks.values())
  key = jax.random.key(0)
  compiled = step.lower(params, opt_state, batch, key).compile()
  cost = compiled.cost_analysis()
  xla_flops = float((cost[0] if isinstance(cost, (list, tuple)) else cost).get("flops", float("nan")))
  state = {"params": params, "opt": opt_state}

  def run():
    state["params"], state["opt"], metrics = step(state["params"], state["opt"], batch, key)
    jax.block_until_ready((state["params"], metrics))

  sec = best_time(run, args.repeats)
  flops = model_flops(cfg, B, T)
  n_params = sum(x.size for x in jax.tree.leaves(state["params"]))
  print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({len(os.sched_getaffinity(0))} CPUs), "
        f"{args.dtype}; best of {args.repeats}")
  for (m, k, n), rate in peaks.items():
    print(f"  matmul [{m}x{k}] @ [{k}x{n}]: {rate / 1e9:7.1f} GFLOP/s")
  print(f"peak (best of the above): {peak / 1e9:.1f} GFLOP/s")
  print(f"train step: qwen2 hidden {args.hidden} x {args.layers} layers ({n_params / 1e6:.1f}M params), "
        f"{B} rows x {T} tokens in {args.micro_batches} micro-batches, KL {args.kl_coef}: {sec:.3f} s")
  print(f"  model FLOPs {flops / 1e9:.1f} G -> {flops / sec / 1e9:.1f} GFLOP/s = {100 * flops / sec / peak:.0f}% "
        f"of peak (XLA cost analysis: {xla_flops / 1e9:.1f} G)")
  if args.profile:
    import xla_profile
    xla_profile.print_profile("train step", *xla_profile.profile(run, compiled.as_text(), calls=2))


if __name__ == "__main__":
  main(ARGS)
