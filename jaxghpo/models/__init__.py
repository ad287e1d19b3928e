"""Native flax.nnx decoders (Qwen2/2.5, Qwen3, Llama 3) with Hugging Face safetensors import/export."""
from jaxghpo.models.config import ARCHITECTURES, ModelConfig
from jaxghpo.models.hf import from_pretrained, load_config, save_pretrained
from jaxghpo.models.transformer import (
    KVCache,
    Transformer,
    abstract_model,
    causal_mask,
    init_model,
    logits,
    logits_padded,
    padding_segments,
    positions_from_valid,
    remat_policy,
)
