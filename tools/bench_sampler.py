"""New tokens per second: jaxghpo's sampler against transformers' ``generate`` (torch, CPU), in one run.

Same random Qwen2 weights (written by transformers, read by ``models.from_pretrained``), same batch of
prompts, EOS disabled so that every row produces exactly ``--new`` tokens; greedy, plain sampling (T = 1)
and filtered sampling (T = 1, top-k 50, top-p 0.95). Each timing is the best of ``--repeats`` calls after
a warm-up call (compilation excluded). transformers runs with each torch thread count in ``--hf_threads``;
the ratio is taken against the fastest of them.

  python tools/bench_sampler.py                       # hidden 256, 4 layers, batch 64, prompt 32, 64 new
  python tools/bench_sampler.py --hidden 64 --layers 2 --repeats 2
  python tools/bench_sampler.py --devices 2           # our sampler data-parallel over 2 host devices
  python tools/bench_sampler.py --deepconf_window 16  # evaluation's path: token confidences and DeepConf
                                                      # online stopping over 16-token windows (never firing)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

MODES = {  # name -> (temperature, top_k, top_p)
    "greedy": (0.0, 0, 1.0),
    "sampled": (1.0, 0, 1.0),
    "top-k 50 top-p 0.95": (1.0, 50, 0.95),
}


def parse_args():
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
  p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="our compute/param dtype")
  p.add_argument("--donate", type=int, default=None, choices=[0, 1],
                 help="1: preallocated cache donated to each call; 0: cache made inside the jitted call; "
                      "default: the Sampler's default")
  p.add_argument("--devices", type=int, default=1,
                 help="host devices for our sampler (rows sharded over a ('data',) mesh of this size)")
  p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of: " + ", ".join(MODES))
  p.add_argument("--hf_threads", default="2", help="comma-separated torch thread counts; empty skips transformers")
  p.add_argument("--platform", default="cpu", help="JAX platform for our sampler (cpu, or cuda where present)")
  p.add_argument("--tunix_python", default=os.environ.get("TUNIX_PYTHON", ""),
                 help="python of a virtual environment with google-tunix: also time Tunix's sampler "
                      "(tools/tunix_side.py) on the same weights and prompts; empty skips it")
  p.add_argument("--deepconf_window", type=int, default=0,
                 help="> 0: our sampler returns token confidences and tests DeepConf online stopping over windows "
                      "of this many tokens at every step, with a threshold that never stops a row (the cost of "
                      "evaluation's path); 0: the training sampler's path")
  p.add_argument("--profile", action="store_true",
                 help="also trace two of our greedy calls and print where the time goes, by XLA op kind")
  return p.parse_args()


ARGS = parse_args()
if ARGS.devices > 1:  # must be set before jax is imported
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             f" --xla_force_host_platform_device_count={ARGS.devices}").strip()
os.environ.setdefault("JAX_PLATFORMS", ARGS.platform)
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

from jaxghpo import models, parallel, rollout  # noqa: E402


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
  """Best wall time and the process CPU time of that call, after one warm-up call."""
  fn()
  best = (float("inf"), 0.0)
  for _ in range(repeats):
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
  return best


def make_ours(model, args):
  mesh = None
  if args.devices > 1:
    mesh = parallel.make_mesh((args.devices, 1, 1))
    parallel.shard_model(model, mesh)
  kw = {} if args.donate is None else {"donate_cache": bool(args.donate)}
  return rollout.Sampler(model, batch_size=args.batch, max_prompt_len=args.prompt, max_new_tokens=args.new,
                         mesh=mesh, return_confidence=args.deepconf_window > 0, **kw)


def bench_ours(sampler, model, prompts, args, mode):
  temperature, top_k, top_p = MODES[mode]
  seed = iter(range(10**6))
  # Confidences are >= 0, so a threshold of -1 tests the window at every step and never stops a row.
  stop = dict(stop_threshold=-1.0, stop_window=args.deepconf_window) if args.deepconf_window > 0 else {}

  def run():
    out = sampler(model, prompts, rng=jax.random.key(next(seed)), temperature=temperature, top_k=top_k,
                  top_p=top_p, eos_id=None, **stop)
    lengths = np.asarray(out.lengths)  # waits for the device
    assert (lengths == args.new).all(), lengths
  return best_of(run, args.repeats)


def bench_hf(hf_model, prompts, args, mode, threads):
  temperature, top_k, top_p = MODES[mode]
  ids = torch.tensor(prompts)
  mask = torch.ones_like(ids)
  kw = dict(do_sample=False) if temperature == 0 else dict(do_sample=True, temperature=temperature, top_k=top_k,
                                                             top_p=top_p)

  def run():
    with torch.no_grad():
      out = hf_model.generate(ids, attention_mask=mask, max_new_tokens=args.new,
                              pad_token_id=0, **kw)
    assert out.shape == (len(prompts), args.prompt + args.new), out.shape
  torch.set_num_threads(threads)
  return best_of(run, args.repeats)


def profile_ours(sampler, model, prompts, args, calls=2):
  """Prints the time of our compiled ops per call, grouped by op kind (matmuls, and other fusions by name)."""
  import xla_profile
  run = lambda: np.asarray(sampler(model, prompts, rng=jax.random.key(0)).lengths)
  text = sampler.lower(model, prompts, rng=jax.random.key(0)).compile().as_text()
  xla_profile.print_profile("greedy", *xla_profile.profile(run, text, calls))


TUNIX_MODES = {"greedy": "greedy", "sampled": "sampled", "top-k 50 top-p 0.95": "filtered"}


def bench_tunix(model_dir, prompts, args, modes):
  """Tunix's sampler in its own virtual environment: {mode: seconds per call} (best of --repeats)."""
  import bench_models
  import tunix_side
  flags = ["--mode=sampler", "--group_size=1", f"--max_prompt_len={args.prompt}", f"--max_new_tokens={args.new}",
           f"--repeats={args.repeats}", f"--platform={args.platform}",
           "--eos_id=-2",  # no token ends a row: every row makes --new tokens, as ours and transformers'
           "--sampler_modes=" + ",".join(TUNIX_MODES[m] for m in modes)]
  texts = [bench_models.ids_to_text(p) for p in prompts]
  out = tunix_side.run(args.tunix_python, model_dir, texts, [""] * len(prompts), flags)
  return {m: out[TUNIX_MODES[m]]["seconds"] for m in modes}


