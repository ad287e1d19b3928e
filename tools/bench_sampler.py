"""New tokens per second: jaxghpo's sampler against transformers' ``generate`` (torch, CPU), one run.

Same random Qwen2 weights (written by transformers, read by ``models.from_pretrained``), same batch of
prompts, EOS disabled so every row produces exactly ``--new`` tokens; greedy, plain sampling (T = 1) and
filtered sampling (T = 1, top-k 50, top-p 0.95). Each timing is the best of ``--repeats`` calls after a
warm-up call (compilation excluded).

  python tools/bench_sampler.py                       # hidden 256, 4 layers, batch 64, prompt 32, 64 new
  python tools/bench_sampler.py --hidden 64 --layers 2 --repeats 2
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from jaxghpo import models, rollout  # noqa: E402

MODES = {  # name -> (temperature, top_k, top_p)
    "greedy": (0.0, 0, 1.0),
    "sampled": (1.0, 0, 1.0),
    "sampled top-k 50 top-p 0.95": (1.0, 50, 0.95),
}


def build_hf_model(args, out_dir):
  torch.manual_seed(args.seed)
  config = transformers.Qwen2Config(
      vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.mlp, num_hidden_layers=args.layers,
      num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, max_position_embeddings=512,
      tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=0)
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
  model.generation_config.eos_token_id = None
  model.generation_config.pad_token_id = 0
  model.save_pretrained(out_dir, safe_serialization=True)
  return model


def best_of(fn, repeats):
  fn()  # warm-up (compiles the JAX side)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def bench_ours(model, prompts, args, mode):
  temperature, top_k, top_p = MODES[mode]
  sampler = rollout.Sampler(model, batch_size=len(prompts), max_prompt_len=args.prompt, max_new_tokens=args.new,
                            cache_dtype=args.cache_dtype, donate_cache=args.donate)
  seed = iter(range(10**6))

  def run():
    out = sampler(model, prompts, rng=jax.random.key(next(seed)), temperature=temperature, top_k=top_k,
                  top_p=top_p, eos_id=None)
    lengths = np.asarray(out.lengths)  # blocks until done
    assert (lengths == args.new).all(), lengths
  return best_of(run, args.repeats)


def bench_hf(hf_model, prompts, args, mode):
  temperature, top_k, top_p = MODES[mode]
  ids = torch.tensor(prompts)
  mask = torch.ones_like(ids)
  kw = dict(do_sample=False) if temperature == 0 else dict(do_sample=True, temperature=temperature, top_k=top_k,
                                                             top_p=top_p)

  def run():
    with torch.no_grad():
      out = hf_model.generate(ids, attention_mask=mask, max_new_tokens=args.new, pad_token_id=0, **kw)
    assert out.shape == (len(prompts), args.prompt + args.new), out.shape
  return best_of(run, args.repeats)


def main():
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--hidden", type=int, default=256)
  p.add_argument("--layers", type=int, default=4)
  p.add_argument("--heads", type=int, default=4)
  p.add_argument("--kv_heads", type=int, default=2)
  p.add_argument("--mlp", type=int, default=1024)
  p.add_argument("--vocab", type=int, default=1000)
  p.add_argument("--batch", type=int, default=64)
  p.add_argument("--prompt", type=int, default=32)
  p.add_argument("--new", type=int, default=64)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="our compute dtype")
  p.add_argument("--cache_dtype", default=None)
  p.add_argument("--donate", action="store_true", help="preallocated, donated cache instead of one made in jit")
  p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
  p.add_argument("--skip_hf", action="store_true")
  args = p.parse_args()

  with tempfile.TemporaryDirectory() as tmp:
    hf_model = build_hf_model(args, tmp)
    model, cfg = models.from_pretrained(tmp, dtype=jnp.dtype(args.dtype))
  prompts = np.random.default_rng(args.seed).integers(1, args.vocab, (args.batch, args.prompt)).tolist()
  new_tokens = args.batch * args.new
  print(f"model: qwen2 hidden {args.hidden}, {args.layers} layers, heads {args.heads}/{args.kv_heads}, "
        f"mlp {args.mlp}, vocab {args.vocab}; batch {args.batch}, prompt {args.prompt}, {args.new} new tokens; "
        f"ours {args.dtype} (cache {args.cache_dtype or args.dtype}, donate={args.donate}); "
        f"jax {jax.__version__} on {jax.devices()[0].platform} x{len(jax.devices())}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {os.cpu_count()} CPUs")
  for mode in args.modes.split(","):
    ours = best_of_s = bench_ours(model, prompts, args, mode)
    line = f"{mode:30s} ours {new_tokens / ours:9.0f} tok/s ({best_of_s * 1e3:7.1f} ms)"
    if not args.skip_hf:
      theirs = bench_hf(hf_model, prompts, args, mode)
      line += f" | transformers {new_tokens / theirs:9.0f} tok/s ({theirs * 1e3:7.1f} ms) | ratio {theirs / ours:5.2f}x"
    print(line, flush=True)


if __name__ == "__main__":
  main()
