"""GHPO on the base Qwen2.5-7B with Math3to5, as in the paper, on a TPU v5p-64 slice.

Everything as configs/qwen25_math_7b_ghpo.py (read its docstring: settings, precision, mesh, memory);
only the model differs. Qwen2.5-7B has the same shapes as Qwen2.5-Math-7B (RoPE theta 1e6 and a
131072-token window instead of 10000 and 4096), so the per-device memory is the same: the train step
compiles by XLA:TPU for v5p-64 to 38.32 GB per device (the math config's docstring, BENCHMARKS.md):

    python tools/compile_tpu.py --config=configs/qwen25_7b_ghpo.py --slice=v5p-64

Run (the workdir may be a gs:// URL, as in the math config):

    tools/launch_tpu.sh --name=TPU --zone=ZONE --sync --setup --config=configs/qwen25_7b_ghpo.py \\
        --workdir=gs://BUCKET/ghpo/qwen25_7b -- \\
        --config.model.path=/path/to/Qwen2.5-7B --config.data.files=/path/to/math3to5.jsonl
"""
import ml_collections

from configs import qwen25_math_7b_ghpo as math_7b

# The shape of Qwen2.5-7B's config.json (for tools/estimate_memory.py and tests/test_configs.py).
MODEL_SHAPE = dict(math_7b.MODEL_SHAPE, rope_theta=1000000.0, max_position_embeddings=131072)
SLICE = math_7b.SLICE
NUM_CHIPS = math_7b.NUM_CHIPS
HBM_BYTES_PER_CHIP = math_7b.HBM_BYTES_PER_CHIP


def get_config() -> ml_collections.ConfigDict:
  c = math_7b.get_config()
  c.model.path = ""  # required: --config.model.path=/path/to/Qwen2.5-7B
  return c
