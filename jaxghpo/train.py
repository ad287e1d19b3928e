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

from jaxghpo import budget, derived, evaluation, experiment, hooks, paths, resume_check, validation
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
    self.evaluator = evaluation.Evaluator(config, s, workdir)  # config.evals and the task's exact sets
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
  def evaluate(self, step: int, sampled: bool = True, due_only: bool = False) -> dict:
    """The run's evaluation at `step` (evaluation.Evaluator: config.evals, then the exact sets)."""
    return self.evaluator(self.params, step, sampled=sampled, due_only=due_only)

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
    save_every = int(c.checkpoint_every_steps)
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
      evaluate_now = done == num_steps or self.evaluator.due(done)
      if done % save_every == 0 or evaluate_now or stop:
        extra = self.evaluate(done, due_only=done != num_steps) if evaluate_now else {}
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
