"""A tiny random policy for the chains task, saved in HF format, and small configs for loop tests."""
from __future__ import annotations

import os

from jaxghpo import models
from jaxghpo.data import tokenizer as tok_lib


def make_tiny_policy(out_dir: str, seed: int = 0) -> str:
  tok = tok_lib.load(tok_lib.task_tokenizer_path())
  cfg = models.ModelConfig(model_type="qwen2", vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                           num_heads=2, num_kv_heads=2, head_dim=16, tie_word_embeddings=True, attention_bias=True,
                           bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                           pad_token_id=tok.pad_token_id)
  models.save_pretrained(models.init_model(cfg, seed=seed), cfg, out_dir)
  tok.save_pretrained(out_dir)
  return out_dir


def tiny_config(model_dir: str, **overrides):
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  if root not in sys.path:
    sys.path.insert(0, root)
  from configs import smoke
  c = smoke.get_config()
  c.model.path = model_dir
  c.num_steps = 4
  c.checkpoint_every_steps = 2
  c.rollout.max_new_tokens = 24
  c.rollout.max_prompt_len = 40
  c.data.task_configs.chains.train_levels = {"2": 1.0, "3": 1.0}
  c.data.task_configs.chains.easy_levels = (2,)
  c.data.task_configs.chains.hard_levels = (3,)
  c.eval.num_problems = 4
  c.export_at_end = True
  for key, value in overrides.items():
    node = c
    *path, leaf = key.split(".")
    for p in path:
      node = node[p]
    node[leaf] = value
  return c
