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


# ------------------------------------------------------------------------------ the MATH path
# Qwen2.5's chat template without tools: a default system message when none is given, <|im_start|> role
# headers, and the assistant header after the last message.
QWEN_CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def math_rows(n: int = 32, seed: int = 0) -> list[dict]:
  """MATH-style rows: fraction sums with LaTeX solutions in blank-line-separated steps and a \\boxed answer."""
  import fractions
  import random
  rnd = random.Random(seed)
  rows = []
  while len(rows) < n:
    a, b, c, d = rnd.randint(1, 9), rnd.randint(2, 9), rnd.randint(1, 9), rnd.randint(2, 9)
    total = fractions.Fraction(a, b) + fractions.Fraction(c, d)
    common = b * d
    answer = (f"\\frac{{{total.numerator}}}{{{total.denominator}}}" if total.denominator != 1
              else str(total.numerator))
    steps = [f"We write both fractions over the common denominator ${common}$: "
             f"$\\frac{{{a}}}{{{b}}} = \\frac{{{a * d}}}{{{common}}}$ and $\\frac{{{c}}}{{{d}}} = "
             f"\\frac{{{c * b}}}{{{common}}}$.",
             f"Adding the numerators gives $\\frac{{{a * d + c * b}}}{{{common}}}$.",
             f"In lowest terms this is ${answer}$.",
             f"So the answer is $\\boxed{{{answer}}}$."]
    rows.append({"problem": f"What is $\\frac{{{a}}}{{{b}}} + \\frac{{{c}}}{{{d}}}$? Express your answer "
                            "as a common fraction.",
                 "solution": "\n\n".join(steps), "answer": answer, "level": f"Level {1 + len(rows) % 3}"})
  return rows


def make_math_tokenizer(vocab_size: int = 512):
  """A byte-level BPE tokenizer trained here on math text (fraction problems and their LaTeX solutions),
  with Qwen's special tokens and chat template: the tokenizer of a real math model, in miniature."""
  import tokenizers
  from tokenizers import decoders, models as tok_models, pre_tokenizers, trainers
  backend = tokenizers.Tokenizer(tok_models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(QWEN_SPECIALS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  from jaxghpo.data import templates
  corpus = [r["problem"] + "\n" + r["solution"] for r in math_rows(200, seed=123)]
  corpus += list(templates.INSTRUCTIONS.values()) + [templates.GHPO_HINT_SENTENCE]
  backend.train_from_iterator(corpus, trainer)
  tok = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>",
                                             pad_token="<|endoftext|>", clean_up_tokenization_spaces=False)
  tok.chat_template = QWEN_CHAT_TEMPLATE
  return tok


def make_math_policy(out_dir: str, seed: int = 0) -> str:
  """A tiny random Qwen2 whose vocabulary is make_math_tokenizer()'s, saved with it in HF format."""
  tok = make_math_tokenizer()
  torch.manual_seed(seed)
  config = transformers.Qwen2Config(
      vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
      num_key_value_heads=1, max_position_embeddings=1024, rms_norm_eps=1e-6, rope_theta=10000.0,
      tie_word_embeddings=True, bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
  model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
  model.save_pretrained(out_dir, safe_serialization=True)
  tok.save_pretrained(out_dir)
  return out_dir
