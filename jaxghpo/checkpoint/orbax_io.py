"""orbax underneath the Checkpointer: the handlers of a step's items, restores without orbax's barriers, and
each restore's outcome agreed over the hosts (so all hosts give up a step together)."""
from __future__ import annotations

import contextlib

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxghpo.checkpoint.checks import CheckpointMismatch, CorruptCheckpoint, one_line
from jaxghpo.parallel import hosts


def handler_registry(replica_parallel_min_bytes: int) -> ocp.handlers.DefaultCheckpointHandlerRegistry:
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


@contextlib.contextmanager
def without_orbax_barriers():
  """orbax's barriers left out for the block (several processes; nothing is being saved).

  orbax ends a restore with a barrier of all hosts (a collective). A host whose read fails raises before
  it, and the next collectives of the hosts then pair wrongly: a crash or a hang. Without it, every host
  goes on to agreed's allgather whatever its outcome, and that allgather is the barrier."""
  if hosts.process_count() == 1:
    yield
    return
  from orbax.checkpoint._src.multihost import multihost as orbax_multihost
  real = orbax_multihost.sync_global_processes
  orbax_multihost.sync_global_processes = lambda *args, **kwargs: None
  try:
    yield
  finally:
    orbax_multihost.sync_global_processes = real


def agreed(step: int, fn):
  """fn() on every host, its outcome agreed: when it raised on any host, every host raises (its own error,
  or CorruptCheckpoint / CheckpointMismatch naming the host that failed). One process: fn()."""
  if hosts.process_count() == 1:
    return fn()
  result, error = None, None
  try:
    result = fn()
  except Exception as e:  # pylint: disable=broad-except  (re-raised below, on every host)
    error = e
  outcomes = hosts.allgather_json(None if error is None else [type(error).__name__, one_line(error)])
  if error is not None:
    raise error
  for process, outcome in enumerate(outcomes):
    if outcome is not None:
      kind = CheckpointMismatch if outcome[0] == CheckpointMismatch.__name__ else CorruptCheckpoint
      raise kind(f"step {step}: process {process} cannot restore it ({outcome[1]})")
  return result


def restore_args(target):
  return ocp.args.PyTreeRestore(item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target))
