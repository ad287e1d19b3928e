"""Non-finite numbers: where they are found and how the run reacts.

  leaf_digests(tree)            name -> shape, dtype, finite?, checksum of every array (one jitted pass, one
                                fetch); checkpoint/ stores them with each step and checks them on restore
  nonfinite_leaves(tree)        names of the float leaves holding NaN or inf
  check_finite(tree, what)      raises NonFiniteError naming them
  SkipGuard(config)             the loop's watch on skipped updates (the train step skips an update whose
                                loss or gradient is not finite): `observe(step, row)` on each metrics row
                                raises after config.max_skipped_updates_in_a_row skipped updates in a row;
                                `may_save(step)` is False while updates are being skipped, so a run that has
                                stopped learning never replaces its good checkpoints (keep_checkpoints
                                deletes the oldest on each save).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


class NonFiniteError(FloatingPointError):
  """Arrays that must be finite hold NaN or inf; `names` lists the leaves."""

  def __init__(self, message: str, names: list[str]):
    super().__init__(message)
    self.names = names


def leaf_name(path) -> str:
  """A pytree path as "layers.0.attn.kernel" (an nnx Variable's trailing ".value" left out)."""
  parts = []
  if path and isinstance(path[-1], jax.tree_util.GetAttrKey) and path[-1].name == "value":
    path = path[:-1]
  for key in path:
    for attr in ("key", "name", "idx"):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return ".".join(parts)


def _bits_u32(x):
  """x's bit pattern widened to uint32 (float16/bfloat16/int16 -> uint16 -> uint32; 64-bit: two words)."""
  width = jnp.dtype(x.dtype).itemsize
  if width == 8:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)  # [..., 2]
  kind = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[width]
  return jax.lax.bitcast_convert_type(x, kind).astype(jnp.uint32)


@jax.jit
def _finite_and_checksum_per_leaf(leaves):
  """(bool [L]: leaf is finite (non-floats: True), uint32 [L]: sum of the leaf's bit words mod 2**32).

  Integer sums wrap, so the checksum does not depend on the reduction order or the sharding."""
  finite = [jnp.all(jnp.isfinite(x)) if jnp.issubdtype(x.dtype, jnp.inexact) else jnp.asarray(True)
            for x in leaves]
  sums = [jnp.sum(_bits_u32(x), dtype=jnp.uint32) for x in leaves]
  return jnp.stack(finite), jnp.stack(sums)


def _fetch(x) -> np.ndarray:
  return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)


def leaf_digests(tree) -> dict[str, dict]:
  """name -> {"shape", "dtype", "finite", "checksum"} for every array leaf (one jitted pass, one fetch).

  The checksum (sum of the bit words mod 2**32) is what a checkpoint stores to find flipped bytes."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  named = [(leaf_name(path), x) for path, x in flat if hasattr(x, "dtype") and hasattr(x, "shape")
           and not jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)]
  if not named:
    return {}
  finite, sums = _finite_and_checksum_per_leaf([x for _, x in named])
  finite, sums = _fetch(finite), _fetch(sums)
  return {name: {"shape": [int(d) for d in x.shape], "dtype": str(jnp.dtype(x.dtype)),
                 "finite": bool(f), "checksum": int(c)} for (name, x), f, c in zip(named, finite, sums)}


def nonfinite_leaves(tree) -> list[str]:
  """Names ("layers.0.attn.q.kernel") of the floating-point leaves of `tree` with a NaN or inf."""
  return [name for name, d in leaf_digests(tree).items() if not d["finite"]]


def check_finite(tree, what: str, mend: str = "") -> None:
  """Raises NonFiniteError "{what}: NaN or inf in <leaves>; {mend}" when a float leaf is not finite."""
  bad = nonfinite_leaves(tree)
  if bad:
    shown = ", ".join(bad[:5]) + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else "")
    raise NonFiniteError(f"{what}: NaN or inf in {shown}" + (f"; {mend}" if mend else ""), bad)


class SkipGuard:
  """Counts the train step's skipped updates in a row; stops the run at the limit.

  config.max_skipped_updates_in_a_row (0: never stop) and config.rl.ppo_epochs (updates per step).
  A step counts as skipped when all its updates were (metrics row "skipped_updates" == ppo_epochs);
  any applied update ends the streak.
  """

  def __init__(self, config, before_stop=None, on_limit=None):
    self.limit = int(config.get("max_skipped_updates_in_a_row", 3))
    if self.limit < 0:
      raise ValueError(f"config.max_skipped_updates_in_a_row={self.limit} must be >= 0 (0: never stop)")
    self.updates_per_step = int(config.rl.get("ppo_epochs", 1))
    self.in_a_row = 0
    self.first_skipped_step = None
    self._before_stop = before_stop
    # on_limit(step) -> bool: called at the limit; True when it rolled the weights back (health.py), so the
    # streak starts again and the row of the step already in flight (from the old weights) is not counted.
    self._on_limit = on_limit
    self._ignore_through = -1

  def observe(self, step: int, row: dict) -> None:
    """One metrics row (step >= 1); raises RuntimeError once the limit is reached (and on_limit did not
    roll back)."""
    if "skipped_updates" not in row or step <= self._ignore_through:
      return
    skipped = float(row["skipped_updates"])
    if skipped >= self.updates_per_step:
      if self.in_a_row == 0:
        self.first_skipped_step = int(step)
      self.in_a_row += int(round(skipped))
    else:
      self.in_a_row, self.first_skipped_step = 0, None
    if self.limit and self.in_a_row >= self.limit:
      if self._on_limit is not None and self._on_limit(step):
        self.in_a_row, self.first_skipped_step, self._ignore_through = 0, None, int(step) + 1
        return
      if self._before_stop is not None:
        self._before_stop()  # e.g. let a checkpoint still being written commit
      tried = " No checkpoint with a healthy record is left to roll back to." if self._on_limit is not None else ""
      raise RuntimeError(
          f"step {step}: the last {self.in_a_row} updates (since step {self.first_skipped_step}) were all "
          f"skipped for a non-finite loss, gradient or update (config.max_skipped_updates_in_a_row={self.limit})."
          f"{tried} The run stops so that it does not go on learning nothing, and its checkpoints from before are "
          "kept. See loss and grad_norm in metrics.jsonl; lower rl.learning_rate or check the data, then resume.")

  def may_save(self, step: int) -> bool:
    """False while the latest updates were skipped: the checkpoint before the streak is kept as it is."""
    if self.in_a_row:
      print(f"step {step}: no checkpoint: the last {self.in_a_row} updates were skipped (non-finite); "
            "the previous checkpoint is kept", flush=True)
      return False
    return True
