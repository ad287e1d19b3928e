"""The RL loop: one step of GHPO as docs/DESIGN.md draws it, top to bottom.

  draw problems -> curriculum.step_loop: plan hint ratios -> sample G responses (rollout.groups)
  -> retry all-wrong groups with longer hints (GHPO) / refill groups without signal (filter)
  -> scheduler update -> advantages -> the RLBatch, built and placed once -> sharded train step
  -> metrics (a step late) -> checkpoint -> eval

Set-up is experiment.setup; the host loop of a step is curriculum.step_loop (the same code the
simulations and tests run); the device side is pure jitted functions. Every decision that ends a run
(SIGTERM, token budget, last step) is agreed by all hosts at a step boundary.
"""
from __future__ import annotations

import time

import jax
import numpy as np
from flax import nnx

from jaxghpo import (budget, curriculum, derived, diagnostics, evaluation, experiment, faults, health,
                     models, parallel, paths, resume_check, rl, stopping, validation)
from jaxghpo.checkpoint import Checkpointer, abstract_target
from jaxghpo.curriculum import multihost
from jaxghpo.logging_utils import DeferredMetrics, MetricWriter
from jaxghpo.parallel import hosts
from jaxghpo.rollout import crn
from jaxghpo.rollout import groups as groups_lib

# fold_in tags of the step key's streams other than sampling (crn.problem_keys folds the step into the base key).
_UPDATE_KEY, _HINT_KEY = 0x5EED_0001, 0x5EED_0002


# ---------------------------------------------------------------------------------- state on disk
def save(checkpointer: Checkpointer, step: int, params, opt_state, host: dict) -> None:
  """Params, optimizer state and the host state (scheduler, data position, rng, token count) at `step`."""
  checkpointer.save(step, params=params, opt_state=opt_state, host_state={**host, "step": int(step)})


def restore(checkpointer: Checkpointer, params, opt_state, param_shardings, opt_shardings):
  """(step, params, opt_state, host state) of the newest step that restores (damaged steps are skipped and
  named), placed like the given ones; None without steps."""
  return checkpointer.restore_latest(abstract_target(params, param_shardings),
                                     abstract_target(opt_state, opt_shardings))


