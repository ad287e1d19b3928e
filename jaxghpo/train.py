"""RL training: the Trainer (one GHPO step per iteration of jaxghpo/loop.py's loop) and `run`.

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

from jaxghpo import budget, derived, evaluation, experiment, hooks, loop, validation
from jaxghpo.rl_step import rl_step
from jaxghpo.train_state import HostState, TrainState


class Trainer(loop.Loop):
  """RL: the run's pieces (experiment.setup), its state and hooks; `run()` is the loop (jaxghpo/loop.py)."""

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

  scheduler = property(lambda self: self.state.host.scheduler)
  pipeline = property(lambda self: self.state.host.pipeline)

  def step(self, step: int) -> tuple[dict, dict]:
    return self.rl_step(step, jax.random.fold_in(self.state.host.rng, step))

  def rl_step(self, step: int, rng) -> tuple[dict, dict]:
    """One RL step (jaxghpo/rl_step.py) on the trainer's state."""
    return rl_step(self.state, step, rng, setup=self.setup, config=self.config)

  # ------------------------------------------------------------------------------------ evaluation
  def evaluate(self, step: int, sampled: bool = True, due_only: bool = False) -> dict:
    """The run's evaluation at `step` (evaluation.Evaluator: config.evals, then the exact sets)."""
    return self.evaluator(self.params, step, sampled=sampled, due_only=due_only)

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
    return sft.run(config, workdir, allow_config_change)
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
