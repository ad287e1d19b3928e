"""GHPO on Qwen2.5-Math-7B with Math3to5, as in the paper (arXiv 2507.10628), on a TPU v5p-64 slice.

Settings from the paper: G = 8 samples per problem at temperature 1.0; lr 1e-6 with
cosine decay; no KL (beta = 0); clip 0.2; one update per batch (ppo_epochs 1, so the ratio is 1);
prompts and completions up to 2048 tokens each; all-wrong groups re-sampled within the step with the
first 25% / 50% / 75% of the reference solution in the prompt; plain GRPO for the first 20 steps (cold
start); rewards 1.0 x math accuracy + 0.5 x format (\\boxed{}), difficulty judged on accuracy alone.
Choices the paper does not fix, and ours: 64 problems per step (512 sequences), token-mean loss,
hint cut on token boundaries (the paper cut characters, mid-token and mid-formula), 300 steps
(about two passes over Math3to5's 8.9k problems), AdamW weight decay 0.0 and gradient clipping at 1.0.

Precision: parameters and AdamW moments are stored in float32 (master weights; at lr 1e-6 a bfloat16
weight would round most updates away: its spacing is 0.4-0.8% of its size); matmuls and the KV cache run
in bfloat16 (config.model.dtype).

Mesh: a v5p-64 slice is 32 chips (JAX sees one device per chip) on 8 hosts of 4 chips.
(data, fsdp, tensor) = (1, 8, 4): parameters are sharded 8-way over fsdp (model dim) and 4-way over
tensor (Qwen2.5-7B's 28 heads, 4 KV heads, 18944 MLP units and 152064 vocabulary all divide by 4);
sequences are split 8-way. Attention is the Pallas splash kernel (model.attention = "splash": no
[heads, T, T] scores, compiled by Mosaic), each block is rematerialised keeping only the rotated q, k, v and
attention's output (model.remat = "qkv_context": the backward pass recomputes the norms and the MLP's gate and
up projections, never the attention), and logprobs come from the LM head in blocks of 4096 tokens
(rl.logprob_chunk_tokens), so a micro-batch holds 16 sequences of 4096 tokens (65,536 tokens) per device:
4 micro-batches per step (512 sequences / 8 batch shards / 16), 4 fsdp weight gathers per step instead of 8.

Memory per device, compiled (never run) by XLA:TPU for v5p-64 on a CPU host (libtpu 0.0.42.1,
`python tools/compile_tpu.py --config=configs/qwen25_math_7b_ghpo.py --slice=v5p-64`; BENCHMARKS.md, XLA:TPU),
GB = 1e9 bytes; these are compile-time figures, not measurements on a TPU:

    train step                38.32 GB per device (40% of 95 GB; 35.45 GB temporaries, 2.86 GB params + AdamW)
    training sampler           5.53 GB (prefill 2.31 GB, one decode step 4.88 GB; 64 prompts x 8 samples,
                                        2048 + 2048 KV slots: 3.76 GB of cache)
    evaluation sampler         5.54 GB
    (the optimizer state, 1.91 GB, stays resident while the samplers run)

The analytic estimate (jaxghpo/memory_estimate.py with XLA:TPU's constants, `tools/estimate_memory.py
--platform=tpu`) gives 38.23 GB for the train step. Before this wave the config kept every weight matmul's
output (dots_saveable) at 8 sequences per device per micro-batch: XLA:TPU compiled that step to 60.35 GB
(71.89 GB with optimization barriers ordering the remat, now a data dependency on TPU too), where fake CPU
devices had reported 49.34 GB and the estimate 42.04 GB: the CPU figure was not an upper bound. The saved
activations per token and layer fell from about 57 KB (the dots, the block input and the o/down outputs in
float32) to 11 KB (q, k, v, attention's output, the block input); the price is the MLP's gate and up
projections computed twice (+19% of the step's model FLOPs).

Run (every host, through tools/launch_tpu.sh). The model and data are read from local paths on every
host (a copy on each host's disk or a gcsfuse mount; no hub downloads). The workdir must be shared by
all hosts: a gs:// URL works directly (checkpoints through orbax, every other file through
jaxghpo/paths.py; gcsfs and the VM's service account give access). Math3to5 JSONL rows carry `problem` and `solution`, and `answer` and `solution_hint` when
present: hints are cut from `solution_hint`, the answer is else taken from the last \\boxed{} of the
solution; other field names go in config.data.fields):

    tools/launch_tpu.sh --name=TPU --zone=ZONE --sync --setup --config=configs/qwen25_math_7b_ghpo.py \\
        --workdir=gs://BUCKET/ghpo/qwen25_math_7b -- \\
        --config.model.path=/path/to/Qwen2.5-Math-7B --config.data.files=/path/to/math3to5.jsonl

Plain GRPO for comparison: `--config.curriculum.mode=none`.
"""
import ml_collections

