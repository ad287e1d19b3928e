"""GHPO at 32,768 tokens per sequence (2,048 prompt + 30,720 response) on a TPU v5p-64 slice: long traces.

The model is the base Qwen2.5-7B, not Qwen2.5-Math-7B: the Math model's positions end at 4,096
(max_position_embeddings 4096, RoPE theta 1e4), the base model's at 131,072 (theta 1e6), so only the
base model can be trained on 32k-token traces. Everything else is configs/qwen25_math_7b_ghpo.py's
(G = 8, 64 problems per step, lr 1e-6, GHPO's ladder), except:
  - one sequence per device per micro-batch: 512 sequences / 8 batch shards = 64 per device, in 64
    micro-batches (rl.micro_batches);
  - blocks rematerialised keeping q, k, v and attention's output only (model.remat = "qkv_context": the
    MLP is recomputed in the backward pass; saved activations per token a quarter of dots_saveable's);
  - evaluation samples as long as training (eval sizes default to the rollout's).
The KV cache of the training sampler (64 prompts x 8 samples x 32,768 slots, bfloat16, 28 layers, the 4
KV heads split over tensor) is 30.1 GB per device.

Check it compiles and fits before reserving the slice (libtpu on any host, `pip install -e ".[tpu]"`):

    python tools/compile_tpu.py --config=configs/qwen25_math_7b_ghpo_32k.py --slice=v5p-64
    python -m jaxghpo.main --config=configs/qwen25_math_7b_ghpo_32k.py --workdir=/tmp/x --dry_run_slice=v5p-64

BENCHMARKS.md (XLA:TPU) has the compiled memory of every program and the predicted step.
"""
import ml_collections

from configs import qwen25_7b_ghpo

MODEL_SHAPE = qwen25_7b_ghpo.MODEL_SHAPE  # Qwen2.5-7B: 131,072 positions
SLICE = "v5p-64"
NUM_CHIPS = 32
HBM_BYTES_PER_CHIP = 95e9  # v5p


def get_config() -> ml_collections.ConfigDict:
  c = qwen25_7b_ghpo.get_config()
  c.rollout.max_prompt_len = 2048
  c.rollout.max_new_tokens = 30720
  c.model.remat = "qkv_context"
  c.rl.micro_batches = 64  # 1 sequence x 32,768 tokens per device per micro-batch
  return c
