"""Evaluation: one evaluator for the trainer and tools/evaluate.py, one module per job.

    passk.py        pass@k (unbiased), avg@k, aggregation per level                    numpy only
    driver.py       evaluate(generate_fn, examples, k=...): sample, score, check, vote, DeepConf online,
                    gather over hosts, aggregate
    generate.py     group_generate: the driver's generate_fn from the evaluation GroupSampler
    exact.py        teacher-forced exact measures (true_trace_logprob, trace_metrics)
    fixed_set.py    the fixed evaluation set (fixed_level_set, fixed_eval_sets)
    rows.py         the rows on disk (eval_rows_path, write_rows)
    specs.py        the named evaluators of config.evals (evaluator_config, Spec)
    runner.py       Evaluator(config, setup, workdir): every evaluator over its splits, rows written, the
                    exact sets; what Trainer.evaluate and tools/evaluate.py call

DeepConf's maths live in jaxghpo/deepconf.py and voting in jaxghpo/voting.py (this package imports them,
never the reverse); the names below are re-exported so `evaluation.majority_vote(...)` keeps working.
"""
from jaxghpo.deepconf import (bottom_percent_confidence, confidence_filtered_vote, early_stop_savings,
                              group_confidence, lowest_group_confidence, stop_threshold, tail_confidence,
                              trace_confidences)
from jaxghpo.evaluation.driver import evaluate, host_share
from jaxghpo.evaluation.exact import true_trace_logprob
from jaxghpo.evaluation.fixed_set import (FIXED_EVAL_SEED, FIXED_SET_PROBLEMS, fixed_eval_sets,
                                          fixed_level_set)
from jaxghpo.evaluation.generate import group_generate
from jaxghpo.evaluation.passk import aggregate, avg_at_k, pass_at_k, prefix_metrics
from jaxghpo.evaluation.rows import eval_rows_path, write_rows
from jaxghpo.evaluation.runner import Evaluator
from jaxghpo.evaluation.specs import evaluator_config
from jaxghpo.voting import majority_vote, vote_counts

__all__ = [
    "Evaluator", "FIXED_EVAL_SEED", "FIXED_SET_PROBLEMS", "aggregate", "avg_at_k", "bottom_percent_confidence",
    "confidence_filtered_vote", "early_stop_savings", "eval_rows_path", "evaluate", "fixed_eval_sets",
    "fixed_level_set", "group_confidence", "group_generate", "host_share", "lowest_group_confidence",
    "majority_vote", "pass_at_k", "prefix_metrics", "stop_threshold", "tail_confidence", "trace_confidences",
    "true_trace_logprob", "evaluator_config", "vote_counts", "write_rows",
]
