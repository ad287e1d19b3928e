"""The RL loop, top to bottom: a short loop over a TrainState with hooks at step boundaries.

  restore (Checkpoints) -> evaluate before -> for each step: rl_step (jaxghpo/rl_step.py: the host loop of a
  GHPO step and its sharded update) -> metrics a step late (Metrics) -> stop agreed (Stopping: signal, token
  budget, last step) -> evaluate / checkpoint at their cadence -> export at the end

Set-up is experiment.setup; the state carried from step to step is train_state.TrainState (device params and
optimizer state; host scheduler, data position, run key, token counts); every decision that ends a run
(SIGTERM, token budget, last step) is agreed by all hosts at a step boundary.
"""
from __future__ import annotations

import time

import jax
from flax import nnx

from jaxghpo import budget, deepconf, derived, evaluation, experiment, hooks, paths, resume_check, validation
from jaxghpo.parallel import hosts
from jaxghpo.rl_step import rl_step
from jaxghpo.train_state import HostState, TrainState

export = hooks.export  # re-exported: tools/export_checkpoint.py and tests call train.export


class Trainer:
  """The run's pieces (experiment.setup), its state and hooks; `run()` is the loop."""

  def __init__(self, config, workdir: str, allow_config_change: bool = False):
    self.config, self.workdir = config, workdir
    self.allow_config_change = allow_config_change  # a resume may change keys that change the math
    validation.check_workdir(workdir)  # a file or read-only workdir: one line naming it
    budget.check_rule(str(config.get("budget_rule", "generated")))
    s = self.setup = experiment.setup(config)
    self.P = int(config.data.prompts_per_step)  # problems per step, all hosts
    self.state = TrainState(s.params, s.opt_state,
                            HostState(s.scheduler, s.pipeline, jax.random.key(derived.seed(config, "train_rng"))))
    self.checkpoints = hooks.Checkpoints(config, workdir, s)
    self.stopping = hooks.Stopping(config)
    self.metrics = None  # hooks.Metrics, opened in restore() once the resume step is known

  # The state and hooks under the names tests and tools read.
  params = property(lambda self: self.state.params)
  scheduler = property(lambda self: self.state.host.scheduler)
  pipeline = property(lambda self: self.state.host.pipeline)
  rng = property(lambda self: self.state.host.rng)
  checkpointer = property(lambda self: self.checkpoints.checkpointer)
  writer = property(lambda self: self.metrics.writer)
  stop_reason = property(lambda self: self.stopping.reason)

  def restore(self) -> None:
    restored = self.checkpoints.restore(self.state)
    # Written once the resume is accepted: a resume refused for changed data keeps the run's own report.
    experiment.write_data_report(self.setup.problems, self.workdir, jax.process_index() == 0)
    self.metrics = hooks.Metrics(self.config, self.workdir, self.state.step if restored else -1,
                                 observe=self.checkpoints.observe)

  def rl_step(self, step: int, rng) -> tuple[dict, dict]:
    """One RL step (jaxghpo/rl_step.py) on the trainer's state."""
    return rl_step(self.state, step, rng, setup=self.setup, config=self.config)

  # ------------------------------------------------------------------------------------ evaluation
  def evaluate(self, step: int, sampled: bool = True) -> dict:
    """Every eval split without a hint, and the splits in config.eval.hint_splits with each hint ratio;
    sampled (avg@k, pass@k at config.eval.temperature) and, with config.eval.greedy, greedy pass@1; then the
    exact measures of config.eval.exact_levels. sampled=False: the exact measures only."""
    c = self.config.eval
    if not sampled:
      return self.evaluate_exact()
    ratios = [float(r) for r in str(c.hint_ratios).split(",") if r.strip()]
    hint_splits = {s.strip() for s in str(c.get("hint_splits", "")).split(",") if s.strip()}
    out = {}
    for name, examples in self.setup.problems.eval_sets.items():
      for ratio in ratios:
        if ratio > 0 and name not in hint_splits:
          continue
        modes = [("sampled", float(c.temperature), int(c.num_samples))]
        if c.get("greedy", False) and ratio == 0:
          modes.append(("greedy", 0.0, 1))
        for mode, temperature, k in modes:
          metrics, rows = self.eval_split(examples, ratio, temperature, k, step)
          out.update({f"eval/{name}/hint{ratio:g}/{mode}/{key}": v for key, v in metrics.items()})
          rows = [row for share in hosts.allgather_json(rows) for row in share]  # every host's, in order
          if jax.process_index() == 0:
            evaluation.write_rows(evaluation.eval_rows_path(self.workdir, name, step, ratio, tag=mode), rows)
    out.update(self.evaluate_exact())
    return out

  def evaluate_exact(self) -> dict:
    """eval/exact/NAME/<metric> (jaxghpo/exact_eval.py) for each of the task's exact sets (Problems.exact_sets,
    e.g. "level_7": the fixed test set of that level): exact teacher-forced measures, without sampling noise."""
    s = self.setup
    if not s.problems.exact_sets:
      return {}
    if jax.process_count() > 1:
      raise ValueError("exact measures (the task's exact sets) run on one process only (they score the whole set "
                       "on every host's copy); turn them off for multi-process runs and score the export with "
                       "jaxghpo.exact_eval instead")
    from jaxghpo import exact_eval  # noqa: PLC0415
    model = nnx.merge(s.graphdef, self.params)
    out = {}
    for name, examples in s.problems.exact_sets.items():
      metrics = exact_eval.trace_metrics(model, s.tokenizer, examples, style=self.config.data.style)
      out.update({f"eval/exact/{name}/{k}": v for k, v in metrics.items()})
    return out

  def eval_split(self, examples, ratio, temperature, k, step):
    """pass@1, pass@k and avg@k of `examples` (over all hosts) with hint `ratio`; and this host's rows.

    evaluation.evaluate (the one evaluator) on the evaluation GroupSampler: the problems are split over
    hosts in contiguous shares that may differ by one; every host runs the same number of sampler calls
    (the largest share's), a shorter share with inactive rows. Sampled evaluation (temperature > 0) with
    config.eval.deepconf.enabled also runs DeepConf online (metrics deepconf/*)."""
    s, c = self.setup, self.config
    per_call = self.P // jax.process_count()
    rng = jax.random.fold_in(jax.random.key(derived.seed(c, "eval_sampling")), step)
    generate = evaluation.group_generate(s.eval_rollout, self.params, rng, width=per_call, temperature=temperature)
    check = s.problems.check_completion
    check_fn = None if check is None else (lambda ex, hint, completion: check(ex.problem, str(hint) + str(completion)))
    return evaluation.evaluate(
        generate, examples, k=k, num_samples=k, batch_size=per_call, hint_ratio=ratio,
        check_fn=check_fn, hint_is_context=c.hints.placement == "prompt",
        multihost=True, deepconf=s.deepconf if temperature > 0 else None,
        vote_fn=deepconf.answer_fn(c.data.style, s.problems.extract_answer))

  # ------------------------------------------------------------------------------------ the loop
  def run(self) -> dict:
    """The loop (`_run`) with SIGTERM and SIGINT handled at step boundaries; prints why it stopped."""
    self.stopping.signals.install()
    try:
      return self._run()
    except BaseException:
      self._close_quietly()  # no save left writing in the background while the error unwinds
      raise
    finally:
      self.stopping.signals.uninstall()

  def _close_quietly(self) -> None:
    for close in (self.checkpointer.close, getattr(self.metrics, "writer", None) and self.writer.close):
      try:
        if close:
          close()
      except Exception:  # pylint: disable=broad-except  (the error that stopped the run is the one to report)
        pass

  def _run(self) -> dict:
    c, state = self.config, self.state
    num_steps = int(c.num_steps)
    latest = self.checkpointer.latest_step()
    if latest is not None:  # a resume: keys that change the math must equal config.json's (resume_check.py)
      resume_check.check(c, self.workdir, latest, allow=self.allow_config_change,
                         is_main_process=jax.process_index() == 0)
    self.restore()
    if state.step == 0 and jax.process_index() == 0:
      paths.write_text(paths.join(self.workdir, "config.json"), c.to_json_best_effort(indent=2))
    summary = {}
    if state.step >= num_steps or (state.step > 0 and self.stopping.budget_spent(state)):
      self.writer.close()  # a finished run: nothing to train, its files are complete
      self.stopping.reason = "already finished"
      self.stopping.print_line(state.step, num_steps, state, self.checkpointer.latest_step())
      self.checkpointer.close()
      return {"already_finished": True}
    if state.step == 0:
      # eval.sample_before=False: the policy before training is the same for every arm and seed; only its
      # (cheap, exact) measures are logged at step 0.
      summary["eval_before"] = self.evaluate(0, sampled=bool(c.eval.get("sample_before", True)))
      self.writer.write(0, summary["eval_before"])
    eval_every, save_every = int(c.eval_every_steps), int(c.checkpoint_every_steps)
    t_prev = time.perf_counter()
    stop = None
    self.stopping.reason = "finished steps"
    for step in range(state.step, num_steps):
      host_metrics, train_metrics = self.rl_step(step, jax.random.fold_in(state.host.rng, step))
      now = time.perf_counter()
      host_metrics["time/step_s"], t_prev = now - t_prev, now
      # The host never blocks on this step's device metrics: the previous step's are written now.
      self.metrics.push(step + 1, train_metrics, host_metrics)
      done = state.step = step + 1
      stop = self.stopping.agreed_signal()
      if self.stopping.budget_spent(state):
        num_steps, self.stopping.reason = done, "token budget"
      evaluate_now = done == num_steps or (eval_every and done % eval_every == 0)
      if done % save_every == 0 or evaluate_now or stop:
        extra = self.evaluate(done) if evaluate_now else {}
        if done == num_steps:
          summary["eval_after"] = extra
        self.metrics.flush(extra)
      if done % save_every == 0 or done == num_steps or stop:
        self.checkpoints.save(state, done)
      if stop or done == num_steps:
        break
    self.checkpointer.wait()
    if stop:
      self.stopping.reason = stop
    if c.export_at_end and not stop:
      s = self.setup
      export(s.graphdef, state.params, s.model_cfg, s.tokenizer, paths.join(self.workdir, "export"))
    self.writer.close()  # ends a progress line on a terminal before the stop line
    self.stopping.print_line(done, int(c.num_steps), state, self.checkpointer.latest_step())
    self.checkpointer.close()
    return summary


