"""Checkpoints: params, optimizer state and host state of one step, saved together with orbax (async).

    ckpt = Checkpointer(workdir / "checkpoints", max_to_keep=3)
    ckpt.save(step, params=params, opt_state=opt_state,
              host_state={"scheduler": sched.state_dict(), "data": pipeline.get_state(), "rng": rng})
    ...
    step = ckpt.latest_step()                                      # None on a fresh workdir
    params, opt_state, host = ckpt.restore(step, abstract_target(params, param_sh),
                                           abstract_target(opt_state, opt_sh))
    ckpt.close()

One step directory holds three items: ``params`` and ``opt_state`` (jax arrays, any sharding, written
by every process for its own shards) and ``host`` (numpy arrays, written once) next to
``host_meta`` (JSON: the host state's structure, its Python scalars and strings, and the dtype and
shape of every array). Splitting host state this way makes it round-trip exactly: int64 ids stay
int64 without jax's x64 mode, numpy scalars keep their dtype, tuples stay tuples, NaN stays NaN,
empty arrays survive (orbax cannot store them), and a typed PRNG key comes back as a key.

Arrays are restored against an abstract target (a pytree of ``jax.ShapeDtypeStruct`` with
``sharding=``), so each process reads only its shards and they land in the target's placement.

Multi-host: every process must call save / restore / wait / close in the same order with the same
step (orbax synchronises them); host state must be the same on every process (process 0's copy is
the one written). Nothing here is done by process 0 alone. Whether a step restores is agreed over the
hosts: a file that only one host reads and finds damaged makes every host skip that step, so all hosts
resume from the same step (the newest one every host can restore).

Call close() (or wait()) before the process exits: a save still being written when the interpreter
shuts down is lost (the next Checkpointer on the directory removes its partial files).

Faults. save() refuses parameters or optimizer state holding NaN or inf (nothing is written, so
nothing older is deleted) and stores each array's name, shape, dtype and checksum in host_meta.
restore() checks the target against those names and shapes first (CheckpointMismatch: a short message
naming the differing arrays) and the restored arrays against the checksums (flipped bytes) and for NaN
(CorruptCheckpoint). restore_latest() walks back from the newest step to the newest one that restores,
says which it skipped and why, and moves the skipped ones to DIR/corrupt/ so that later saves go on.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxghpo import disk_full, faults, paths

HOST_META_VERSION = 1
CORRUPT_DIR = "corrupt"  # where restore_latest moves steps that do not restore


class CheckpointMismatch(ValueError):
  """The checkpoint holds other arrays (names or shapes) than the restore target: another model/config."""


class CorruptCheckpoint(RuntimeError):
  """A step's files cannot be read back as they were written (truncated, missing, garbled, non-finite)."""


class _NoSuchStep(FileNotFoundError):
  """The asked step is not in the directory (the caller's error, not damage)."""

# Item names inside a step directory.
_PARAMS, _OPT, _HOST_ARRAYS, _HOST_META = "params", "opt_state", "host", "host_meta"

# Tags of the JSON encoding of host state (a dict key starting with "__" marks an encoded node).
_ARRAY, _SCALAR, _TUPLE, _FLOAT, _KEY = "__ndarray__", "__npscalar__", "__tuple__", "__float__", "__prng_key__"
_TAGS = (_ARRAY, _SCALAR, _TUPLE, _FLOAT, _KEY)


# ------------------------------------------------------------------------------------ targets
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


def _as_abstract(target, what: str):
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


# ------------------------------------------------------------------------------- host state codec
def _is_prng_key(x) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def encode_host_state(state: Any) -> tuple[dict, dict[str, np.ndarray]]:
  """Splits host state into (JSON-able skeleton, {name: numpy array}); see decode_host_state.

  Accepted: dicts with string keys, lists, tuples, None, bool, int, float, str, numpy arrays and
  scalars, jax arrays (fetched to host as numpy; their dtype as jax holds it) and typed PRNG keys.
  Arrays are copied, so the caller may change its own arrays while an async save is still writing.
  """
  arrays: dict[str, np.ndarray] = {}

  def put(arr: np.ndarray) -> str | None:
    if arr.size == 0:
      return None  # orbax cannot store an empty array; dtype and shape in the skeleton suffice
    name = f"a{len(arrays)}"
    arrays[name] = np.array(arr, copy=True)
    return name

  def enc(x, path: str):
    if x is None or isinstance(x, (bool, str)):
      return x
    if isinstance(x, int) and not isinstance(x, bool):
      return x
    if isinstance(x, float):
      return x if math.isfinite(x) else {_FLOAT: repr(x)}
    if isinstance(x, dict):
      out = {}
      for key, value in x.items():
        if not isinstance(key, str):
          raise TypeError(f"host_state{path}: dict key {key!r} is {type(key).__name__}; keys must be str "
                          "(JSON); convert them with str() before saving")
        if key.startswith("__") and key in _TAGS:
          raise ValueError(f"host_state{path}: key {key!r} is reserved by the checkpoint encoding; rename it")
        out[key] = enc(value, f"{path}[{key!r}]")
      return out
    if isinstance(x, list):
      return [enc(v, f"{path}[{i}]") for i, v in enumerate(x)]
    if isinstance(x, tuple):
      return {_TUPLE: [enc(v, f"{path}[{i}]") for i, v in enumerate(x)]}
    if _is_prng_key(x):
      data = np.asarray(jax.random.key_data(x))
      return {_KEY: put(data), "impl": str(jax.random.key_impl(x)), "shape": list(x.shape),
              "dtype": str(data.dtype), "data_shape": list(data.shape)}
    if isinstance(x, np.str_):
      return str(x)
    if isinstance(x, np.generic):
      if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_) or np.iscomplexobj(x):
        raise TypeError(f"host_state{path}: numpy scalar of dtype {x.dtype} cannot be saved")
      value = x.item()
      if isinstance(value, float) and not math.isfinite(value):
        value = repr(value)
      return {_SCALAR: value, "dtype": x.dtype.str}
    if isinstance(x, (np.ndarray, jax.Array)):
      arr = np.asarray(x)
      if arr.dtype == object:
        raise TypeError(f"host_state{path}: object arrays cannot be saved; use a list or a typed array")
      return {_ARRAY: put(arr), "dtype": arr.dtype.str, "shape": list(arr.shape)}
    raise TypeError(f"host_state{path}: {type(x).__name__} cannot be saved; use dicts, lists, tuples, "
                    "Python scalars, strings and numpy arrays")

  return {"version": HOST_META_VERSION, "tree": enc(state, "")}, arrays


