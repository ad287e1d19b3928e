"""The hint curriculum: the host-side HintScheduler and its running pass-rate statistics.

    from jaxghpo import curriculum
    cfg = curriculum.default_config()          # config.curriculum; cfg.mode selects the mode (curriculum.MODES)
    sched = curriculum.HintScheduler(cfg)
    ratios = sched.plan(problem_ids)           # float32 [B]: first-attempt hint ratios
    next_ratios = sched.retry(problem_ids, ratios, rewards)   # float32 [B]: NaN = no retry
    metrics = sched.update(problem_ids, final_ratios, final_rewards)
    out = curriculum.step_loop(sched, ids, sample, levels=levels, step=step)   # the whole step, as the trainer runs it

A new mode is one decorated plan function: @curriculum.register_mode("name", ...) (curriculum/modes.py).
Hint text cutting lives in curriculum/hints.py (imported on its own).
"""
from jaxghpo.curriculum.config import default_config, highest_ratio, resolve_config, validate_config
from jaxghpo.curriculum.driver import StepResult, run_step, step_loop
from jaxghpo.curriculum.modes import MODES, Mode, register_mode
from jaxghpo.curriculum.scheduler import HintScheduler
from jaxghpo.curriculum.stats import LevelStats, ProblemStats

__all__ = [
    "MODES",
    "HintScheduler",
    "LevelStats",
    "Mode",
    "ProblemStats",
    "default_config",
    "highest_ratio",
    "register_mode",
    "resolve_config",
    "StepResult",
    "run_step",
    "step_loop",
    "validate_config",
]
