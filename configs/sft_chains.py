"""SFT of the embedded base policy: a small Qwen2-style model on easy letter chains (levels 1-4).

Some prompts carry a random in-prompt hint (whole trace steps) so the policy knows GHPO's hinted
format. tools/make_base_policy.py runs this and ships DIR/export as jaxghpo/assets/chains_base.
"""
import ml_collections

from configs.base import get_base_config


def get_config() -> ml_collections.ConfigDict:
  c = get_base_config()
  c.mode = "sft"
  c.model.path = "random"
  c.num_steps = 2000
  c.log_every_steps = 100
  c.sft.batch_size = 128
  c.sft.levels = (1, 2, 3, 4)
  c.sft.hint_prob = 0.5
  c.sft.hinted_levels = ()  # levels 1-4 only (the base's recipe of hinted-only levels: tools/make_base_policy.py)
  c.sft.max_len = 56  # a level-4 prompt with a 3-step in-prompt hint, its target and EOS: 48 tokens
  c.sft.learning_rate = 3e-3
  return c