def decode_host_state(meta: dict, arrays: dict[str, Any]) -> Any:
  """Inverse of encode_host_state."""
  if int(meta.get("version", -1)) != HOST_META_VERSION:
    raise ValueError(f"checkpoint host state version {meta.get('version')} is not {HOST_META_VERSION}; "
                     "it was written by another jaxghpo version")

  def array(name, dtype, shape):
    if name is None:
      return np.zeros(shape, dtype)
    return np.asarray(arrays[name]).astype(dtype, copy=False).reshape(shape)

  def dec(x):
    if isinstance(x, list):
      return [dec(v) for v in x]
    if not isinstance(x, dict):
      return x
    if _FLOAT in x:
      return float(x[_FLOAT])
    if _TUPLE in x:
      return tuple(dec(v) for v in x[_TUPLE])
    if _SCALAR in x:
      value = x[_SCALAR]
      return np.dtype(x["dtype"]).type(float(value) if isinstance(value, str) else value)
    if _ARRAY in x:
      return array(x[_ARRAY], np.dtype(x["dtype"]), tuple(x["shape"]))
    if _KEY in x:
      data = array(x[_KEY], np.dtype(x["dtype"]), tuple(x["data_shape"]))
      return jax.random.wrap_key_data(data, impl=x["impl"])
    return {k: dec(v) for k, v in x.items()}

  return dec(meta["tree"])


# ------------------------------------------------------------------------------- orbax handlers
def _handler_registry(replica_parallel_min_bytes: int) -> ocp.handlers.DefaultCheckpointHandlerRegistry:
  """orbax handlers for our items: PyTree save/restore with a jax.Array handler of our own, plus JSON.

  orbax's default saves a replicated array "replica-parallel": each replica writes a slice, cut by
  an eager jax slice per (array, replica), each compiled on first use. For small arrays that costs
  more than it saves (seconds on the first save of a tiny model on 8 CPU devices); here only slices
  of at least ``replica_parallel_min_bytes`` are written that way, smaller arrays by one replica.
  """
  try:  # where orbax 0.12 keeps the per-array metadata store its default handler uses
    from orbax.checkpoint._src.metadata import array_metadata_store as _ams
    store = _ams.Store()
  except ImportError:  # a later layout: save without that optional metadata
    store = None
  th = ocp.type_handlers
  array_handler = th.ArrayHandler(array_metadata_store=store,
                                  min_slice_bytes_for_replica_parallel=replica_parallel_min_bytes)
  types = th.create_type_handler_registry(
      (int, th.ScalarHandler()), (float, th.ScalarHandler()), (bytes, th.ScalarHandler()),
      (np.number, th.ScalarHandler()), (np.ndarray, th.NumpyHandler()), (jax.Array, array_handler),
      (str, th.StringHandler()))
  pytree = ocp.PyTreeCheckpointHandler(type_handler_registry=types)
  registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
  registry.add(None, ocp.args.PyTreeSave, pytree)
  registry.add(None, ocp.args.PyTreeRestore, pytree)
  registry.add(None, ocp.args.JsonSave)
  registry.add(None, ocp.args.JsonRestore)
  return registry


def _one_line(e: BaseException, limit: int = 300) -> str:
  """An exception as one short line: its type and the first line of its message."""
  text = str(e).strip().splitlines()[0] if str(e).strip() else ""
  text = text if len(text) <= limit else text[:limit] + "..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _target_shapes(target) -> dict[str, tuple]:
  flat = jax.tree_util.tree_flatten_with_path(target)[0]
  return {faults.leaf_name(path): tuple(int(d) for d in x.shape) for path, x in flat if hasattr(x, "shape")}


