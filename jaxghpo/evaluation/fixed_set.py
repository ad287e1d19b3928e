"""The fixed evaluation set, re-exported from where the task keeps it (jaxghpo/data/tasks/fixed_set.py): the
same problems for every arm, seed and run (tools and tests read it here)."""
from jaxghpo.data.tasks.fixed_set import (FIXED_EVAL_SEED, FIXED_SET_PROBLEMS, POOL,  # noqa: F401
                                          fixed_eval_sets, fixed_level_set)
