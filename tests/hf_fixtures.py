"""Tiny random Hugging Face models built locally with torch (no hub access), shared by the tests."""
from __future__ import annotations

import torch
import transformers

BASE = dict(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0)

FAMILIES = {
    # Qwen2: q/k/v biases, untied embeddings.
    "qwen2": lambda: transformers.Qwen2Config(**BASE, rope_theta=10000.0, tie_word_embeddings=False),
    # Qwen3: q/k RMSNorm, no bias, explicit head_dim different from hidden/heads.
    "qwen3": lambda: transformers.Qwen3Config(**BASE, head_dim=32, rope_theta=1000000.0, tie_word_embeddings=False),
    # Llama 3: llama3 rope scaling, tied embeddings.
    "llama": lambda: transformers.LlamaConfig(
        **BASE, tie_word_embeddings=True, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 32}),
}


def make_hf_model(family: str, out_dir: str, seed: int = 0, dtype=torch.float32):
  """Builds a random tiny HF model (biases and norms randomised too, so parity checks them), saves it."""
  torch.manual_seed(seed)
  config = FAMILIES[family]()
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("bias") or "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  model.eval()
  model.save_pretrained(out_dir, safe_serialization=True)
  return model
