"""Rewards: math answer checking (math-verify in killable worker processes), exact match, format.

    from jaxghpo import rewards
    scores_B = rewards.math_reward(completions, answers)        # np.float32 [B]; never hangs
    rewards.last_stats()                                         # timeouts, kills, errors, ... of that call
    total_B, accuracy_B, parts = rewards.combine(config.rewards, completions, answers)
    @rewards.register("my_kind")                                 # a new reward kind (REGISTRY: rewards.weights)
"""

from jaxghpo.rewards.combine import REGISTRY, combine, default_config, get, register, validate_config
from jaxghpo.rewards.math import (MathVerifier, RewardStats, configure, gold_to_latex, last_stats,
                                  math_reward, shutdown)
from jaxghpo.rewards.pool import MapResult, PoolStats, WorkerPool
from jaxghpo.rewards.simple import EXTRACTORS, FORMATS, exact_match, format_reward

__all__ = [
    "REGISTRY", "combine", "default_config", "get", "register", "validate_config",
    "MathVerifier", "RewardStats", "configure", "gold_to_latex", "last_stats", "math_reward", "shutdown",
    "MapResult", "PoolStats", "WorkerPool",
    "EXTRACTORS", "FORMATS", "exact_match", "format_reward",
]
