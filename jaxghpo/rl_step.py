"""One RL step of GHPO, as docs/DESIGN.md draws it, on a TrainState: the host loop of a step and its update.

  draw problems -> curriculum.step_loop: plan hint ratios -> sample G responses (rollout.groups)
  -> retry all-wrong groups with longer hints (GHPO) / refill groups without signal (filter)
  -> scheduler update -> advantages -> the RLBatch, built and placed once -> sharded train step

Random numbers (common random numbers, jaxghpo/rollout/crn.py): each problem's samples in sampler call
`round` of the step draw from a key of (seed, step, problem id, round, occurrence), never from a running
key, so a retry in one arm changes no other draw; the step key (fold_in(run key, step)) keys the update
and the hint corruption.
"""
from __future__ import annotations

import time

import jax
import numpy as np

from jaxghpo import budget, curriculum, parallel, rl
from jaxghpo.parallel import hosts
from jaxghpo.rollout import crn
from jaxghpo.rollout import groups as groups_lib

# fold_in tags of the step key's streams other than sampling (crn.problem_keys folds the step into the base key).
_UPDATE_KEY, _HINT_KEY = 0x5EED_0001, 0x5EED_0002


def rl_step(state, step: int, rng, *, setup, config) -> tuple[dict, dict]:
  """One RL step on `state` (its params, optimizer state and token counts advance); returns (host metrics,
  device metrics of the update, not yet fetched). setup: experiment.Setup (read at call time: a test may
  swap its rollout)."""
  c, host = config, state.host
  timer = {"reward_s": 0.0}
  drawn = next(host.pipeline)  # this host's problems; refills (filter) append theirs
  calls = [0]  # sampler calls of this step so far: the round of the next one

  def draw():
    batch = next(host.pipeline)
    drawn.extend(batch)
    return [ex.problem_id for ex in batch], [ex.level for ex in batch]

  def sample(rows, ratios, width):
    round_ = calls[0]
    calls[0] += 1
    ids = np.asarray([ex.problem_id for ex in drawn], np.int64)
    keys = crn.problem_keys(host.rng, step, ids[rows], round_, crn.occurrences(ids)[rows])
    hint_key = jax.random.fold_in(jax.random.fold_in(rng, _HINT_KEY), round_)
    return setup.rollout(state.params, [drawn[i] for i in rows], ratios, hint_key, width=width, timer=timer,
                         keys=keys)

  # The previous update runs on the device while the host drew problems; sampling needs its params.
  t_wait = time.perf_counter()
  jax.block_until_ready(state.params)
  timer["train_wait_s"] = time.perf_counter() - t_wait
  t0 = time.perf_counter()
  out = curriculum.step_loop(host.scheduler, [ex.problem_id for ex in drawn], sample,
                             levels=[ex.level for ex in drawn], step=step, draw=draw,
                             refill_rounds=int(c.curriculum.filter_refill))
  rollout_s = time.perf_counter() - t0 - timer["reward_s"]

  # Group-relative advantages; groups without signal (filter) are masked out of the loss.
  rl_cfg = setup.rl_cfg
  adv_BxG = np.asarray(rl.group_advantages(out.groups.rewards, rl_cfg.advantage_estimator, eps=rl_cfg.adv_eps))
  train_hint = c.hints.placement == "response" and float(rl_cfg.hint_nll_coef) > 0
  batch = groups_lib.to_batch(out.groups, adv_BxG, out.keep, train_hint=train_hint, guide=bool(rl_cfg.guide))
  batch = batch.to_global(parallel.batch_sharding(setup.mesh, 1))
  if setup.ref_logprobs is not None:
    batch = batch.replace(ref_logp=setup.ref_logprobs(batch))

  t1 = time.perf_counter()
  key = jax.random.fold_in(rng, _UPDATE_KEY)
  state.params, state.opt_state, train_metrics = setup.train_step(state.params, state.opt_state, batch, key)
  rule = budget.check_rule(str(c.get("budget_rule", "generated")))
  gen_tokens = hosts.agreed_sum(budget.generated_tokens(out.sampled))
  budget_tokens = hosts.agreed_sum(budget.step_tokens(out.sampled, rule))
  host.gen_tokens_total += gen_tokens
  host.budget_tokens_total += budget_tokens
  metrics = host_metrics(out, gen_tokens, [drawn[i] for i in out.rows], setup=setup, config=config,
                         gen_tokens_total=host.gen_tokens_total)
  metrics.update({"budget_tokens": float(budget_tokens), "budget_tokens_total": float(host.budget_tokens_total)})
  metrics.update({"time/reward_s": timer["reward_s"], "time/rollout_s": rollout_s,
                  "time/train_wait_s": timer["train_wait_s"],
                  "time/train_s": time.perf_counter() - t1 + timer["train_wait_s"]})
  return metrics, train_metrics


def host_metrics(out, gen_tokens: int, examples, *, setup, config, gen_tokens_total: int) -> dict:
  """Step metrics from this step's final groups, reduced over hosts (small arrays only)."""
  G = int(config.rollout.group_size)
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
      "gen_tokens_total": float(gen_tokens_total),
      "retried_groups": float(hosts.allgather(np.asarray([out.retried.sum()])).sum()),
      "frac_groups_kept": float(hosts.allgather(out.keep).mean()),
  }
  metrics.update(out.metrics)
  metrics["frac_groups_nonzero_adv"] = float(nonzero.mean())  # of the trained groups
  task = setup.task
  hard = lv >= min(task.hard_levels() or [10**9])  # levels at or above the task's lowest hard one
  if task.checks_traces:  # signal from groups with a VALID success (not lucky answers)
    in_prompt = config.hints.placement == "prompt"  # response-placed hints are in the completions
    hints = list(out.groups.hint_text) if in_prompt else [""] * len(examples)
    completions = [str(t) for t in np.asarray(out.groups.completions, object).reshape(-1)]
    valid_signal = nonzero & hosts.allgather(task.valid_success_groups(
        [ex.problem for ex in examples], hints, completions, G))
    metrics["frac_groups_valid_signal"] = float(valid_signal.mean())
    if hard.any():
      metrics["frac_groups_valid_signal/hard"] = float(valid_signal[hard].mean())
  if hard.any():
    metrics["frac_groups_nonzero_adv/hard"] = float(nonzero[hard].mean())
    metrics["pass_rate/hard"] = float((acc[hard] > 0).mean())
    metrics["hint_ratio_mean/hard"] = float(hosts.allgather(out.ratios)[hard].mean())
  return metrics
