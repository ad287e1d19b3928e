"""The README's main run: GHPO and GRPO side by side from the shipped base policy, at an equal budget
of generated tokens, on letter chains weighted toward the hard levels.

The base policy (jaxghpo/assets/chains_base, tools/make_base_policy.py) has a competence RAMP in the
chain length: unhinted valid pass@1 about 1 on levels 1-3, 0.56 on 4, 0.19 on 5, 0.04 on 6 (its
report has the measured profile). Both arms train on the same recurring pool of 256 problems
(levels 1-6, most weight on 4-6) until each has generated `max_gen_tokens` tokens (GHPO's retries
counted); the step cap `num_steps` is far above what either arm reaches and the learning rate is
constant after warm-up, so the schedule does not depend on an arm's step count. GHPO re-samples
all-wrong groups with the first 25% / 50% / 75% of the trace in the prompt. Evaluation: the fixed
evaluation set (the same problems for every arm), unhinted, valid pass@1 and answer pass@1 per level.

    python -m jaxghpo.main --config=configs/default.py --workdir=runs/default   # both arms + comparison
    python -m jaxghpo.main --config=configs/default.py:arms=ghpo_steps,grpo --workdir=runs/steps
    python -m jaxghpo.main --config=configs/default.py:arms= --workdir=runs/one  # one run (curriculum.mode)
"""
import ml_collections

from configs.base import get_base_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = get_base_config()
  c.arms = ("ghpo", "grpo")
  c.max_gen_tokens = 120_000  # the equal budget of each arm (retries included)
  c.num_steps = 400  # a cap no arm reaches within the budget
  c.checkpoint_every_steps = 50
  c.data.task_configs.chains.train_levels = ml_collections.ConfigDict(
      {"1": 1.0, "2": 1.0, "3": 1.0, "4": 2.0, "5": 3.0, "6": 3.0})
  c.data.task_configs.chains.num_train = 256  # a recurring pool: each problem is seen several times
  c.data.prompts_per_step = 16
  c.rollout.group_size = 8
  c.rollout.max_prompt_len = 80  # a level-6 problem with a 75% hint (the step ladder's last rung too)
  c.rollout.max_new_tokens = 72  # a whole level-6 trace
  c.eval.max_prompt_len = 72
  c.eval.max_new_tokens = 112  # a whole level-8 trace
  c.rollout.temperature = 1.0
  c.rl.learning_rate = 2e-4
  c.rl.lr_schedule = "warmup_constant"
  c.rl.warmup_steps = 5
  c.rl.loss_agg = "token-mean"
  # Gradient accumulation over 4 micro-batches of 32 sequences: the same update, 1.4x faster on a CPU
  # (each micro-batch's activations stay in cache; BENCHMARKS.md, train-step efficiency).
  c.rl.micro_batches = 4
  c.curriculum.mode = "ghpo"  # the arm of a single run (arms=)
  c.curriculum.ladder = (0.25, 0.5, 0.75)
  c.eval.num_problems = 32  # per level of the fixed set (a prefix of tools/evaluate.py's 128)
  c.data.task_configs.chains.easy_levels = (1, 2, 3)
  c.data.task_configs.chains.mid_levels = (4,)
  c.data.task_configs.chains.hard_levels = (5, 6)
  c.data.task_configs.chains.ood_levels = (7, 8)
  c.data.task_configs.chains.ood_ops_levels = (3, 4)
  c.eval.num_samples = 4  # config.evals: base's one evaluator (sampled, unhinted, every set)
  # Evaluations during training (the comparison figure's curves); they use their own random stream, so
  # training and the final table are those of a run that evaluates only at the start and end.
  c.eval_every_steps = 10
  for kv in filter(None, arg.split(",,")):
    key, value = kv.split("=", 1)
    if key == "arms":
      c.arms = tuple(a for a in value.split(",") if a)
    elif key == "mode":
      c.arms, c.curriculum.mode = (), value
    else:
      raise ValueError(f"configs/default.py: unknown argument {key!r} (known: arms, mode)")
  return c