def export(graphdef, params, model_cfg, tokenizer, out_dir: str) -> None:
  """The policy in HF format (process 0 writes; with several processes every one joins the gather)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    params = multihost_utils.process_allgather(params, tiled=True)
  if jax.process_index() == 0:
    models.save_pretrained(nnx.merge(graphdef, params), model_cfg, out_dir, tokenizer=tokenizer)


class Trainer:
  """The run's pieces (experiment.setup) and its loop: `rl_step` is one step, `run()` the loop."""

  def __init__(self, config, workdir: str, allow_config_change: bool = False):
    self.config, self.workdir = config, workdir
    self.allow_config_change = allow_config_change  # a resume may change keys that change the math
    validation.check_workdir(workdir)  # a file or read-only workdir: one line naming it
    s = self.setup = experiment.setup(config)
    self.scheduler, self.pipeline, self.rl_cfg = s.scheduler, s.pipeline, s.rl_cfg
    self.params, self.opt_state = s.params, s.opt_state
    self.evaluator = evaluation.Evaluator(config, s, workdir)  # config.evals and the exact sets
    self.P = int(config.data.prompts_per_step)  # problems per step, all hosts
    self.G = int(config.rollout.group_size)
    self.rng = jax.random.key(derived.seed(config, "train_rng"))
    self.checkpointer = Checkpointer(paths.join(workdir, "checkpoints"), max_to_keep=int(config.keep_checkpoints))
    self.skip_guard = faults.SkipGuard(config, before_stop=self.checkpointer.wait, on_limit=self._roll_back)
    self.health = None  # health.HealthTracker, made in restore(): each checkpoint's health record
    self._rolled_back_to: set[int] = set()
    self._last_rollback_step: int | None = None  # the step of the last roll-back (a streak right after it stops)
    self.deferred = DeferredMetrics()
    self.writer = None  # opened in restore(), once the resume step is known
    self.start_step = 0
    self.gen_tokens_total = 0
    self.signals = stopping.StopSignals()  # SIGTERM / SIGINT on this host; agreed at step boundaries
    self.stop_reason = None  # why run() stopped (stopping.REASONS)
    self.budget_rule = budget.check_rule(str(config.get("budget_rule", "generated")))
    self.budget_tokens_total = 0  # config.max_gen_tokens is spent in these (jaxghpo/budget.py)

  def restore(self) -> None:
    s = self.setup
    step = None
    if self.checkpointer.latest_step() is not None:
      opt_shardings = rl.optimizer_shardings(s.optimizer, self.params, s.param_shardings, s.mesh)
      step, self.params, self.opt_state, host = restore(self.checkpointer, self.params, self.opt_state,
                                                        s.param_shardings, opt_shardings)
      self.scheduler.load_state_dict(host["scheduler"])
      self.pipeline.set_state(host["pipeline"])
      self.rng = host["rng"]
      self.gen_tokens_total = int(host["gen_tokens_total"])
      self.budget_tokens_total = int(host.get("budget_tokens_total", host["gen_tokens_total"]))
      self.start_step = int(host["step"])
    # Written once the resume is accepted: a resume refused for changed data keeps the run's own report.
    experiment.write_data_report(s.problems, self.workdir, jax.process_index() == 0)
    self.health = health.HealthTracker.from_host(host if step is not None else None, self.params)
    # Steps count from 1 in metrics.jsonl (step 0 holds the evaluation before training): rows after
    # the restored step are dropped so a resumed run continues the file without duplicates.
    self.writer = MetricWriter(self.workdir, is_main_process=jax.process_index() == 0,
                               total_steps=int(self.config.num_steps), print_every=int(self.config.log_every_steps),
                               token_budget=int(self.config.get("max_gen_tokens", 0) or 0),
                               resume_step=self.start_step if step is not None else -1)

  def save(self, step: int) -> None:
    if not self.skip_guard.may_save(step):
      return
    save(self.checkpointer, step, self.params, self.opt_state,
         {"scheduler": self.scheduler.state_dict(), "pipeline": self.pipeline.get_state(), "rng": self.rng,
          "gen_tokens_total": int(self.gen_tokens_total), "budget_tokens_total": int(self.budget_tokens_total),
          "health": self.health.at_save(self.params)})

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
    s = self.setup
    opt_shardings = rl.optimizer_shardings(s.optimizer, self.params, s.param_shardings, s.mesh)
    self.params, self.opt_state, _ = self.checkpointer.restore(
        target, abstract_target(self.params, s.param_shardings), abstract_target(self.opt_state, opt_shardings))
    self._rolled_back_to.add(target)
    self._last_rollback_step = int(step)
    self.health.reset()
    print(f"step {step}: {self.skip_guard.in_a_row} updates in a row were skipped as non-finite: rolled back to "
          f"the params and optimizer state of checkpoint {target}, the newest recorded healthy; data, curriculum "
          "and step count go on", flush=True)
    return True

  # ------------------------------------------------------------------------------------ the step
  def rl_step(self, step: int, rng) -> tuple[dict, dict]:
    """One RL step; returns (host metrics, device metrics of the update, not yet fetched).

    Random numbers (common random numbers, jaxghpo/rollout/crn.py): each problem's samples in sampler call
    `round` of the step draw from a key of (seed, step, problem id, round, occurrence), never from a
    running key, so a retry in one arm changes no other draw; rng (= fold_in(run key, step)) keys the
    update and the hint corruption."""
    c = self.config
    timer = {"reward_s": 0.0}
    drawn = next(self.pipeline)  # this host's problems; refills (filter) append theirs
    calls = [0]  # sampler calls of this step so far: the round of the next one

    def draw():
      batch = next(self.pipeline)
      drawn.extend(batch)
      return [ex.problem_id for ex in batch], [ex.level for ex in batch]

    def sample(rows, ratios, width):
      round_ = calls[0]
      calls[0] += 1
      ids = np.asarray([ex.problem_id for ex in drawn], np.int64)
      keys = crn.problem_keys(self.rng, step, ids[rows], round_, crn.occurrences(ids)[rows])
      hint_key = jax.random.fold_in(jax.random.fold_in(rng, _HINT_KEY), round_)
      return self.setup.rollout(self.params, [drawn[i] for i in rows], ratios, hint_key, width=width, timer=timer,
                                keys=keys)

    # The previous update runs on the device while the host drew problems; sampling needs its params.
    t_wait = time.perf_counter()
    jax.block_until_ready(self.params)
    timer["train_wait_s"] = time.perf_counter() - t_wait
    t0 = time.perf_counter()
    out = curriculum.step_loop(self.scheduler, [ex.problem_id for ex in drawn], sample,
                               levels=[ex.level for ex in drawn], step=step, draw=draw,
                               refill_rounds=int(c.curriculum.filter_refill))
    rollout_s = time.perf_counter() - t0 - timer["reward_s"]

    # Group-relative advantages; groups without signal (filter) are masked out of the loss.
    adv_BxG = np.asarray(rl.group_advantages(out.groups.rewards, self.rl_cfg.advantage_estimator,
                                             eps=self.rl_cfg.adv_eps))
    train_hint = c.hints.placement == "response" and float(self.rl_cfg.hint_nll_coef) > 0
    batch = groups_lib.to_batch(out.groups, adv_BxG, out.keep, train_hint=train_hint, guide=bool(self.rl_cfg.guide))
    batch = batch.to_global(parallel.batch_sharding(self.setup.mesh, 1))
    if self.setup.ref_logprobs is not None:
      batch = batch.replace(ref_logp=self.setup.ref_logprobs(batch))

    t1 = time.perf_counter()
    key = jax.random.fold_in(rng, _UPDATE_KEY)
    self.params, self.opt_state, train_metrics = self.setup.train_step(self.params, self.opt_state, batch, key)
    gen_tokens = multihost.agreed_sum(budget.generated_tokens(out.sampled))
    budget_tokens = multihost.agreed_sum(budget.step_tokens(out.sampled, self.budget_rule))
    self.gen_tokens_total += gen_tokens
    self.budget_tokens_total += budget_tokens
    metrics = self.host_metrics(out, gen_tokens, [drawn[i] for i in out.rows])
    metrics.update({"budget_tokens": float(budget_tokens), "budget_tokens_total": float(self.budget_tokens_total)})
    metrics.update({"time/reward_s": timer["reward_s"], "time/rollout_s": rollout_s,
                    "time/train_wait_s": timer["train_wait_s"],
                    "time/train_s": time.perf_counter() - t1 + timer["train_wait_s"]})
    return metrics, train_metrics

  def host_metrics(self, out, gen_tokens: int, examples) -> dict:
    """Step metrics from this step's final groups, reduced over hosts (small arrays only)."""
    acc = hosts.allgather(out.groups.accuracy)
    rew = hosts.allgather(out.groups.rewards)
    lengths = hosts.allgather(out.groups.lengths)
    lv = hosts.allgather(out.levels)
    nonzero = (rew.max(1) > rew.min(1))
    metrics = {
        "reward_mean": float(rew.mean()),
        "accuracy_mean": float(acc.mean()),
        "pass_rate": float((acc > 0).mean()),
        "response_len_mean": float(lengths.mean()),
        "gen_tokens": float(gen_tokens),
        "gen_tokens_total": float(self.gen_tokens_total),
        "retried_groups": float(hosts.allgather(np.asarray([out.retried.sum()])).sum()),
        "frac_groups_kept": float(hosts.allgather(out.keep).mean()),
    }
    metrics.update(out.metrics)
    metrics["frac_groups_nonzero_adv"] = float(nonzero.mean())  # of the trained groups
    hard = lv >= min(experiment.parse_levels(self.config.eval.hard_levels) or [10**9])
    if self.config.data.source == "task":  # signal from groups with a VALID success (not lucky answers)
      in_prompt = self.config.hints.placement == "prompt"  # response-placed hints are in the completions
      hints = list(out.groups.hint_text) if in_prompt else [""] * len(examples)
      completions = [str(t) for t in np.asarray(out.groups.completions, object).reshape(-1)]
      valid_signal = nonzero & hosts.allgather(diagnostics.valid_success_groups(
          [ex.problem for ex in examples], hints, completions, self.G))
      metrics["frac_groups_valid_signal"] = float(valid_signal.mean())
      if hard.any():
        metrics["frac_groups_valid_signal/hard"] = float(valid_signal[hard].mean())
    if hard.any():
      metrics["frac_groups_nonzero_adv/hard"] = float(nonzero[hard].mean())
      metrics["pass_rate/hard"] = float((acc[hard] > 0).mean())
      metrics["hint_ratio_mean/hard"] = float(hosts.allgather(out.ratios)[hard].mean())
    return metrics

  # ------------------------------------------------------------------------------------ evaluation
  def evaluate(self, step: int, sampled: bool = True, due_only: bool = False) -> dict:
    """The run's evaluation at `step` (evaluation.Evaluator: config.evals, then the exact sets)."""
    return self.evaluator(self.params, step, sampled=sampled, due_only=due_only)

  # ------------------------------------------------------------------------------------ the loop
  def write(self, ready, extra=None) -> None:
    if ready is not None:
      step, row = ready
      if "clip_frac_low" in row:
        row["clip_frac"] = float(row["clip_frac_low"]) + float(row["clip_frac_high"])
      self.writer.write(step, {**row, **(extra or {})})
      self.health.observe(step, row)
      self.skip_guard.observe(step, row)

  def stop_agreed(self) -> str | None:
    """The signal any host got (SIGTERM, SIGINT; None): a collective, called by every host at each step end."""
    return stopping.SIGNAL_NAMES.get(multihost.agreed_max(int(self.signals.code)))

  def run(self) -> dict:
    """The loop (`_run`) with SIGTERM and SIGINT handled at step boundaries; prints why it stopped."""
    self.signals.install()
    try:
      return self._run()
    except BaseException:
      self._close_quietly()  # no save left writing in the background while the error unwinds
      raise
    finally:
      self.signals.uninstall()

  def _close_quietly(self) -> None:
    for close in (self.checkpointer.close, getattr(self.writer, "close", None)):
      try:
        if close is not None:
          close()
      except Exception:  # pylint: disable=broad-except  (the error that stopped the run is the one to report)
        pass

  def _run(self) -> dict:
    c = self.config
    num_steps = int(c.num_steps)
    latest = self.checkpointer.latest_step()
    if latest is not None:  # a resume: keys that change the math must equal config.json's (resume_check.py)
      resume_check.check(c, self.workdir, latest, allow=self.allow_config_change,
                         is_main_process=jax.process_index() == 0)
    self.restore()
    if self.start_step == 0 and jax.process_index() == 0:
      paths.write_text(paths.join(self.workdir, "config.json"), c.to_json_best_effort(indent=2))
    summary = {}
    spent = bool(c.max_gen_tokens) and self.budget_tokens_total >= int(c.max_gen_tokens)
    if self.start_step >= num_steps or (self.start_step > 0 and spent):
      self.writer.close()  # a finished run: nothing to train, its files are complete
      self.stop_reason = "already finished"
      self._print_stop(self.start_step, num_steps)
      self.checkpointer.close()
      return {"already_finished": True}
    if self.start_step == 0:
      # eval.sample_before=False: the policy before training is the same for every arm and seed; only its
      # (cheap, exact) measures are logged at step 0.
      summary["eval_before"] = self.evaluate(0, sampled=bool(c.eval.get("sample_before", True)))
      self.writer.write(0, summary["eval_before"])
    t_prev = time.perf_counter()
    stop = None
    self.stop_reason = "finished steps"
    for step in range(self.start_step, num_steps):
      host_metrics, train_metrics = self.rl_step(step, jax.random.fold_in(self.rng, step))
      now = time.perf_counter()
      host_metrics["time/step_s"], t_prev = now - t_prev, now
      # The host never blocks on this step's device metrics: the previous step's are written now.
      self.write(self.deferred.push(step + 1, train_metrics, host_metrics))
      done = step + 1
      stop = self.stop_agreed()
      # An equal budget (config.budget_rule's tokens, retries included) compares arms fairly: stop when it
      # is spent (budget_tokens_total is summed over hosts, so every host reads the same).
      if bool(c.max_gen_tokens) and self.budget_tokens_total >= int(c.max_gen_tokens):
        num_steps, self.stop_reason = done, "token budget"
      evaluate_now = done == num_steps or self.evaluator.due(done)
      if done % int(c.checkpoint_every_steps) == 0 or evaluate_now or stop:
        extra = self.evaluate(done, due_only=done != num_steps) if evaluate_now else {}
        if done == num_steps:
          summary["eval_after"] = extra
        self.write(self.deferred.flush(), extra)
      if done % int(c.checkpoint_every_steps) == 0 or done == num_steps or stop:
        self.save(done)
      if stop or done == num_steps:
        break
    self.checkpointer.wait()
    if stop:
      self.stop_reason = stop
    if c.export_at_end and not stop:
      s = self.setup
      export(s.graphdef, self.params, s.model_cfg, s.tokenizer, paths.join(self.workdir, "export"))
    self.writer.close()  # ends a progress line on a terminal before the stop line
    self._print_stop(done, int(c.num_steps))
    self.checkpointer.close()
    return summary

  def _print_stop(self, step: int, num_steps: int) -> None:
    if jax.process_index() == 0:
      print(stopping.stop_line(self.stop_reason, step=step, num_steps=num_steps, gen_tokens=self.budget_tokens_total,
                               max_gen_tokens=int(self.config.max_gen_tokens), saved=self.checkpointer.latest_step()),
            flush=True)


def run(config, workdir: str, allow_config_change: bool = False) -> dict:
  """The run `config` describes, in `workdir` (which it holds alone: workdir_lock); allow_config_change: see
  jaxghpo/resume_check.py."""
  from jaxghpo import workdir_lock
  with workdir_lock.held(workdir):
    return _run(config, workdir, allow_config_change)


def _run(config, workdir: str, allow_config_change: bool = False) -> dict:
  if config.get("arms", ""):  # several arms side by side, each in workdir/ARM (jaxghpo/arms.py)
    from jaxghpo import arms
    return arms.run_side_by_side(config, workdir, run, allow_config_change=allow_config_change)
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
