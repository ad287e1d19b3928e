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

Modules: checkpointer.py (the Checkpointer), host_state.py (the host state's exact encoding), checks.py
(restore targets, the errors, the checks of names, shapes and checksums), orbax_io.py (orbax's handlers,
restores without its barriers, outcomes agreed over hosts).

Call close() (or wait()) before the process exits: a save still being written when the interpreter
shuts down is lost (the next Checkpointer on the directory removes its partial files).

Faults. save() refuses parameters or optimizer state holding NaN or inf (nothing is written, so
nothing older is deleted) and stores each array's name, shape, dtype and checksum in host_meta.
restore() checks the target against those names and shapes first (CheckpointMismatch: a short message
naming the differing arrays) and the restored arrays against the checksums (flipped bytes) and for NaN
(CorruptCheckpoint). restore_latest() walks back from the newest step to the newest one that restores,
says which it skipped and why, and moves the skipped ones to DIR/corrupt/ so that later saves go on.
"""
from jaxghpo.checkpoint.checkpointer import CORRUPT_DIR, Checkpointer
from jaxghpo.checkpoint.checks import CheckpointMismatch, CorruptCheckpoint, abstract_target
from jaxghpo.checkpoint.host_state import HOST_META_VERSION, decode_host_state, encode_host_state

__all__ = [
    "CORRUPT_DIR",
    "CheckpointMismatch",
    "Checkpointer",
    "CorruptCheckpoint",
    "HOST_META_VERSION",
    "abstract_target",
    "decode_host_state",
    "encode_host_state",
]
