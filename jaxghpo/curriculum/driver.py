"""The host loop of one GHPO step: plan -> sample -> retry rounds -> (filter refill) -> update.

The trainer, the simulations and the tests all run this one function (`step_loop`; `run_step` is its
form for a sample function that returns accuracy rewards only). Multi-host (SPMD): the sample
function is where collectives happen (the sampler's prompt allgather and the sharded program), so
every host must call it the same number of times with the same width:
  - each call's width is the agreed maximum (over hosts) of the rows the hosts bring; a host with
    fewer rows (or none) still calls, and its missing rows are inactive padding;
  - the number of retry and refill rounds is agreed the same way (a round runs while any host has a
    row for it);
  - filter refills draw a new batch on every host in every agreed round, so the input pipeline's
    position stays equal on all hosts (and a resumed run continues it exactly).
A one-host run issues no collectives here and equals the old per-host loop call for call.

Groups: what `sample` returns for b problems, either a float array [b, G] of accuracy rewards or a
dataclass whose every array field has b rows and which has `accuracy` and `rewards` [b, G]. The loop
copies rows between them generically (`take_rows`, `put_rows`), so a new field travels with no change
here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np


# ----------------------------------------------------------------------------- rows of groups
def take_rows(groups, idx):
  """The groups at `idx` (int [k] or bool [b]) as new arrays, every field alike."""
  if isinstance(groups, np.ndarray):
    return groups[idx]
  return dataclasses.replace(groups, **{f.name: getattr(groups, f.name)[idx] for f in dataclasses.fields(groups)
                                        if getattr(groups, f.name) is not None})


def put_rows(groups, idx, new) -> None:
  """groups[idx[j]] <- new[j] for every field (in place)."""
  if isinstance(groups, np.ndarray):
    groups[idx] = new
    return
  for f in dataclasses.fields(groups):
    dst = getattr(groups, f.name)
    if dst is not None:
      dst[idx] = getattr(new, f.name)


def accuracy_of(groups) -> np.ndarray:
  return groups if isinstance(groups, np.ndarray) else groups.accuracy


def rewards_of(groups) -> np.ndarray:
  return groups if isinstance(groups, np.ndarray) else groups.rewards


# ----------------------------------------------------------------------------- the step
@dataclasses.dataclass
class StepResult:
  """One step's outcome on this host: the B groups to train on and what the scheduler recorded.

  ids, levels, ratios: int64 / int / float32 [B], the problem, level and hint ratio of each final group
  (refilled slots hold the replacement problem); rows: int64 [B], its position among the step's problems
  (as `sample` numbers them: the batch, then the drawn refill batches). groups: the final groups
  (sample's type). keep: bool [B], the groups to train on (all True unless curriculum.mode=filter: then
  the groups with signal). retried: bool [B], re-sampled at least once. sampled: every groups object
  `sample` returned, in call order (what the step generated: retries and refills included). metrics: the
  scheduler's step metrics, with filter_refill_rounds and filter_groups_unfilled in filter mode (agreed
  over hosts).
  """
  ids: np.ndarray
  levels: np.ndarray
  ratios: np.ndarray
  rows: np.ndarray
  groups: Any
  keep: np.ndarray
  retried: np.ndarray
  sampled: list
  metrics: dict


def step_loop(sched, ids, sample: Callable, *, levels=None, step=None, draw: Callable | None = None,
              refill_rounds: int = 0) -> StepResult:
  """Runs one step of scheduler traffic on this host's B problems.

  sample(rows, ratios, width) -> groups for len(rows) problems: rows int64 [b] are positions among this
    step's problems (0..B-1 the batch, then the problems `draw` returned, in order); ratios float32 [b];
    width >= b is the agreed row count of the call (the same on every host; b may be 0).
  draw() -> (ids, levels): int arrays of a new batch of problems (curriculum.mode=filter refills).
  refill_rounds: at most this many refill rounds (curriculum.filter_refill; 0: none).

  GHPO: each retry round re-samples the groups `sched.retry` names with their next ratio; the group
  kept for a problem is the one sampled last, with its ratio. Filter (DAPO dynamic sampling): groups
  without signal (`sched.keep_mask`) are dropped; each refill round draws a new batch and samples as
  many of its problems as this host has dropped slots; those with signal fill the slots. Rounds end
  when no host has a dropped slot or after `refill_rounds`. `sched.update` then records every group
  sampled in the step (filter) or every final group (other modes).
  """
  from jaxghpo.parallel import hosts  # here: a numpy-only user of the curriculum never imports jax
  ids = np.asarray(ids, np.int64)
  B = ids.size
  levels = np.full(B, -1, np.int64) if levels is None else np.asarray(levels, np.int64)
  ratios = sched.plan(ids, levels, step=step)
  first = sample(np.arange(B), ratios, hosts.agreed_max(B))
  sampled = [first]
  groups = take_rows(first, np.arange(B))  # a copy: retries write into it, `first` stays as sampled
  final_ratios = ratios.copy()
  retried = np.zeros(B, bool)

  next_ratios = sched.retry(ids, ratios, accuracy_of(first))
  while True:
    idx = np.flatnonzero(np.isfinite(next_ratios))
    width = hosts.agreed_max(idx.size)
    if width == 0:
      break
    new = sample(idx, next_ratios[idx], width)
    sampled.append(new)
    put_rows(groups, idx, new)
    final_ratios[idx] = next_ratios[idx]
    retried[idx] = True
    subset_next = sched.retry(ids[idx], next_ratios[idx], accuracy_of(new))
    next_ratios = np.full(B, np.nan, np.float32)
    next_ratios[idx] = subset_next

  keep = np.ones(B, bool)
  final_ids, final_levels, final_rows = ids.copy(), levels.copy(), np.arange(B)
  extra = {}
  if sched.mode.refill:  # filter (DAPO dynamic sampling)
    keep = sched.keep_mask(rewards_of(groups))
    seen = [(ids, final_ratios.copy(), accuracy_of(groups), levels)]  # every group sampled, for update
    offset, rounds = B, 0
    while rounds < int(refill_rounds):
      missing = np.flatnonzero(~keep)
      width = hosts.agreed_max(missing.size)
      if width == 0:
        break
      if draw is None:
        raise ValueError("step_loop: refill_rounds > 0 needs draw= (a function returning a new batch of problems)")
      new_ids, new_levels = draw()
      new_ids, new_levels = np.asarray(new_ids, np.int64), np.asarray(new_levels, np.int64)
      if new_ids.size < width:
        raise ValueError(f"step_loop: draw() returned {new_ids.size} problems, fewer than the {width} a refill "
                         "round needs; draw whole batches")
      k = missing.size
      r = sched.plan(new_ids[:k], new_levels[:k])
      new = sample(offset + np.arange(k), r, width)
      sampled.append(new)
      seen.append((new_ids[:k], r, accuracy_of(new), new_levels[:k]))
      signal = sched.keep_mask(rewards_of(new))
      slots = missing[:int(signal.sum())]
      put_rows(groups, slots, take_rows(new, signal))
      final_ids[slots], final_levels[slots] = new_ids[:k][signal], new_levels[:k][signal]
      final_ratios[slots] = r[signal]
      final_rows[slots] = offset + np.flatnonzero(signal)
      keep[slots] = True
      offset += new_ids.size
      rounds += 1
    extra = {"filter_refill_rounds": float(rounds),
             "filter_groups_unfilled": float(hosts.agreed_sum(int((~keep).sum())))}
    upd_ids, upd_ratios, upd_acc, upd_levels = (np.concatenate(x) for x in zip(*seen))
  else:
    upd_ids, upd_ratios, upd_acc, upd_levels = final_ids, final_ratios, accuracy_of(groups), final_levels
  metrics = sched.update(upd_ids, upd_ratios, upd_acc, upd_levels, step=step)
  metrics.update(extra)
  return StepResult(final_ids, final_levels, final_ratios, final_rows, groups, keep, retried, sampled, metrics)


def run_step(sched, problem_ids, sample_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], *, levels=None,
             step=None, draw=None, refill_rounds: int = 0):
  """`step_loop` for a sample function of (ids [b], ratios [b]) -> accuracy rewards [b, G].

  Returns (final_ratios float32 [B], final_rewards [B, G], metrics dict). With refill (filter mode)
  draw() -> (ids, levels) supplies the new problems.
  """
  ids = np.asarray(problem_ids, np.int64)
  drawn = [ids]

  def draw_ids():
    new_ids, new_levels = draw()
    drawn.append(np.asarray(new_ids, np.int64))
    return new_ids, new_levels

  def sample(rows, ratios, width):
    del width  # no collectives here
    return np.asarray(sample_fn(np.concatenate(drawn)[rows], ratios))

  out = step_loop(sched, ids, sample, levels=levels, step=step, draw=draw_ids if draw else None,
                  refill_rounds=refill_rounds)
  return out.ratios, out.groups, out.metrics
