"""The README's main run: GHPO from the shipped base policy on letter chains weighted toward hard levels.

The base policy (jaxghpo/assets/chains_base, made by tools/make_base_policy.py) learned to write whole
chains of levels 1-3, and to finish chains of levels 4-6 only when a hint left it at most 3 steps;
here RL sees levels 1-6 with most weight on 4-6, which the base policy fails without a hint.
GHPO re-samples all-wrong groups with the first 25% / 50% / 75% of the trace in the prompt.

    python -m jaxghpo.main --config=configs/default.py --workdir=runs/default
    python -m jaxghpo.main --config=configs/default.py:mode=none --workdir=runs/grpo   # plain GRPO
"""
import ml_collections

from configs.base import get_base_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = get_base_config()
  c.num_steps = 80
  c.checkpoint_every_steps = 20
  c.data.train_levels = ml_collections.ConfigDict(
      {"1": 1.0, "2": 1.0, "3": 1.0, "4": 2.0, "5": 3.0, "6": 3.0})
  c.data.prompts_per_step = 16
  c.rollout.group_size = 8
  c.rollout.max_prompt_len = 72  # a level-6 problem with a 75% hint
  c.rollout.max_new_tokens = 72  # a whole level-6 trace
  c.eval.max_prompt_len = 72  # hinted evaluation is on the hard split only (hint_splits)
  c.eval.max_new_tokens = 112  # a whole level-8 trace
  c.rollout.temperature = 1.0
  c.rl.learning_rate = 2e-4
  c.rl.warmup_steps = 5
  c.rl.end_lr_ratio = 0.1
  c.rl.loss_agg = "token-mean"
  # Gradient accumulation over 4 micro-batches of 32 sequences: the same update, 1.4x faster on a CPU
  # (each micro-batch's activations stay in cache; BENCHMARKS.md, train-step efficiency).
  c.rl.micro_batches = 4
  c.curriculum.mode = "ghpo"
  c.curriculum.ladder = (0.25, 0.5, 0.75)
  c.eval.num_problems = 16  # per level: 48 easy, 32 hard, 32 ood problems, 8 samples each
  c.eval.greedy = False
  c.eval.num_samples = 8
  c.eval.hint_ratios = "0.0,0.5"
  for kv in filter(None, arg.split(",")):
    key, value = kv.split("=")
    if key == "mode":
      c.curriculum.mode = value
    else:
      raise ValueError(f"configs/default.py: unknown argument {key!r} (known: mode)")
  return c
