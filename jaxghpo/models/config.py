"""Model hyper-parameters, read from and written to Hugging Face ``config.json`` dicts."""
from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

# model_type -> our architecture name; the HF class name we write back.
ARCHITECTURES = {
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "llama": "LlamaForCausalLM",
}
_ARCH_CLASS_TO_TYPE = {v: k for k, v in ARCHITECTURES.items()}

ATTENTION_IMPLEMENTATIONS = ("xla", "cudnn", "splash")  # models.attention.IMPLEMENTATIONS
REMAT_POLICIES = ("none", "dots_saveable", "full", "qkv_context", "qkv_context_offload_mlp")  # transformer.remat_policy
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Decoder hyper-parameters (Qwen2/2.5, Qwen3, Llama 3 families).

  attention_bias: q/k/v projections carry a bias (Qwen2; optional for Llama).
  qk_norm: RMSNorm over head_dim on queries and keys before RoPE (Qwen3).
  rope_scaling: None or a tuple of (key, value) pairs, e.g. Llama 3's
    (("rope_type", "llama3"), ("factor", 8.0), ...); a tuple keeps the config hashable for jit.
  dtype: compute dtype name; param_dtype: storage dtype name ("float32" | "bfloat16").
  attention: how self-attention over a call's own tokens is computed (models.attention:
    "xla" | "cudnn" | "splash"); decode steps over the KV cache always use the plain einsum path.
  remat: what the backward pass keeps of each block's forward (REMAT_POLICIES): "none" keeps all,
    "dots_saveable" keeps the outputs of the weight matmuls and recomputes the rest (attention
    scores, norms, activations), "full" keeps only each block's input, "qkv_context" keeps the rotated
    q, k, v and attention's output by name (the MLP is recomputed), "qkv_context_offload_mlp" also keeps
    the MLP's gate and up outputs in host memory (TPU); transformer.remat_policy says more.
  attention and remat are run-time choices: not read from or written to config.json.
  """
  model_type: str
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float = 10000.0
  rope_scaling: tuple | None = None
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = False
  attention_bias: bool = False
  qk_norm: bool = False
  max_position_embeddings: int = 4096
  bos_token_id: int | None = None
  eos_token_id: int | tuple[int, ...] | None = None
  pad_token_id: int | None = None
  dtype: str = "float32"
  param_dtype: str = "float32"
  attention: str = "xla"
  remat: str = "none"

  def __post_init__(self):
    if self.model_type not in ARCHITECTURES:
      raise ValueError(f"model_type {self.model_type!r} is not supported; supported: {sorted(ARCHITECTURES)}")
    if self.num_heads % self.num_kv_heads:
      raise ValueError(f"num_attention_heads={self.num_heads} must be a multiple of "
                       f"num_key_value_heads={self.num_kv_heads}")
    for name in ("dtype", "param_dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"{name}={getattr(self, name)!r} is not one of {sorted(DTYPES)}")
    if self.attention not in ATTENTION_IMPLEMENTATIONS:
      raise ValueError(f"attention={self.attention!r} (config.model.attention) is not one of "
                       f"{ATTENTION_IMPLEMENTATIONS}")
    if self.remat not in REMAT_POLICIES:
      raise ValueError(f"remat={self.remat!r} (config.model.remat) is not one of {REMAT_POLICIES}")
    if self.model_type == "qwen2" and not self.attention_bias:
      # Qwen2's config.json has no attention_bias field: transformers (and from_pretrained) always build
      # q/k/v biases, so such a model could be trained but its export would not load.
      raise ValueError("model_type='qwen2' always has q/k/v biases (its config.json cannot turn them off): "
                       "set attention_bias=True, or use model_type='llama' for the same decoder without biases")

  @property
  def compute_dtype(self):
    return DTYPES[self.dtype]

  @property
  def storage_dtype(self):
    return DTYPES[self.param_dtype]

  @property
  def rope_scaling_dict(self) -> dict | None:
    return dict(self.rope_scaling) if self.rope_scaling else None

  def replace(self, **kw) -> "ModelConfig":
    return dataclasses.replace(self, **kw)

  def num_params(self) -> int:
    d, f, v, L = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_layers
    q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
    attn = d * q + 2 * d * kv + q * d + (q + 2 * kv if self.attention_bias else 0)
    attn += 2 * self.head_dim if self.qk_norm else 0
    layer = attn + 3 * d * f + 2 * d
    return v * d * (1 if self.tie_word_embeddings else 2) + L * layer + d

  # ---- Hugging Face config.json ---------------------------------------------------------------
  @classmethod
  def from_hf_dict(cls, hf: dict[str, Any], *, dtype: str | None = None,
                   param_dtype: str | None = None, source: str = "config.json", attention: str = "xla",
                   remat: str = "none") -> "ModelConfig":
    model_type = hf.get("model_type")
    if model_type is None:
      archs = hf.get("architectures") or []
      model_type = next((_ARCH_CLASS_TO_TYPE[a] for a in archs if a in _ARCH_CLASS_TO_TYPE), None)
    if model_type not in ARCHITECTURES:
      raise ValueError(
          f"{source}: model_type={hf.get('model_type')!r} (architectures={hf.get('architectures')}) is not "
          f"supported; jaxghpo implements {sorted(ARCHITECTURES)}. Add a family in jaxghpo/models/ to load it.")
    if hf.get("use_sliding_window"):
      raise ValueError(f"{source}: use_sliding_window=true is not implemented; set it to false "
                       "(Qwen2 checkpoints ship it off)")
    act = hf.get("hidden_act", "silu")
    if act != "silu":
      raise ValueError(f"{source}: hidden_act={act!r} is not supported (only silu / SwiGLU)")
    # transformers >= 5 keeps theta and scaling in rope_parameters; older files keep them at the top.
    rope = dict(hf.get("rope_parameters") or {})
    theta = float(rope.pop("rope_theta", hf.get("rope_theta", 10000.0)))
    scaling = hf.get("rope_scaling") or rope or None
    if scaling:
      scaling = dict(scaling)
      scaling.pop("rope_theta", None)
      kind = scaling.get("rope_type", scaling.get("type", "default"))
      if kind == "default":
        scaling = None
      elif kind != "llama3":
        raise ValueError(f"{source}: rope_scaling type {kind!r} is not supported (default, llama3)")
      else:
        scaling = tuple(sorted((k, v) for k, v in scaling.items() if k != "type"))
    num_heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // num_heads
    if model_type == "qwen2":
      bias = True
    else:
      bias = bool(hf.get("attention_bias", False))
    if hf.get("mlp_bias"):
      raise ValueError(f"{source}: mlp_bias=true is not supported")
    src_dtype = hf.get("torch_dtype") or hf.get("dtype") or "float32"
    return cls(
        model_type=model_type,
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        intermediate_size=hf["intermediate_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=num_heads,
        num_kv_heads=hf.get("num_key_value_heads") or num_heads,
        head_dim=head_dim,
        rope_theta=theta,
        rope_scaling=scaling,
        rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        attention_bias=bias,
        qk_norm=model_type == "qwen3",
        max_position_embeddings=hf.get("max_position_embeddings", 4096),
        bos_token_id=hf.get("bos_token_id"),
        eos_token_id=tuple(hf["eos_token_id"]) if isinstance(hf.get("eos_token_id"), list) else hf.get("eos_token_id"),
        pad_token_id=hf.get("pad_token_id"),
        dtype=dtype or (src_dtype if src_dtype in DTYPES else "float32"),
        param_dtype=param_dtype or dtype or (src_dtype if src_dtype in DTYPES else "float32"),
        attention=attention,
        remat=remat,
    )

  def to_hf_dict(self) -> dict[str, Any]:
    out = {
        "architectures": [ARCHITECTURES[self.model_type]],
        "model_type": self.model_type,
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "intermediate_size": self.intermediate_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "num_key_value_heads": self.num_kv_heads,
        "head_dim": self.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": self.max_position_embeddings,
        "rms_norm_eps": self.rms_norm_eps,
        "rope_theta": self.rope_theta,
        "rope_scaling": self.rope_scaling_dict,
        "tie_word_embeddings": self.tie_word_embeddings,
        "bos_token_id": self.bos_token_id,
        "eos_token_id": list(self.eos_token_id) if isinstance(self.eos_token_id, tuple) else self.eos_token_id,
        "pad_token_id": self.pad_token_id,
        "torch_dtype": self.param_dtype,
        "use_cache": True,
    }
    if self.model_type == "llama":
      out["attention_bias"] = self.attention_bias
      out["mlp_bias"] = False
    if self.model_type == "qwen3":
      out["attention_bias"] = self.attention_bias
    if self.model_type == "qwen2":
      out["use_sliding_window"] = False
    if self.rope_scaling is not None:
      # transformers >= 5 reads rope_parameters; older versions read rope_theta + rope_scaling.
      out["rope_parameters"] = {**self.rope_scaling_dict, "rope_theta": self.rope_theta}
    return out