def run(config, workdir: str, allow_config_change: bool = False) -> dict:
  """The run `config` describes, in `workdir` (which it holds alone: workdir_lock); allow_config_change: see
  jaxghpo/resume_check.py."""
  from jaxghpo import workdir_lock
  with workdir_lock.held(workdir):
    return _run(config, workdir, allow_config_change)


def _run(config, workdir: str, allow_config_change: bool = False) -> dict:
  if config.get("arms", ()):
    raise ValueError(f"config.arms={tuple(config.arms)!r}: arms run side by side through python -m jaxghpo.main "
                     "(jaxghpo.main.run); train.run trains one config (set config.arms = ())")
  if config.mode == "sft":
    from jaxghpo import sft
    return sft.run(config, workdir)
  if config.mode != "rl":
    raise ValueError(f"config.mode={config.mode!r} is not one of 'rl', 'sft'")
  from jaxghpo import report  # imported here: matplotlib is only needed at the end of a run
  t0 = time.perf_counter()
  trainer = Trainer(config, workdir, allow_config_change)
  summary = trainer.run()
  summary["wall_s"] = time.perf_counter() - t0  # the files hold step times, not the whole invocation
  # The summary (console, summary.md/json, curves.png) is read back from the run's files by process 0.
  summary["report"] = report.finish(workdir, config, summary)
  summary["stop_reason"] = trainer.stop_reason  # main's exit code: 130 after SIGINT (stopping.EXIT_CODES)
  return summary
