"""The Checkpointer: saves and restores (params, opt_state, host_state) of one step with orbax (async).

A step directory holds ``params`` and ``opt_state`` (jax arrays, any sharding, written by every process
for its own shards), ``host`` (numpy arrays, written once) and ``host_meta`` (JSON: host_state.py's
skeleton, and each saved array's name, shape, dtype and checksum). The package docstring says how to use
it, what multi-host runs must do and how faults are met.
"""
from __future__ import annotations

import math
import os
import shutil
import time

import jax
import orbax.checkpoint as ocp

from jaxghpo import disk_full, faults, paths
from jaxghpo.checkpoint import checks, orbax_io
from jaxghpo.checkpoint.checks import CheckpointMismatch, CorruptCheckpoint, NoSuchStep
from jaxghpo.checkpoint.host_state import decode_host_state, encode_host_state
from jaxghpo.parallel import hosts

CORRUPT_DIR = "corrupt"  # where restore_latest moves steps that do not restore

# Item names inside a step directory.
_PARAMS, _OPT, _HOST_ARRAYS, _HOST_META = "params", "opt_state", "host", "host_meta"


class Checkpointer:
  """Saves and restores (params, opt_state, host_state) per step under ``directory``; keeps the last K.

  directory: where step directories live (created); a new Checkpointer on the same directory sees
    the steps saved before (resume).
  max_to_keep: the newest K steps are kept, older ones deleted after each save (None keeps all).
  async_save: save() returns once device arrays are copied to host memory; files are written in the
    background. The caller may then donate or overwrite the saved arrays.
  replica_parallel_min_bytes: a replicated array is written in parallel by its replicas only when
    each replica's slice has at least this many bytes (see orbax_io.handler_registry).
  Which steps to save is the caller's decision (every call to save() saves).
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3, async_save: bool = True,
               replica_parallel_min_bytes: int = 1 << 20):
    if max_to_keep is not None and max_to_keep < 1:
      raise ValueError(f"max_to_keep={max_to_keep}: keep at least one checkpoint (or None to keep all)")
    directory = os.fspath(directory)
    # A URI (gs://...) goes to orbax as it is (epath); a local path is made absolute.
    self.directory = directory if paths.is_remote(directory) else os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        enable_async_checkpointing=async_save,
        # A run killed while writing leaves a tmp directory; it is not a checkpoint, remove it.
        cleanup_tmp_directories=True,
        create=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          handler_registry=orbax_io.handler_registry(replica_parallel_min_bytes))
    self._pending: tuple[str, int] | None = None  # (step directory, bytes) of the save being written

  # --- queries
  def latest_step(self) -> int | None:
    """The newest saved step, or None (a new Checkpointer sees only steps whose writing completed)."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Committed steps, ascending."""
    return sorted(self._manager.all_steps())

  # --- save
  def save(self, step: int, *, params=None, opt_state=None, host_state: dict | None = None) -> bool:
    """Saves one step (asynchronously when async_save). Returns False when ``step`` is already saved.

    params, opt_state: pytrees of jax.Array (any sharding; nnx.State and optax states are fine).
    host_state: plain data (see encode_host_state): the scheduler's state_dict, the data pipeline's
      get_state(), the RNG key, anything else the run needs to continue exactly.
    """
    step = int(step)
    if step < 0:
      raise ValueError(f"checkpoint step must be >= 0, got {step}")
    self._wait()  # the previous save must commit before this one is compared
    latest = self._manager.latest_step()
    if latest is not None and step == latest:
      return False
    if latest is not None and step < latest:
      raise ValueError(f"cannot save step {step}: {self.directory} already holds the later step {latest}. "
                       "Resume from the latest step, or use a fresh checkpoint directory.")
    meta, arrays = encode_host_state({} if host_state is None else host_state)
    meta["has"] = {_PARAMS: params is not None, _OPT: opt_state is not None, _HOST_ARRAYS: bool(arrays)}
    meta["digests"] = {}
    for name, tree in ((_PARAMS, params), (_OPT, opt_state)):
      if tree is None:
        continue
      digests = faults.leaf_digests(tree)
      bad = [k for k, d in digests.items() if not d["finite"]]
      if bad:
        raise faults.NonFiniteError(
            f"step {step}: not saved: {name} hold NaN or inf in {', '.join(bad[:5])}"
            f"{' ...' if len(bad) > 5 else ''}; the checkpoints in {self.directory} are kept as they are", bad)
      meta["digests"][name] = digests
    items = {_HOST_META: ocp.args.JsonSave(meta)}
    if params is not None:
      items[_PARAMS] = ocp.args.PyTreeSave(params)
    if opt_state is not None:
      items[_OPT] = ocp.args.PyTreeSave(opt_state)
    if arrays:
      items[_HOST_ARRAYS] = ocp.args.PyTreeSave(arrays)
    nbytes = sum(int(a.nbytes) for a in arrays.values()) + sum(
        math.prod(d["shape"]) * jax.numpy.dtype(d["dtype"]).itemsize for digests in meta["digests"].values()
        for d in digests.values())
    self._pending = (paths.join(self.directory, str(step)), int(nbytes))
    with disk_full.writing(*self._pending):
      saved = self._manager.save(step, args=ocp.args.Composite(**items), force=True)
    if not saved:
      raise RuntimeError(f"orbax declined to save step {step} in {self.directory}")
    return True

  # --- restore
  def restore(self, step: int | None = None, params_target=None, opt_state_target=None):
    """Returns (params, opt_state, host_state) of ``step`` (default: the latest); see _restore.

    Raises CheckpointMismatch when the target's arrays differ from the saved ones, CorruptCheckpoint
    when the step's files do not read back as written (the cause in one line).
    """
    # A malformed target is the caller's error, not damage: raised as it is.
    params_target = None if params_target is None else checks.as_abstract(params_target, "params_target")
    opt_state_target = None if opt_state_target is None else checks.as_abstract(opt_state_target, "opt_state_target")
    try:
      return self._restore(step, params_target, opt_state_target)
    except (CheckpointMismatch, CorruptCheckpoint, NoSuchStep):
      raise
    except Exception as e:  # orbax / tensorstore / JSON errors of a damaged step (a missing file included)
      raise CorruptCheckpoint(f"step {step}: {checks.one_line(e)}") from e

  def restore_latest(self, params_target=None, opt_state_target=None):
    """(step, params, opt_state, host_state) of the newest step that restores, or None without steps.

    Steps that do not restore (CorruptCheckpoint) are skipped with a printed line saying why and moved
    to DIR/corrupt/; a CheckpointMismatch stops at once (every step would differ the same way). When
    no step restores: CorruptCheckpoint naming the directory.
    """
    self._wait()
    steps = sorted(self._manager.all_steps(), reverse=True)
    if not steps:
      return None
    skipped = []
    for step in steps:
      try:
        params, opt_state, host = self.restore(step, params_target, opt_state_target)
      except CorruptCheckpoint as e:
        print(f"checkpoint: step {step} in {self.directory} does not restore ({e}); trying an earlier step",
              flush=True)
        skipped.append((step, str(e)))
        continue
      if skipped:
        self._set_aside([s for s, _ in skipped])
        print(f"checkpoint: resuming from step {step}; skipped steps {[s for s, _ in skipped]} were moved to "
              f"{os.path.join(self.directory, CORRUPT_DIR)}", flush=True)
      return step, params, opt_state, host
    reasons = "; ".join(f"step {s}: {r}" for s, r in skipped[:3])
    raise CorruptCheckpoint(f"no checkpoint in {self.directory} restores ({reasons}); move the directory aside "
                            "to start afresh, or restore it from a copy")

  def _set_aside(self, steps: list[int]) -> None:
    """Moves step directories to DIR/corrupt/<step>-<time> (process 0; every process waits for it)."""
    if jax.process_index() == 0:
      os.makedirs(os.path.join(self.directory, CORRUPT_DIR), exist_ok=True)
      for step in steps:
        src = os.path.join(self.directory, str(step))
        if os.path.isdir(src):
          shutil.move(src, os.path.join(self.directory, CORRUPT_DIR, f"{step}-{int(time.time())}"))
    hosts.sync("jaxghpo_checkpoint_set_aside")
    self._manager.reload()

  def _restore(self, step: int | None = None, params_target=None, opt_state_target=None):
    """Returns (params, opt_state, host_state) of ``step`` (default: the latest).

    params_target / opt_state_target: the structure to restore into, with ``jax.ShapeDtypeStruct``
      leaves carrying the wanted shardings (see abstract_target) or concrete arrays whose sharding is
      taken. A target of None skips that item (returns None), e.g. to read only the host state.
    """
    self._wait()
    if step is None:
      step = self._manager.latest_step()
      if step is None:
        raise NoSuchStep(f"no checkpoint in {self.directory}")
    step = int(step)
    if step not in self._manager.all_steps():
      raise NoSuchStep(f"no checkpoint for step {step} in {self.directory}; saved steps: "
                              f"{self.all_steps()}")
    # Every host reads and checks the same files; each phase's outcome is agreed over hosts (orbax_io.agreed), so
    # a file that fails on one host only makes every host give the step up together.
    meta = orbax_io.agreed(step, lambda: self._read_meta(step, params_target, opt_state_target))
    has = meta["has"]
    items = {}
    if params_target is not None:
      items[_PARAMS] = orbax_io.restore_args(checks.as_abstract(params_target, "params_target"))
    if opt_state_target is not None:
      items[_OPT] = orbax_io.restore_args(checks.as_abstract(opt_state_target, "opt_state_target"))
    if has.get(_HOST_ARRAYS, False):
      items[_HOST_ARRAYS] = ocp.args.PyTreeRestore()
    out = orbax_io.agreed(step, lambda: self._orbax_restore(step, items)) if items else {}
    host_arrays = out[_HOST_ARRAYS] if _HOST_ARRAYS in items else {}
    host_state = decode_host_state(meta, host_arrays)
    params = out[_PARAMS] if _PARAMS in items else None
    opt_state = out[_OPT] if _OPT in items else None
    for name, tree in ((_PARAMS, params), (_OPT, opt_state)):
      if tree is not None:
        checks.check_restored(meta.get("digests", {}).get(name), tree, name, step)
    return params, opt_state, host_state

  def _read_meta(self, step: int, params_target, opt_state_target) -> dict:
    """The step's host_meta, checked: the saved object's keys (CorruptCheckpoint) and the target's arrays
    against the saved names and shapes (CheckpointMismatch)."""
    meta = self._orbax_restore(step, {_HOST_META: ocp.args.JsonRestore()})[_HOST_META]
    if not isinstance(meta, dict):
      raise CorruptCheckpoint(f"step {step}: host_meta is a {type(meta).__name__}, not the saved object")
    missing = [k for k in ("version", "tree", "has") if k not in meta]
    if missing or not isinstance(meta["has"], dict):
      raise CorruptCheckpoint(f"step {step}: host_meta lacks {missing or ['has']} (the saved object is "
                              "damaged or was replaced)")
    has = meta["has"]
    for name, target in ((_PARAMS, params_target), (_OPT, opt_state_target)):
      if target is not None and not has.get(name, False):
        raise CheckpointMismatch(f"checkpoint step {step} in {self.directory} holds no {name}; pass "
                                 f"{name}_target=None")
      if target is not None and name in meta.get("digests", {}):
        checks.check_same_arrays(meta["digests"][name], target, name, step, self.directory)
    return meta

  def _orbax_restore(self, step: int, items: dict) -> dict:
    """orbax's restore of `items` of `step`, without orbax's barriers (see orbax_io.without_orbax_barriers): the
    caller agrees on the outcome over hosts (orbax_io.agreed), which is the barrier."""
    with orbax_io.without_orbax_barriers():
      return self._manager.restore(step, args=ocp.args.Composite(**items))

  # --- lifetime
  def wait(self) -> None:
    """Blocks until every async save has been written and committed."""
    self._wait()

  def _wait(self) -> None:
    """orbax's wait for pending saves; a full disk met by a save in the background is DiskFull naming its step."""
    path, nbytes = self._pending or (self.directory, None)
    with disk_full.writing(path, nbytes):
      self._manager.wait_until_finished()
    self._pending = None

  def close(self) -> None:
    """Waits for pending saves and releases orbax's threads (also when the wait raises: a full disk)."""
    try:
      self._wait()
    finally:
      self._manager.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