from configs.base import get_base_config
from jaxghpo import evaluation

# The shape of Qwen2.5-Math-7B's config.json: tools/estimate_memory.py and tests/test_configs.py use it
# to size and check this config without the weights. The run itself reads config.json from model.path.
MODEL_SHAPE = dict(model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_layers=28,
                   num_heads=28, num_kv_heads=4, head_dim=128, rope_theta=10000.0, tie_word_embeddings=False,
                   attention_bias=True, max_position_embeddings=4096, rms_norm_eps=1e-6)
SLICE = "v5p-64"
NUM_CHIPS = 32
HBM_BYTES_PER_CHIP = 95e9  # v5p


def get_config() -> ml_collections.ConfigDict:
  c = get_base_config()
  c.mode = "rl"
  c.seed = 0
  c.num_steps = 300
  c.checkpoint_every_steps = 20
  c.keep_checkpoints = 3
  c.log_every_steps = 1
  c.eval_every_steps = 50

  c.model.path = ""  # required: --config.model.path=/path/to/Qwen2.5-Math-7B (HF dir: config.json, safetensors, tokenizer)
  c.model.dtype = "bfloat16"
  c.model.param_dtype = "float32"
  c.model.attention = "splash"  # TPU Pallas kernel, per device over the mesh
  c.model.remat = "qkv_context"  # keep q, k, v and attention's output; recompute the MLP

  c.mesh.shape = (1, 8, 4)

  c.data.source = "files"
  c.data.files = ()  # required: --config.data.files=/path/to/math3to5.jsonl (several: "('a.jsonl', 'b.jsonl')")
  c.data.style = "boxed"
  c.data.prompts_per_step = 64
  c.data.on_bad_row = "error"

  c.rollout.group_size = 8
  c.rollout.max_prompt_len = 2048
  c.rollout.max_new_tokens = 2048
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0

  c.hints.unit = "tokens"
  c.hints.placement = "prompt"
  c.hints.corruption = "none"

  c.rewards.weights = ml_collections.ConfigDict({"math": 1.0, "format": 0.5})
  c.rewards.accuracy = "math"
  c.rewards.format_pattern = "boxed"

  c.rl.learning_rate = 1e-6
  c.rl.lr_schedule = "warmup_cosine"
  c.rl.warmup_steps = 0
  c.rl.end_lr_ratio = 0.0
  c.rl.weight_decay = 0.0
  c.rl.max_grad_norm = 1.0
  c.rl.kl_coef = 0.0
  c.rl.clip_low = 0.2
  c.rl.clip_high = 0.2
  c.rl.ppo_epochs = 1
  c.rl.loss_agg = "token-mean"
  c.rl.micro_batches = 4  # 16 sequences x 4096 tokens per device per micro-batch
  c.rl.logprob_chunk_tokens = 4096

  c.curriculum.mode = "ghpo"
  c.curriculum.ladder = (0.25, 0.5, 0.75)
  c.curriculum.cold_start_steps = 20

  # Evaluation on held-out MATH-style files (--config.eval.files="('a.jsonl', 'b.jsonl')"); none by default.
  c.eval.files = ()
  c.eval.num_problems = 500
  c.eval.num_samples = 8
  c.data.task_configs.files.hard_levels = (5,)  # MATH level 5: the training metrics' */hard groups
  c.evals.sampled.temperature = 1.0
  c.evals.greedy = evaluation.evaluator_config(temperature=0.0, samples=1)  # greedy pass@1 beside the sampled one
  return c
