"""The run's evaluation: every named evaluator of config.evals over its splits, then the exact measures.

    evaluator = Evaluator(config, setup, workdir)   # setup: experiment.Setup (or the parts named below)
    metrics = evaluator(params, step)                # every evaluator (rows written), then the exact sets
    metrics = evaluator(params, step, due_only=True) # the evaluators whose `every` divides step (+ exact sets)
    metrics = evaluator(params, 0, sampled=False)    # the exact measures only
    for spec, split, metrics, rows in evaluator.sampled(params, step): ...   # tools/evaluate.py's form

The trainer (Trainer.evaluate) and tools/evaluate.py both evaluate through this class, so a policy gets the
same metrics from either for the same params, problems, sampler sizes and seed. Per evaluator and split,
driver.evaluate runs on the evaluation GroupSampler (generate.group_generate) with one sampler call of
config.data.prompts_per_step / processes problems per host, the task's trace checker (valid_pass@1) when
the problems have one, and DeepConf online (config.eval.deepconf) when sampled. Every sampler call of the
evaluation at `step` draws from fold_in(key(seed of "eval_sampling"), step), whichever evaluator makes it.

Names (the report, the study and committed results read them):
  eval/{split}/hint{hint_ratio:g}/{mode}/{metric}     mode "sampled" (temperature > 0) or "greedy"
  eval/exact/{name}/{metric}                         exact.trace_metrics of problems.exact_sets[name]
  DIR/eval/{split}_step{step:06d}_hint{ratio:.2f}_{mode}.jsonl   every host's rows (rows.eval_rows_path)
"""
from __future__ import annotations

from typing import Iterator

import jax

from jaxghpo import deepconf, derived
from jaxghpo.evaluation import driver, exact, rows, specs
from jaxghpo.evaluation.generate import group_generate
from jaxghpo.parallel import hosts


class Evaluator:
  """The named evaluators of config.evals (evaluation/specs.py) and the exact sets of the problems.

  setup: experiment.Setup, or any object with the parts read here: problems (experiment.Problems: eval_sets,
  check_completion, extract_answer, exact_sets), eval_rollout (the evaluation rollout.groups.GroupSampler),
  and, for exact sets, tokenizer and graphdef (nnx.merge(graphdef, params) is the model scored).
  workdir: where rows are written (process 0); None writes nothing.
  """

  def __init__(self, config, setup, workdir: str | None = None):
    self.config, self.setup, self.workdir = config, setup, workdir
    self.specs = specs.specs(config)
    self.split_names = list(setup.problems.eval_sets)
    specs.check_splits(self.specs, self.split_names)
    check = setup.problems.check_completion
    # The task's checker reads the whole written trace: the hint's steps (context) and the completion.
    self.check_fn = None if check is None else (
        lambda ex, hint, completion: check(str(driver.field(ex, "problem")), str(hint) + str(completion)))
    self.vote_fn = deepconf.answer_fn(config.data.style, setup.problems.extract_answer)
    self.per_call = int(config.data.prompts_per_step) // jax.process_count()  # problems per sampler call, per host

  def due(self, step: int) -> bool:
    """Whether some evaluator evaluates every k steps and k divides `step` (the trainer's periodic evaluations;
    before and after training it runs every evaluator)."""
    return any(self._due(spec, step) for spec in self.specs)

  @staticmethod
  def _due(spec: specs.Spec, step: int) -> bool:
    return bool(spec.every) and step % spec.every == 0

  def __call__(self, params, step: int, sampled: bool = True, due_only: bool = False) -> dict:
    """{metric name: value}: every evaluator (due_only: those whose `every` divides `step`), with their rows
    written, then the exact measures. sampled=False: the exact measures only."""
    out = {}
    if sampled:
      chosen = [s for s in self.specs if not due_only or self._due(s, step)]
      for spec, split, metrics, split_rows in self.sampled(params, step, chosen):
        out.update(metrics)
        if self.workdir is not None and jax.process_index() == 0:
          rows.write_rows(rows.eval_rows_path(self.workdir, split, step, spec.hint_ratio, tag=spec.mode), split_rows)
    out.update(self.exact(params))
    return out

  def sampled(self, params, step: int, chosen=None) -> Iterator[tuple]:
    """(spec, split, {eval/{split}/hint{r:g}/{mode}/{metric}: value}, every host's rows in order) for each
    evaluator of `chosen` (default all) and each of its splits. Every host must iterate to the end
    (sampler calls and gathers are collectives)."""
    for spec in self.specs if chosen is None else chosen:
      for split in spec.split_names(self.split_names):
        metrics, host_rows = self.evaluate_split(params, step, spec, split)
        prefix = f"eval/{split}/hint{spec.hint_ratio:g}/{spec.mode}/"
        all_rows = [row for share in hosts.allgather_json(host_rows) for row in share]  # every host's, in order
        yield spec, split, {prefix + key: v for key, v in metrics.items()}, all_rows

  def evaluate_split(self, params, step: int, spec: specs.Spec, split: str) -> tuple[dict, list]:
    """driver.evaluate of one evaluator on one evaluation set: (metrics over all hosts, this host's rows).

    The problems are split over hosts in contiguous shares that may differ by one; every host makes the
    largest share's sampler calls (a shorter share with inactive rows)."""
    c = self.config
    rng = jax.random.fold_in(jax.random.key(derived.seed(c, "eval_sampling")), step)
    generate = group_generate(self.setup.eval_rollout, params, rng, width=self.per_call, temperature=spec.temperature)
    dc = deepconf.from_config(c.eval, spec.samples) if spec.temperature > 0 else None
    return driver.evaluate(generate, self.setup.problems.eval_sets[split], k=spec.samples, num_samples=spec.samples,
                           batch_size=self.per_call, hint_ratio=spec.hint_ratio, check_fn=self.check_fn,
                           hint_is_context=c.hints.placement == "prompt", multihost=True, deepconf=dc,
                           vote_fn=self.vote_fn)

  def exact(self, params) -> dict:
    """eval/exact/{name}/{metric} (exact.py) for each of the task's exact sets (Problems.exact_sets, e.g.
    "level_L": the first eval.num_problems problems of the fixed test set of level L): exact teacher-forced
    measures, without sampling noise, for a task whose valid trace is unique."""
    sets = self.setup.problems.exact_sets
    if not sets:
      return {}
    if jax.process_count() > 1:
      raise ValueError("the task's exact sets are scored on one process only (the whole set on every host's "
                       "copy); name none for multi-process runs (the shipped task: exact_levels=()) "
                       "and score the export with jaxghpo.evaluation.exact instead")
    from flax import nnx
    model = nnx.merge(self.setup.graphdef, params)
    out = {}
    for name, examples in sets.items():
      metrics = exact.trace_metrics(model, self.setup.tokenizer, examples, style=self.config.data.style)
      out.update({f"eval/exact/{name}/{key}": v for key, v in metrics.items()})
    return out
