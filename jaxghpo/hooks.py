"""The train loop's hooks (jaxghpo/train.py): checkpoints with roll-back, metrics, stopping, export.

Each hook owns one job and the state that job needs; the loop calls them at step boundaries:
  Checkpoints  restore the newest step that restores (agreed across hosts), save at the cadence and at the
               end, and the guard against non-finite updates: at a streak of skipped updates, roll back to
               the newest checkpoint recorded healthy (jaxghpo/health.py), or stop
  Metrics      metrics.jsonl / TensorBoard / the console line, one step late so the host never blocks the
               device for a number (logging_utils.DeferredMetrics); every written row is observed by the
               checkpoint guard
  Stopping     SIGTERM / SIGINT on any host, agreed by all at a step end; the token budget; the stop line
  export       the policy in HF format (process 0 writes; every process joins the gather)
"""
from __future__ import annotations

import jax
from flax import nnx

from jaxghpo import faults, health, models, paths, rl, stopping
from jaxghpo.checkpoint import Checkpointer, abstract_target
from jaxghpo.logging_utils import DeferredMetrics, MetricWriter
from jaxghpo.parallel import hosts


class Checkpoints:
  """Params, optimizer state and host state on disk; the skip guard and its roll-back."""

  def __init__(self, config, workdir: str, setup, abstract=None):
    self.setup = setup
    # state -> (params, opt_state) restore targets; default: the RL set-up's shardings
    self._abstract = abstract or self._abstract_rl
    self.checkpointer = Checkpointer(paths.join(workdir, "checkpoints"), max_to_keep=int(config.keep_checkpoints))
    self.skip_guard = faults.SkipGuard(config, before_stop=self.checkpointer.wait, on_limit=self._roll_back)
    self.health = None  # health.HealthTracker, made in restore(): each checkpoint's health record
    self.state = None  # the TrainState a roll-back replaces params and optimizer state of
    self._rolled_back_to: set[int] = set()
    self._last_rollback_step: int | None = None  # the step of the last roll-back (a streak right after it stops)

  def _abstract_rl(self, state):
    s = self.setup
    opt_shardings = rl.optimizer_shardings(s.optimizer, state.params, s.param_shardings, s.mesh)
    return abstract_target(state.params, s.param_shardings), abstract_target(state.opt_state, opt_shardings)

  def restore(self, state) -> bool:
    """The newest step that restores (damaged steps are skipped and named) into `state`; False without steps."""
    self.state = state
    restored = None
    if self.checkpointer.latest_step() is not None:
      restored = self.checkpointer.restore_latest(*self._abstract(state))
    host = None
    if restored is not None:
      _, state.params, state.opt_state, host = restored
      state.load_host(host)
    self.health = health.HealthTracker.from_host(host, state.params)
    return restored is not None

  def save(self, state, step: int) -> None:
    if not self.skip_guard.may_save(step):
      return
    host = {**state.host_dict(), "health": self.health.at_save(state.params), "step": int(step)}
    self.checkpointer.save(step, params=state.params, opt_state=state.opt_state, host_state=host)

  def observe(self, step: int, row: dict) -> None:
    self.health.observe(step, row)
    self.skip_guard.observe(step, row)

  def _roll_back(self, step: int) -> bool:
    """At a skip streak: the params and optimizer state of the newest checkpoint recorded healthy (not used
    before) replace the wrecked ones; data, curriculum and step count go on (jaxghpo/health.py). A streak that
    began right after the previous roll-back (no update took since) stops the run instead: rolling back again
    would only reload the same params, a checkpoint saved after that roll-back included, and learn nothing."""
    # The step after a roll-back is not observed (its update ran before the restore: SkipGuard ignores it), so a
    # streak that starts on the step after that one followed the roll-back directly.
    if self._last_rollback_step is not None and self.skip_guard.first_skipped_step <= self._last_rollback_step + 2:
      return False
    self.checkpointer.wait()
    target = health.rollback_target(self.checkpointer, self._rolled_back_to)
    if target is None:
      return False
    self.state.params, self.state.opt_state, _ = self.checkpointer.restore(target, *self._abstract(self.state))
    self._rolled_back_to.add(target)
    self._last_rollback_step = int(step)
    self.health.reset()
    print(f"step {step}: {self.skip_guard.in_a_row} updates in a row were skipped as non-finite: rolled back to "
          f"the params and optimizer state of checkpoint {target}, the newest recorded healthy; data, curriculum "
          "and step count go on", flush=True)
    return True


class Metrics:
  """The run's metric rows, written a step late (the device's numbers are fetched when the next step runs)."""

  def __init__(self, config, workdir: str, resume_step: int, observe):
    # Steps count from 1 in metrics.jsonl (step 0 holds the evaluation before training): rows after the
    # restored step are dropped so a resumed run continues the file without duplicates.
    self.writer = MetricWriter(workdir, is_main_process=jax.process_index() == 0,
                               total_steps=int(config.num_steps), print_every=int(config.log_every_steps),
                               token_budget=int(config.get("max_gen_tokens", 0) or 0), resume_step=resume_step)
    self.deferred = DeferredMetrics()
    self._observe = observe  # (step, row): the checkpoint guard reads every written row

  def push(self, step: int, train_metrics, host_metrics) -> None:
    """This step's metrics in, the previous step's written."""
    self.write(self.deferred.push(step, train_metrics, host_metrics))

  def flush(self, extra=None) -> None:
    """The pending step's metrics written now (with `extra`, e.g. an evaluation's)."""
    self.write(self.deferred.flush(), extra)

  def write(self, ready, extra=None) -> None:
    if ready is not None:
      step, row = ready
      if "clip_frac_low" in row:
        row["clip_frac"] = float(row["clip_frac_low"]) + float(row["clip_frac_high"])
      self.writer.write(step, {**row, **(extra or {})})
      self._observe(step, row)


class Stopping:
  """Why the loop stops: a signal on any host (agreed at step ends), the token budget, the last step."""

  def __init__(self, config):
    self.signals = stopping.StopSignals()  # SIGTERM / SIGINT on this host; agreed at step boundaries
    self.max_tokens = int(config.get("max_gen_tokens", 0) or 0)
    self.reason = None  # stopping.REASONS

  def agreed_signal(self) -> str | None:
    """The signal any host got (SIGTERM, SIGINT; None): a collective, called by every host at each step end."""
    return stopping.SIGNAL_NAMES.get(hosts.agreed_max(int(self.signals.code)))

  def budget_spent(self, state) -> bool:
    """An equal budget (config.budget_rule's tokens, retries included) compares arms fairly; the count is
    summed over hosts, so every host reads the same."""
    return bool(self.max_tokens) and state.host.budget_tokens_total >= self.max_tokens

  def print_line(self, step: int, num_steps: int, state, saved) -> None:
    if jax.process_index() == 0:
      print(stopping.stop_line(self.reason, step=step, num_steps=num_steps, gen_tokens=state.host.budget_tokens_total,
                               max_gen_tokens=self.max_tokens, saved=saved), flush=True)


def export(graphdef, params, model_cfg, tokenizer, out_dir: str) -> None:
  """The policy in HF format (process 0 writes; with several processes every one joins the gather)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    params = multihost_utils.process_allgather(params, tiled=True)
  if jax.process_index() == 0:
    models.save_pretrained(nnx.merge(graphdef, params), model_cfg, out_dir, tokenizer=tokenizer)