def main(args):
  import bench_models
  tmp_dir = tempfile.TemporaryDirectory()
  tmp = tmp_dir.name
  hf_model = build_hf_model(args, tmp)
  bench_models.write_word_tokenizer(tmp, args.vocab)  # Tunix's sampler takes text
  model, _ = models.from_pretrained(tmp, dtype=jnp.dtype(args.dtype))
  prompts = np.random.default_rng(args.seed).integers(1, args.vocab, (args.batch, args.prompt)).tolist()
  new_tokens = args.batch * args.new
  sampler = make_ours(model, args)
  hf_threads = [int(t) for t in args.hf_threads.split(",") if t]
  print(f"qwen2 hidden {args.hidden}, {args.layers} layers, heads {args.heads}/{args.kv_heads}, mlp {args.mlp}, "
        f"vocab {args.vocab}; batch {args.batch}, prompt {args.prompt}, {args.new} new tokens (EOS off)\n"
        f"ours: {args.dtype}, donate_cache={sampler.donate_cache}, devices={args.devices}, "
        f"deepconf_window={args.deepconf_window}, "
        "cache layout=models.KVCache (k [B,KV,hd,S], v [B,KV,S,hd]); "
        f"jax {jax.__version__} on {jax.devices()[0].device_kind}; torch {torch.__version__}; "
        f"{os.cpu_count()} CPUs (affinity {len(os.sched_getaffinity(0))}); best of {args.repeats}")
  # All of ours first, then transformers: torch's worker threads keep spinning for a while after each
  # call and would slow down XLA's threads if the two were interleaved in this process.
  modes = args.modes.split(",")
  ours = {mode: bench_ours(sampler, model, prompts, args, mode) for mode in modes}
  theirs = {(mode, t): bench_hf(hf_model, prompts, args, mode, t) for t in hf_threads for mode in modes}
  tunix = bench_tunix(tmp, prompts, args, modes) if args.tunix_python else {}
  for mode in modes:
    wall, cpu = ours[mode]
    line = f"{mode:22s} ours {new_tokens / wall:8.0f} tok/s ({wall * 1e3:6.0f} ms, cpu {cpu * 1e3:6.0f} ms)"
    for threads in hf_threads:
      hf_wall, _ = theirs[mode, threads]
      line += f" | transformers {threads}t {new_tokens / hf_wall:7.0f} tok/s ({hf_wall * 1e3:6.0f} ms)"
    if hf_threads:
      line += f" | ratio {min(theirs[mode, t][0] for t in hf_threads) / wall:4.2f}x"
    if tunix:
      line += f" | tunix {new_tokens / tunix[mode]:7.0f} tok/s ({tunix[mode] * 1e3:6.0f} ms), ratio {tunix[mode] / wall:4.2f}x"
    print(line, flush=True)
  if args.profile:
    profile_ours(sampler, model, prompts, args)
  tmp_dir.cleanup()


if __name__ == "__main__":
  main(ARGS)
