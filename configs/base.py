"""The shared base of every experiment config: one place for each default.

An experiment file imports `get_base_config()` and changes what its experiment is about.
Every key can be overridden on the command line: --config.rollout.group_size=16.
"""
import ml_collections

from jaxghpo import curriculum, derived, evaluation, rewards, rl
from jaxghpo.data import tasks


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.mode = "rl"  # "rl" | "sft"
  c.seed = 0
  c.num_steps = 100
  c.max_gen_tokens = 0  # > 0: stop once this many budget tokens were spent (retries included); for equal budgets
  # What the budget counts (jaxghpo/budget.py): "generated" (sampled tokens only) | "context_and_generated"
  # (every token the policy conditions on or is trained on: prompt and hint of every sampled row, plus
  # its generated tokens).
  c.budget_rule = "generated"
  c.checkpoint_every_steps = 50
  c.keep_checkpoints = 3
  # Stop with an error after this many updates in a row were skipped for a non-finite loss or gradient
  # (no checkpoint is written during such a streak, so the good ones are kept); 0: never stop.
  c.max_skipped_updates_in_a_row = 3
  c.log_every_steps = 10  # console lines when not on a terminal
  c.eval_every_steps = 0  # 0: evaluate at the start and the end only
  # e.g. ("ghpo", "grpo"): python -m jaxghpo.main runs these arms of the embedded experiment
  # (jaxghpo/experiments/chains/arms.py) side by side in DIR/ARM, then compares them.
  c.arms = ()
  c.export_at_end = True  # models.save_pretrained(workdir/export) after the last step

  # The policy: a Hugging Face directory (safetensors + config.json + tokenizer), or "builtin:NAME"
  # for a model shipped in jaxghpo/assets/.
  c.model = ml_collections.ConfigDict()
  c.model.path = "builtin:chains_base"
  c.model.dtype = "float32"        # compute dtype
  c.model.param_dtype = "float32"  # storage dtype of the trained parameters
  c.model.tokenizer = ""           # default: the model directory
  # Self-attention of the train forward and the sampler's prefill (models.attention): "xla" (any
  # backend; materialises [heads, T, T] float32 scores), "cudnn" (GPU flash attention), "splash" (TPU
  # Pallas kernel, per device over the mesh; interpreted on CPU). Decode steps use the KV-cache path.
  c.model.attention = "xla"
  # Rematerialisation of each block in the backward pass: "none" | "dots_saveable" (keep the weight
  # matmuls' outputs, recompute the rest) | "full" (keep each block's input only) | "qkv_context" (keep q, k, v
  # and attention's output; recompute the MLP) | "qkv_context_offload_mlp" (the same, the MLP's gate and up
  # outputs kept in host memory: TPU).
  c.model.remat = "none"

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (1, -1, 1)  # (data, fsdp, tensor); -1 takes the remaining devices

  # Problems: a procedural task that ships with the package, or files (JSONL / Parquet).
  c.data = ml_collections.ConfigDict()
  c.data.source = "task"  # "task" | "files"
  c.data.task = "chains"  # a registered task (jaxghpo.data.tasks.TASKS) for source="task"
  # Each registered task's own keys (its default_config), under its name; a run reads its task's section only.
  # The shipped task's: the training levels and pool size, the named evaluation sets of the fixed evaluation
  # set, the levels of exact measures; the files task's: the levels its training metrics call hard.
  c.data.task_configs = ml_collections.ConfigDict({name: tasks.TASKS.get(name).default_config()
                                                   for name in tasks.TASKS.names()})
  c.data.files = ()  # JSONL / Parquet paths for source="files" (a tuple; one path on the command line reads)
  c.data.fields = ml_collections.ConfigDict({"problem": "problem", "solution": "solution", "answer": "answer",
                                             "solution_hint": "solution_hint", "level": "level"})
  c.data.on_bad_row = "error"  # "error" | "skip" (skipped rows are counted and reported)
  c.data.style = "plain"  # prompt style: "plain" (chains) | "boxed" | "think_answer"
  c.data.prompts_per_step = 16  # P problems per step (global, over all hosts)

  c.rollout = ml_collections.ConfigDict()
  c.rollout.group_size = 8  # G responses per problem
  c.rollout.max_prompt_len = 128  # bucket; must hold the longest prompt plus the longest hint
  c.rollout.max_new_tokens = 128
  c.rollout.temperature = 1.0
  c.rollout.top_p = 1.0
  c.rollout.top_k = 0
  # TIP thought-switch penalty (jaxghpo/rollout/penalties.py): alpha is subtracted from the logits of the
  # switch phrases' tokens while the current thought is younger than tip_window tokens. Paper: 3 and 600.
  c.rollout.tip_penalty = 0.0  # alpha, logit units; 0 = off
  c.rollout.tip_window = 600  # beta, tokens
  c.rollout.tip_phrases = ("Alternatively", "Wait")  # tokenised with the run's tokenizer
  c.rollout.tip_apply = "eval"  # "eval" | "train" | "both": which sampling decodes with it

  # Hints: how a hint is cut from the trace and where it goes.
  c.hints = ml_collections.ConfigDict()
  c.hints.unit = "steps"  # "steps" | "tokens" | "chars" (GHPO's original cut)
  c.hints.placement = "prompt"  # "prompt" (GHPO) | "response" (LUFFY / QuestA)
  # "none" | "other" (another problem's trace) | "shuffle" (steps shuffled) | "garble" (all but the last
  # hint step garbled)
  c.hints.corruption = "none"

  # Rewards: kind -> weight; `accuracy` names the kind that decides difficulty (GHPO: accuracy only).
  c.rewards = rewards.default_config()
  c.rewards.weights = ml_collections.ConfigDict({"exact": 1.0})  # real math: {"math": 1.0, "format": 0.5}
  c.rewards.accuracy = "exact"

  c.rl = rl.default_config()
  c.curriculum = curriculum.default_config()
  # Derived keys are computed from the keys above by jaxghpo/derived.py, once, and are not settable here:
  # rl.temperature = rollout.temperature, curriculum.seed from seed, curriculum.total_steps = num_steps.
  for section, key in derived.DERIVED_KEYS:
    del c[section][key]

  c.sft = ml_collections.ConfigDict()
  c.sft.batch_size = 128
  c.sft.levels = (1, 2, 3)
  c.sft.hinted_levels = (4, 5, 6)  # seen only with a hint leaving at most sft.max_remaining steps to write
  c.sft.max_remaining = 3
  c.sft.hint_prob = 0.5
  c.sft.max_len = 48
  c.sft.learning_rate = 3e-3
  # The model SFT builds when config.model.path == "random" (ModelConfig fields; a few MB for chains).
  c.sft.random_model = ml_collections.ConfigDict(dict(
      model_type="qwen2", vocab_size=64, hidden_size=128, intermediate_size=384, num_layers=3, num_heads=4,
      num_kv_heads=4, head_dim=32, rope_theta=10000.0, tie_word_embeddings=True, attention_bias=True,
      max_position_embeddings=512))

  c.eval = ml_collections.ConfigDict()
  c.eval.files = ()  # data.source="files": eval JSONL/Parquet paths (a tuple), one split each (file name)
  c.eval.num_problems = 64  # per level of each eval split (data.source="files": per file)
  c.eval.num_samples = 8  # k of pass@k / avg@k
  c.eval.sample_before = True  # False: no sampled evaluation before training (the exact measures still run)
  c.eval.max_prompt_len = 0  # 0: config.rollout.max_prompt_len (evaluation may reach longer chains)
  c.eval.max_new_tokens = 0  # 0: config.rollout.max_new_tokens
  # DeepConf online (jaxghpo/deepconf.py): sampled evaluation also draws num_samples - warmup_traces
  # traces per problem that stop in the sampler once their last `window` tokens' mean confidence falls below
  # a bar set by the problem's first warmup_traces full traces (their lowest-window confidences'
  # percentile-th percentile: 90 is DeepConf-low, 10 DeepConf-high); metrics deepconf/* compare its vote and
  # tokens with the offline confidence-filtered vote over num_samples full traces.
  c.eval.deepconf = ml_collections.ConfigDict()
  c.eval.deepconf.enabled = False
  c.eval.deepconf.warmup_traces = 4  # < eval.num_samples
  c.eval.deepconf.window = 16  # tokens
  c.eval.deepconf.percentile = 10.0
  # The named evaluators (jaxghpo/evaluation/specs.py), each {splits, hint_ratio, temperature, samples, every}:
  # metrics eval/{split}/hint{hint_ratio:g}/{sampled|greedy}/..., rows DIR/eval/*.jsonl. Here one: sampled at
  # T = 1, every evaluation set (splits=()), no hint, eval.num_samples samples (samples=0), at eval_every_steps
  # (every=0) and before and after training. A config adds more, e.g.
  #   c.evals.greedy = evaluation.evaluator_config(temperature=0.0, samples=1)
  #   c.evals.hinted = evaluation.evaluator_config(splits=("hard",), hint_ratio=0.5)
  c.evals = ml_collections.ConfigDict({"sampled": evaluation.evaluator_config()})
  return c
