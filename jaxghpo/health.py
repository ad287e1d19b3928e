"""Whether a checkpoint's weights can be trusted, recorded with it; and the roll-back to the last one that can.

A skip streak (config.max_skipped_updates_in_a_row updates in a row skipped as non-finite) means the
weights in memory no longer train: a learning rate that blew them up, say. The checkpoint saved just before
the streak may already hold such weights (finite, but wrecked). So every checkpoint carries a health record
in its host state (`host["health"]`, written by `HealthTracker.at_save`):

  healthy           params finite, every metrics row since the previous checkpoint had no skipped update
                    and a finite loss and grad_norm, and the params' global norm at most
                    NORM_GROWTH_LIMIT x the reference norm (the params' norm when the run started)
  why               what failed, when not healthy
  param_norm, reference_param_norm, rows, bad_rows

At a streak the loop calls `rollback_target(checkpointer, used)`: the newest checkpoint whose record says
healthy and that was not rolled back to before. The run restores its params and optimizer state and goes on
with the data, scheduler and step count where they are (the batches that wrecked the weights are not
replayed). A streak with no healthy checkpoint left stops the run as before.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

NORM_GROWTH_LIMIT = 100.0  # a global params norm 100x the start's is a blown-up run, not learning


@jax.jit
def _sum_squares(leaves):
  return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves)


def global_norm(params) -> float:
  """sqrt(sum of squares) over every floating leaf, as a host float (inf/NaN when a leaf is not finite).
  The sum is replicated over the mesh; each process reads its own copy (works across hosts)."""
  leaves = [x for x in jax.tree.leaves(params) if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]
  if not leaves:
    return 0.0
  total = _sum_squares(leaves)
  value = total.addressable_data(0) if isinstance(total, jax.Array) else total
  return float(np.sqrt(np.asarray(value, np.float64)))


class HealthTracker:
  """Watches the metrics rows between checkpoints and writes each checkpoint's health record."""

  def __init__(self, reference_param_norm: float):
    self.reference = float(reference_param_norm)
    self.rows = 0
    self.bad = []  # (step, why) of rows since the last checkpoint that were not healthy

  @classmethod
  def from_host(cls, host: dict | None, params) -> "HealthTracker":
    """The tracker of a resumed run: the reference norm from the checkpoint's record, else these params'."""
    saved = (host or {}).get("health") or {}
    ref = saved.get("reference_param_norm")
    return cls(float(ref) if ref else global_norm(params))

  def reset(self) -> None:
    """Forgets the rows since the last checkpoint (after a roll-back they belong to discarded weights)."""
    self.rows, self.bad = 0, []

  def observe(self, step: int, row: dict) -> None:
    """One metrics row of a training step (rows without update metrics are ignored)."""
    if "skipped_updates" not in row:
      return
    self.rows += 1
    why = []
    if float(row["skipped_updates"]) > 0:
      why.append(f"{float(row['skipped_updates']):g} skipped updates")
    for key in ("loss", "grad_norm"):
      if key in row and not math.isfinite(float(row[key])):
        why.append(f"{key}={row[key]}")
    if why:
      self.bad.append((int(step), ", ".join(why)))

  def at_save(self, params) -> dict:
    """The health record of a checkpoint of `params` (and the rows since the previous one); resets the rows."""
    norm = global_norm(params)
    why = []
    if not math.isfinite(norm):
      why.append("params not finite")
    elif self.reference > 0 and norm > NORM_GROWTH_LIMIT * self.reference:
      why.append(f"params norm {norm:.3g} is over {NORM_GROWTH_LIMIT:g}x the start's {self.reference:.3g}")
    if self.bad:
      why.append("rows since the previous checkpoint: " + "; ".join(f"step {s}: {w}" for s, w in self.bad[:3]))
    record = {"healthy": not why, "why": "; ".join(why), "param_norm": norm,
              "reference_param_norm": self.reference, "rows": self.rows, "bad_rows": len(self.bad)}
    self.reset()
    return record


def read_health(checkpointer, step: int) -> dict | None:
  """The health record saved with `step` (None: saved before records existed, or the step does not read)."""
  try:
    _, _, host = checkpointer.restore(step, None, None)
  except Exception:  # noqa: BLE001 - a step that does not read is no roll-back target
    return None
  return (host or {}).get("health")


def rollback_target(checkpointer, used: set) -> int | None:
  """The newest step whose record says healthy and that is not in `used` (steps rolled back to before)."""
  for step in sorted(checkpointer.all_steps(), reverse=True):
    if step in used:
      continue
    record = read_health(checkpointer, step)
    if record and record.get("healthy"):
      return step
  return None
