"""The benchmark tools' own arithmetic: FLOP counts and the shared model/tokenizer files they write."""
import os
import sys

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import bench_models  # noqa: E402
import bench_train_step  # noqa: E402


def test_model_flops_by_hand():
  """hidden 64 (2 heads of 32, 1 KV head, MLP 256), 1 layer, vocab 10, 1 row of 4 tokens:
  per token 2 * (64*64 + 2*64*32 + 64*64 + 3*64*256) = 2 * 61440 = 122880, LM head 2 * 64 * 10 = 1280;
  attention 2 * 2 * 4 * 4 * 64 = 4096 per sequence; forward 4 * (122880 + 1280) + 4096 = 500736; x3."""
  from jaxghpo import models
  d = bench_models.dims(64)
  assert d == dict(head_dim=32, heads=2, kv_heads=1, mlp=256)
  cfg = models.ModelConfig(model_type="qwen2", vocab_size=10, hidden_size=64, intermediate_size=256,
                           num_layers=1, num_heads=2, num_kv_heads=1, head_dim=32, attention_bias=True)
  assert bench_train_step.model_flops(cfg, rows=1, T=4) == 3 * 500736


def test_model_flops_agree_with_xla_cost_analysis():
  """The counted FLOPs (matmuls only) never exceed what XLA counts in the compiled step (everything), so the
  reported FLOP/s is not inflated, and they are most of it (the rest: norms, softmax, optimizer)."""
  args = bench_train_step.parse_args(["--hidden=256", "--layers=1", "--rows=8", "--prompt_len=8",
                                      "--new_tokens=8"])
  cfg, step, params, opt_state, batch = bench_train_step.make_step(args)
  cost = step.lower(params, opt_state, batch, jax.random.key(0)).compile().cost_analysis()
  xla = float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"])
  counted = bench_train_step.model_flops(cfg, rows=8, T=16)  # at width 256 the elementwise work is small
  assert 0.9 * xla < counted <= xla, (counted, xla)


def test_word_tokenizer_round_trips_ids(tmp_path):
  """Random id prompts become text that an HF tokenizer (what Tunix's sampler uses) encodes back to the ids."""
  import transformers
  bench_models.write_word_tokenizer(str(tmp_path), 50)
  tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
  ids = np.random.default_rng(0).integers(1, 50, 12).tolist() + [1, 10, 14, 0]
  assert tok.encode(bench_models.ids_to_text(ids), add_special_tokens=False) == ids
  assert tok.pad_token_id == 0
