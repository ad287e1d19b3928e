"""A few RL steps of the embedded task, for a quick check that everything runs (under a minute on CPU)."""
import ml_collections

from configs.base import get_base_config
from jaxghpo import evaluation


def get_config() -> ml_collections.ConfigDict:
  c = get_base_config()
  c.num_steps = 4
  c.checkpoint_every_steps = 2
  c.data.task_configs.chains.num_train = 256
  c.data.task_configs.chains.train_levels = ml_collections.ConfigDict({"2": 1.0, "5": 1.0})
  c.data.prompts_per_step = 4
  c.rollout.group_size = 4
  c.rollout.max_prompt_len = 64  # a level-5 problem with a 75% hint
  c.rollout.max_new_tokens = 56  # a whole level-5 trace
  c.rl.learning_rate = 1e-4
  c.curriculum.mode = "ghpo"
  c.eval.num_problems = 4
  c.eval.num_samples = 2
  c.data.task_configs.chains.easy_levels = (2,)
  c.data.task_configs.chains.hard_levels = (5,)
  c.data.task_configs.chains.ood_levels = ()
  c.evals.greedy = evaluation.evaluator_config(temperature=0.0, samples=1)  # greedy pass@1 beside the sampled one
  c.export_at_end = False
  return c