def _check_same_arrays(saved: dict, target, name: str, step: int, directory: str) -> None:
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


def _check_restored(saved: dict | None, tree, name: str, step: int) -> None:
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


@contextlib.contextmanager
def _without_orbax_barriers():
  """orbax's barriers left out for the block (several processes; nothing is being saved).

  orbax ends a restore with a barrier of all hosts (a collective). A host whose read fails raises before
  it, and the next collectives of the hosts then pair wrongly: a crash or a hang. Without it, every host
  goes on to _agreed's allgather whatever its outcome, and that allgather is the barrier."""
  if jax.process_count() == 1:
    yield
    return
  from orbax.checkpoint._src.multihost import multihost as orbax_multihost
  real = orbax_multihost.sync_global_processes
  orbax_multihost.sync_global_processes = lambda *args, **kwargs: None
  try:
    yield
  finally:
    orbax_multihost.sync_global_processes = real


def _agreed(step: int, fn):
  """fn() on every host, its outcome agreed: when it raised on any host, every host raises (its own error,
  or CorruptCheckpoint / CheckpointMismatch naming the host that failed). One process: fn()."""
  if jax.process_count() == 1:
    return fn()
  from jaxghpo.parallel import hosts
  result, error = None, None
  try:
    result = fn()
  except Exception as e:  # pylint: disable=broad-except  (re-raised below, on every host)
    error = e
  outcomes = hosts.allgather_json(None if error is None else [type(error).__name__, _one_line(error)])
  if error is not None:
    raise error
  for process, outcome in enumerate(outcomes):
    if outcome is not None:
      kind = CheckpointMismatch if outcome[0] == CheckpointMismatch.__name__ else CorruptCheckpoint
      raise kind(f"step {step}: process {process} cannot restore it ({outcome[1]})")
  return result


def _restore_args(target):
  return ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target))


# ----------------------------------------------------------------------------------- checkpointer
class Checkpointer:
  """Saves and restores (params, opt_state, host_state) per step under ``directory``; keeps the last K.

  directory: where step directories live (created); a new Checkpointer on the same directory sees
    the steps saved before (resume).
  max_to_keep: the newest K steps are kept, older ones deleted after each save (None keeps all).
  async_save: save() returns once device arrays are copied to host memory; files are written in the
    background. The caller may then donate or overwrite the saved arrays.
  replica_parallel_min_bytes: a replicated array is written in parallel by its replicas only when
    each replica's slice has at least this many bytes (see _handler_registry).
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
                                          handler_registry=_handler_registry(replica_parallel_min_bytes))
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
    params_target = None if params_target is None else _as_abstract(params_target, "params_target")
    opt_state_target = None if opt_state_target is None else _as_abstract(opt_state_target, "opt_state_target")
    try:
      return self._restore(step, params_target, opt_state_target)
    except (CheckpointMismatch, CorruptCheckpoint, _NoSuchStep):
      raise
    except Exception as e:  # orbax / tensorstore / JSON errors of a damaged step (a missing file included)
      raise CorruptCheckpoint(f"step {step}: {_one_line(e)}") from e

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
    from jaxghpo.parallel import hosts
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
        raise _NoSuchStep(f"no checkpoint in {self.directory}")
    step = int(step)
    if step not in self._manager.all_steps():
      raise _NoSuchStep(f"no checkpoint for step {step} in {self.directory}; saved steps: "
                              f"{self.all_steps()}")
    # Every host reads and checks the same files; each phase's outcome is agreed over hosts (_agreed), so
    # a file that fails on one host only makes every host give the step up together.
    meta = _agreed(step, lambda: self._read_meta(step, params_target, opt_state_target))
    has = meta["has"]
    items = {}
    if params_target is not None:
      items[_PARAMS] = _restore_args(_as_abstract(params_target, "params_target"))
    if opt_state_target is not None:
      items[_OPT] = _restore_args(_as_abstract(opt_state_target, "opt_state_target"))
    if has.get(_HOST_ARRAYS, False):
      items[_HOST_ARRAYS] = ocp.args.PyTreeRestore()
    out = _agreed(step, lambda: self._orbax_restore(step, items)) if items else {}
    host_arrays = out[_HOST_ARRAYS] if _HOST_ARRAYS in items else {}
    host_state = decode_host_state(meta, host_arrays)
    params = out[_PARAMS] if _PARAMS in items else None
    opt_state = out[_OPT] if _OPT in items else None
    for name, tree in ((_PARAMS, params), (_OPT, opt_state)):
      if tree is not None:
        _check_restored(meta.get("digests", {}).get(name), tree, name, step)
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
        _check_same_arrays(meta["digests"][name], target, name, step, self.directory)
    return meta

  def _orbax_restore(self, step: int, items: dict) -> dict:
    """orbax's restore of `items` of `step`, without orbax's barriers (see _without_orbax_barriers): the
    caller agrees on the outcome over hosts (_agreed), which is the barrier."""
    with _without_orbax_barriers():
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
