"""Random Qwen2 models and tokenizers for the benchmarks, written the way a user's checkpoint is: by transformers.

Both sides of a comparison read the same directory (config.json + model.safetensors + tokenizer), so
the weights, the vocabulary and the special tokens are the same for jaxghpo, transformers and Tunix.
"""
from __future__ import annotations

import json
import os
import shutil

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAINS_TOKENIZER = os.path.join(REPO, "jaxghpo", "assets", "chains_tokenizer")


def dims(hidden: int) -> dict:
  """The benchmark family at width `hidden`: head_dim 32 below 256 else 64, KV heads half the heads, MLP 4x."""
  head_dim = 64 if hidden >= 256 else 32
  heads = max(hidden // head_dim, 1)
  return dict(head_dim=head_dim, heads=heads, kv_heads=max(heads // 2, 1), mlp=4 * hidden)


def write_qwen2(out_dir: str, *, hidden: int, layers: int, vocab: int, seed: int = 0, heads: int | None = None,
                kv_heads: int | None = None, mlp: int | None = None, bos_id=None, eos_id=None, pad_id=0,
                tie: bool = False):
  """Random Qwen2 (q/k/v biases, as Qwen2 has) saved by transformers as float32 safetensors; returns the model."""
  import torch
  import transformers
  d = dims(hidden)
  heads = heads or d["heads"]
  config = transformers.Qwen2Config(
      vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp or d["mlp"], num_hidden_layers=layers,
      num_attention_heads=heads, num_key_value_heads=kv_heads or d["kv_heads"], head_dim=hidden // heads,
      max_position_embeddings=1024, tie_word_embeddings=tie, bos_token_id=bos_id, eos_token_id=eos_id,
      pad_token_id=pad_id, rms_norm_eps=1e-6)
  torch.manual_seed(seed)
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
  model.generation_config.eos_token_id = eos_id
  model.generation_config.pad_token_id = pad_id
  model.save_pretrained(out_dir, safe_serialization=True)
  return model


def copy_chains_tokenizer(out_dir: str) -> dict:
  """Puts the embedded task's tokenizer beside a model; returns its special ids."""
  for name in os.listdir(CHAINS_TOKENIZER):
    shutil.copy(os.path.join(CHAINS_TOKENIZER, name), out_dir)
  with open(os.path.join(CHAINS_TOKENIZER, "tokenizer.json")) as f:
    vocab = json.load(f)["model"]["vocab"]
  return {"vocab": len(vocab), "pad": vocab["<pad>"], "eos": vocab["<eos>"], "bos": vocab["<bos>"]}


def word(i: int) -> str:
  """The word of token id i: "<pad>" (0), "<unk>" (1), else "w{i}". The special words are no prefix of
  another word (transformers splits text at special tokens before the model sees it)."""
  return "<pad>" if i == 0 else "<unk>" if i == 1 else f"w{i}"


def write_word_tokenizer(out_dir: str, vocab: int) -> None:
  """A word-level HF tokenizer with one word per token id (see `word`), so random id prompts become
  text that every framework encodes back to the same ids."""
  from tokenizers import Tokenizer, models, pre_tokenizers, decoders
  words = {word(i): i for i in range(vocab)}
  tok = Tokenizer(models.WordLevel(words, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
  tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
  tok.save(os.path.join(out_dir, "tokenizer.json"))
  with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
    json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "unk_token": "<unk>",
               "model_max_length": 4096, "clean_up_tokenization_spaces": False}, f, indent=2)


def ids_to_text(ids) -> str:
  return " ".join(word(int(i)) for i in ids)
