"""Host cost of loading a Hugging Face checkpoint: seconds for `models.from_pretrained` of a 0.5B-shaped model.

`--write DIR` saves a random Qwen2.5-0.5B-shaped model (494M parameters, bfloat16 files, sharded at
--shard_mb) with the project's own save path (`models.save_pretrained`); then each repeat times
`models.from_pretrained(DIR, dtype=float32)` (read every shard, upcast, place on one CPU device).
Imports jaxghpo from PYTHONPATH, so one script times two checkouts:

  PYTHONPATH=. python tools/bench_load.py --write /tmp/q05b            # write once, then load
  PYTHONPATH=/work/main python tools/bench_load.py --dir /tmp/q05b      # load only (another checkout)
"""
from __future__ import annotations

import argparse
import os
import time

QWEN25_05B = dict(model_type="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_layers=24,
                  num_heads=14, num_kv_heads=2, head_dim=64, rope_theta=1000000.0, tie_word_embeddings=True,
                  attention_bias=True, max_position_embeddings=32768)


def write(out_dir: str, shard_mb: int, layers: int) -> None:
  import jax.numpy as jnp
  import ml_dtypes
  import numpy as np
  from flax import nnx

  from jaxghpo import models

  cfg = models.ModelConfig(**{**QWEN25_05B, "num_layers": layers})
  model = models.abstract_model(cfg)
  rng = np.random.default_rng(0)
  for _, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    shape = tuple(variable.get_value().shape)
    variable.set_value((0.02 * rng.standard_normal(shape, np.float32)).astype(ml_dtypes.bfloat16))
  os.makedirs(out_dir, exist_ok=True)
  models.save_pretrained(model, cfg, out_dir, dtype=jnp.bfloat16, max_shard_bytes=shard_mb * 2**20)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--dir", default="", help="an existing checkpoint directory to load")
  p.add_argument("--write", default="", help="write a random 0.5B-shaped checkpoint here first")
  p.add_argument("--shard_mb", type=int, default=256)
  p.add_argument("--layers", type=int, default=QWEN25_05B["num_layers"], help="fewer for a quick check")
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args(argv)
  if not (args.dir or args.write):
    p.error("give --write DIR (write then load) or --dir DIR (load)")
  import jax
  import jax.numpy as jnp

  from jaxghpo import models
  path = args.write or args.dir
  if args.write:
    t0 = time.perf_counter()
    write(path, args.shard_mb, args.layers)
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
  files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
  size_mb = sum(os.path.getsize(os.path.join(path, f)) for f in files) / 2**20
  best, best_cpu = float("inf"), float("inf")
  for _ in range(args.repeats):
    t0, c0 = time.perf_counter(), time.process_time()
    model, _ = models.from_pretrained(path, dtype=jnp.float32)
    jax.block_until_ready(jax.tree.leaves(model))
    best, best_cpu = min(best, time.perf_counter() - t0), min(best_cpu, time.process_time() - c0)
    del model
  # CPU seconds (all threads) are steadier than wall seconds on a shared machine.
  print(f"from_pretrained {path} ({len(files)} files, {size_mb:.0f} MB bf16 -> float32): {best:.2f} s wall, "
        f"{best_cpu:.2f} s CPU, best of {args.repeats} ({os.cpu_count()} CPUs; jaxghpo from "
        f"{os.path.dirname(models.__file__)})")


if __name__ == "__main__":
  main()
