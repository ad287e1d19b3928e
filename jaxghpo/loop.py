"""The training loop shared by RL (train.Trainer) and SFT (sft.SFTTrainer): a TrainState and hooks.

  restore (Checkpoints: newest step that restores, agreed over hosts; host state loaded)
  evaluate before (when the run evaluates)
  for each step: self.step(step) (the subclass's: one GHPO step, or one supervised batch) -> metrics a step
  late (Metrics) -> stop agreed (Stopping: signal, token budget, last step) -> evaluate / checkpoint at their
  cadence (skip guard and roll-back in Checkpoints)
  export at the end (process 0 writes; every process joins the gather)

A subclass sets config, workdir, allow_config_change, setup (graphdef, model_cfg, tokenizer; problems or None),
state (train_state.TrainState), checkpoints, stopping, and defines step(step) -> (host metrics, device metrics);
a subclass that `evaluates` also sets evaluator and defines evaluate(step, sampled=, due_only=).
"""
from __future__ import annotations

import time

import jax

from jaxghpo import experiment, hooks, paths, resume_check


class Loop:
  """run(): the loop, top to bottom (module docstring)."""

  evaluates = True  # False: no evaluation before, during or after (SFT)
  metrics = None  # hooks.Metrics, opened in restore() once the resume step is known

  # The state and hooks under the names tests and tools read.
  params = property(lambda self: self.state.params)
  rng = property(lambda self: self.state.host.rng)
  checkpointer = property(lambda self: self.checkpoints.checkpointer)
  writer = property(lambda self: self.metrics.writer)
  stop_reason = property(lambda self: self.stopping.reason)

  def restore(self) -> None:
    restored = self.checkpoints.restore(self.state)
    # Written once the resume is accepted: a resume refused for changed data keeps the run's own report.
    if getattr(self.setup, "problems", None) is not None:
      experiment.write_data_report(self.setup.problems, self.workdir, jax.process_index() == 0)
    self.metrics = hooks.Metrics(self.config, self.workdir, self.state.step if restored else -1,
                                 observe=self.checkpoints.observe)

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
    if state.step == 0 and self.evaluates:
      # eval.sample_before=False: the policy before training is the same for every arm and seed; only its
      # (cheap, exact) measures are logged at step 0.
      summary["eval_before"] = self.evaluate(0, sampled=bool(c.eval.get("sample_before", True)))
      self.writer.write(0, summary["eval_before"])
    save_every = int(c.checkpoint_every_steps)
    t_prev = time.perf_counter()
    stop = None
    self.stopping.reason = "finished steps"
    for step in range(state.step, num_steps):
      host_metrics, train_metrics = self.step(step)
      now = time.perf_counter()
      host_metrics["time/step_s"], t_prev = now - t_prev, now
      # The host never blocks on this step's device metrics: the previous step's are written now.
      self.metrics.push(step + 1, train_metrics, host_metrics)
      done = state.step = step + 1
      stop = self.stopping.agreed_signal()
      if self.stopping.budget_spent(state):
        num_steps, self.stopping.reason = done, "token budget"
      evaluate_now = self.evaluates and (done == num_steps or self.evaluator.due(done))
      if done % save_every == 0 or evaluate_now or stop or done == num_steps:
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
      hooks.export(s.graphdef, state.params, s.model_cfg, s.tokenizer, paths.join(self.workdir, "export"))
    self.writer.close()  # ends a progress line on a terminal before the stop line
    self.stopping.print_line(done, int(c.num_steps), state, self.checkpointer.latest_step())
    self.checkpointer.close()
    return summary


