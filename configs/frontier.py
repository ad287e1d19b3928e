"""The frontier experiment (E1, README "Frontier experiment (E1)"): GHPO where every group fails.

Level 7 is in training and the shipped base policy never writes a valid level-7 trace (exact probability
< 1e-3 per problem), so with G = 4 every level-7 group fails unhinted and GHPO's trigger fires. The reward
AND the trigger are the valid-trace reward (rewards.accuracy = "valid_trace"): "all wrong" means no valid
trace, so no lucky letter (chance 1/26) marks a hopeless group solved. Arms (jaxghpo/experiments/chains/arms.py): grpo, ghpo
(prompt-side paper ladder), ghpo_steps (step ladder), ghpo_nll (GHPO's trigger, response-placed hints
trained by likelihood), backfade (adaptive, response placement, hints from half the trace fading as learned),
guide (Guide loss: hinted samples trained in the unhinted context).

Equal budget: config.budget_rule = "context_and_generated" (jaxghpo/budget.py): every token the policy
conditions on or is trained on counts, hint tokens included (each sampled row's prompt + hint, plus its
generated tokens). Evaluation: unhinted valid pass@1 on levels 1-8 of the fixed set (level 7 = "hard", the
primary; 5-6 = "mid"; 8 = "ood", untrained length; 1-3 = "easy", harm), and the exact co-primaries on
level 7 (data.task_configs.chains.exact_levels: the mean probability of the valid trace, the log-probability of its first
line, the exact pass@1 after a one-step hint).

    python -m jaxghpo.main --config=configs/frontier.py --workdir=runs/frontier          # every arm, seed 0
    python -m jaxghpo.main --config=configs/frontier.py:arms=grpo,guide --workdir=DIR
    python tools/study.py --config configs/frontier.py --out runs/frontier_study --arms grpo,ghpo,... --seeds 0,1
"""
import ml_collections

from configs.base import get_base_config

ARMS = ("grpo", "ghpo", "ghpo_steps", "ghpo_nll", "backfade", "guide")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = get_base_config()
  c.arms = ARMS
  c.budget_rule = "context_and_generated"
  c.max_gen_tokens = 80_000  # the equal budget of each arm, in budget_rule's tokens (about 9 GHPO or 25 GRPO steps)
  c.num_steps = 400  # a cap no arm reaches within the budget (the lr schedule runs over it)
  c.checkpoint_every_steps = 50
  c.data.task_configs.chains.train_levels = ml_collections.ConfigDict(
      {"1": 1.0, "2": 1.0, "3": 1.0, "4": 1.0, "5": 1.0, "6": 1.0, "7": 4.0})
  c.data.task_configs.chains.num_train = 256  # a recurring pool
  c.data.prompts_per_step = 16
  c.rollout.group_size = 4
  c.rollout.max_prompt_len = 96  # a level-7 problem with a 6-line hint and the prompt marker
  c.rollout.max_new_tokens = 88  # a whole level-7 trace + EOS
  c.rollout.temperature = 1.0
  c.rewards.weights = ml_collections.ConfigDict({"valid_trace": 1.0})
  c.rewards.accuracy = "valid_trace"  # GHPO's trigger and the scheduler read the valid-trace reward
  c.rl.learning_rate = 2e-4
  c.rl.lr_schedule = "warmup_constant"
  c.rl.warmup_steps = 5
  c.rl.loss_agg = "token-mean"
  c.rl.micro_batches = 2
  c.curriculum.mode = "ghpo"  # the arm of a single run (arms=)
  c.curriculum.ladder = (0.25, 0.5, 0.75)
  c.eval.max_prompt_len = 24  # unhinted prompts up to level 8
  c.eval.max_new_tokens = 112  # a whole level-8 trace
  # Sampled evaluation where it is needed (the primary on level 7; levels 5-6 and easy levels for the
  # trace errors); exact teacher-forced probabilities on every level 1-8 (no sampling noise, a fraction
  # of the cost: the harm and length secondaries read them).
  c.eval.num_problems = 64
  c.eval.num_samples = 4
  c.eval.sample_before = False  # the base policy's sampled profile is in its report; step 0 logs the exact ones
  c.data.task_configs.chains.easy_levels = (1, 2, 3)
  c.data.task_configs.chains.mid_levels = (5, 6)
  c.data.task_configs.chains.hard_levels = (7,)
  c.data.task_configs.chains.ood_levels = ()
  c.data.task_configs.chains.ood_ops_levels = ()
  c.data.task_configs.chains.exact_levels = (1, 2, 3, 4, 5, 6, 7, 8)
  for kv in filter(None, arg.split(",,")):
    key, value = kv.split("=", 1)
    if key == "arms":
      c.arms = tuple(a for a in value.split(",") if a)
    else:
      raise ValueError(f"configs/frontier.py: unknown argument {key!r} (known: arms)")
  return c
