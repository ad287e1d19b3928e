"""Restore targets and the checks of a step against them: the errors a restore raises, abstract targets,
the saved arrays' names and shapes against the target's (CheckpointMismatch), and the restored arrays'
checksums and finiteness (CorruptCheckpoint)."""
from __future__ import annotations

import jax
import numpy as np

from jaxghpo import faults


class CheckpointMismatch(ValueError):
  """The checkpoint holds other arrays (names or shapes) than the restore target: another model/config."""


class CorruptCheckpoint(RuntimeError):
  """A step's files cannot be read back as they were written (truncated, missing, garbled, non-finite)."""


class NoSuchStep(FileNotFoundError):
  """The asked step is not in the directory (the caller's error, not damage)."""


def abstract_target(tree, shardings=None):
  """A restore target: ``tree``'s structure with ``jax.ShapeDtypeStruct(shape, dtype, sharding=...)`` leaves.

  tree: concrete arrays or ShapeDtypeStructs (an nnx.State, an optax state, any pytree).
  shardings: a pytree whose structure is a prefix of ``tree``'s (for example what
    ``parallel.param_shardings`` or ``rl.train_step.optimizer_shardings`` return: one sharding per
    Variable); None takes each leaf's own ``.sharding``.
  """
  def leaf(x, sharding):
    sharding = getattr(x, "sharding", None) if sharding is None else sharding
    if sharding is None:
      raise ValueError(f"restore target leaf of shape {np.shape(x)} has no sharding; pass shardings= "
                       "(for example parallel.param_shardings(params, mesh))")
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

  if shardings is None:
    return jax.tree.map(lambda x: leaf(x, None), tree)
  return jax.tree.map(lambda s, sub: jax.tree.map(lambda x: leaf(x, s), sub), shardings, tree)


def as_abstract(target, what: str):
  """Accepts concrete jax arrays or ShapeDtypeStructs with shardings; returns ShapeDtypeStructs."""
  def leaf(x):
    if isinstance(x, jax.ShapeDtypeStruct):
      if x.sharding is None:
        raise ValueError(f"{what}: a ShapeDtypeStruct of shape {x.shape} has no sharding; build the target "
                         "with checkpoint.abstract_target(tree, shardings)")
      return x
    if isinstance(x, jax.Array):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    raise TypeError(f"{what}: leaves must be jax.Array or jax.ShapeDtypeStruct, got {type(x).__name__}")
  return jax.tree.map(leaf, target)


def one_line(e: BaseException, limit: int = 300) -> str:
  """An exception as one short line: its type and the first line of its message."""
  text = str(e).strip().splitlines()[0] if str(e).strip() else ""
  text = text if len(text) <= limit else text[:limit] + "..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _target_shapes(target) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(target)[0]
  return {faults.leaf_name(path): tuple(int(d) for d in x.shape) for path, x in flat if hasattr(x, "shape")}


def check_same_arrays(saved: dict, target, name: str, step: int, directory: str) -> None:
  """CheckpointMismatch naming the first arrays whose name or shape differs between checkpoint and target."""
  want = _target_shapes(target)
  have = {k: tuple(d["shape"]) for k, d in saved.items()}
  if want == have:
    return
  lines = []
  only_ckpt = [k for k in have if k not in want]
  only_model = [k for k in want if k not in have]
  if only_ckpt:
    lines.append(f"only in the checkpoint: {only_ckpt[:3]}{' ...' if len(only_ckpt) > 3 else ''}")
  if only_model:
    lines.append(f"only in this run's {name}: {only_model[:3]}{' ...' if len(only_model) > 3 else ''}")
  differ = [k for k in want if k in have and want[k] != have[k]]
  for k in differ[:3]:
    lines.append(f"{k}: {list(have[k])} in the checkpoint, {list(want[k])} now")
  raise CheckpointMismatch(
      f"checkpoint step {step} in {directory} was written for another model or optimizer: its {name} differ "
      f"({'; '.join(lines)}). Resume with the config it was written with, or use a fresh workdir.")


def check_restored(saved: dict | None, tree, name: str, step: int) -> None:
  """CorruptCheckpoint when a restored array is not finite or its checksum is not the saved one."""
  got = faults.leaf_digests(tree)
  bad = [k for k, d in got.items() if not d["finite"]]
  if bad:
    raise CorruptCheckpoint(f"step {step}: restored {name} hold NaN or inf in {bad[:3]}")
  if saved is None:
    return  # written before checksums were stored
  wrong = [k for k, d in got.items() if k in saved and saved[k]["dtype"] == d["dtype"]
           and saved[k]["checksum"] != d["checksum"]]
  if wrong:
    raise CorruptCheckpoint(f"step {step}: {name} arrays {wrong[:3]} read back with other bytes than were "
                            "written (checksum differs): the files are damaged")
