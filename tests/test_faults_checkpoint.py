"""Damaged checkpoints and non-finite numbers: fall back to the newest good step, never save NaN."""
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxghpo import checkpoint, faults

DIM = 4096  # one params array of 16 KB of random numbers (they do not compress): the largest data file


def params_at(step):
  w = np.random.default_rng(step).standard_normal(DIM).astype(np.float32)
  return {"w": jnp.asarray(w), "b": jnp.arange(3, dtype=jnp.float32) + step}


def target():
  return checkpoint.abstract_target(params_at(0))


def save_steps(directory, steps=(1, 2, 3)):
  with checkpoint.Checkpointer(directory, max_to_keep=3, async_save=False) as ckpt:
    for s in steps:
      ckpt.save(s, params=params_at(s), host_state={"step": s})


def params_data_file(directory, step):
  """The largest data file of `step`'s params (holds the array values)."""
  files = [f for f in glob.glob(os.path.join(directory, str(step), "params", "**", "*"), recursive=True)
           if os.path.isfile(f) and "/d/" in f]
  return max(files, key=os.path.getsize)


def truncate(directory):
  path = params_data_file(directory, 3)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def delete(directory):
  os.remove(params_data_file(directory, 3))


def garbage_metadata(directory):
  for path in (os.path.join(directory, "3", "params", "_METADATA"), os.path.join(directory, "3", "host_meta", "metadata")):
    with open(path, "wb") as f:
      f.write(b"\xff\xfe garbage {{{")


def empty_metadata(directory):
  """host_meta holding valid JSON that is not the saved object (`{}`): damage, not another model."""
  with open(os.path.join(directory, "3", "host_meta", "metadata"), "w") as f:
    f.write("{}")


def flip_bytes(directory):
  path = params_data_file(directory, 3)
  data = bytearray(open(path, "rb").read())
  for i in range(len(data) // 2, len(data) // 2 + 64):
    data[i] ^= 0x5A
  open(path, "wb").write(bytes(data))


@pytest.mark.parametrize("damage", [truncate, delete, garbage_metadata, empty_metadata, flip_bytes], ids=lambda f: f.__name__)
def test_resume_falls_back_past_a_damaged_latest_step(tmp_path, damage, capsys):
  directory = str(tmp_path / "ckpt")
  save_steps(directory)
  damage(directory)
  with checkpoint.Checkpointer(directory, max_to_keep=3) as ckpt:
    step, params, _, host = ckpt.restore_latest(target())
    assert step == 2 and host == {"step": 2}
    np.testing.assert_array_equal(np.asarray(params["w"]), np.asarray(params_at(2)["w"]))
    assert "step 3" in capsys.readouterr().out
    # The good steps are all kept; the damaged one is set aside and the run saves on from step 2.
    assert ckpt.all_steps() == [1, 2]
    assert os.listdir(os.path.join(directory, checkpoint.CORRUPT_DIR))[0].startswith("3-")
    ckpt.save(3, params=params_at(3), host_state={"step": 3})
    ckpt.wait()
    assert ckpt.all_steps() == [1, 2, 3]
  with checkpoint.Checkpointer(directory) as again:
    assert again.restore_latest(target())[0] == 3


def test_no_step_restores_one_message_naming_the_directory(tmp_path):
  directory = str(tmp_path / "ckpt")
  save_steps(directory, steps=(1, 2))
  for step in (1, 2):
    os.remove(params_data_file(directory, step))
  with checkpoint.Checkpointer(directory) as ckpt:
    with pytest.raises(checkpoint.CorruptCheckpoint, match=rf"no checkpoint in {directory} restores \(step 2: .*"
                                                         "move the directory aside"):
      ckpt.restore_latest(target())
    assert ckpt.all_steps() == [1, 2]  # nothing moved or deleted when nothing restores


def test_restored_nan_is_refused(tmp_path):
  """A checkpoint holding NaN (written before saves were checked) does not restore; the earlier step does."""
  directory = str(tmp_path / "ckpt")
  save_steps(directory, steps=(1,))
  with checkpoint.Checkpointer(directory, async_save=False) as ckpt:
    # Write step 2 with NaN the way an unchecked writer would: skip the save-time check.
    orig = faults.leaf_digests
    faults.leaf_digests = lambda tree: {k: {**d, "finite": True} for k, d in orig(tree).items()}
    try:
      ckpt.save(2, params={"w": jnp.full((DIM,), jnp.nan), "b": jnp.zeros(3)}, host_state={"step": 2})
    finally:
      faults.leaf_digests = orig
  with checkpoint.Checkpointer(directory) as ckpt:
    with pytest.raises(checkpoint.CorruptCheckpoint, match=r"step 2: restored params hold NaN or inf in \['w'\]"):
      ckpt.restore(2, target())
    assert ckpt.restore_latest(target())[0] == 1


def test_non_finite_params_are_never_saved_and_nothing_is_deleted(tmp_path):
  directory = str(tmp_path / "ckpt")
  save_steps(directory, steps=(1, 2))
  with checkpoint.Checkpointer(directory, max_to_keep=2) as ckpt:
    bad = {"w": jnp.full((DIM,), 1.0).at[7].set(jnp.inf), "b": jnp.zeros(3)}
    with pytest.raises(faults.NonFiniteError, match=r"step 3: not saved: params hold NaN or inf in w"):
      ckpt.save(3, params=bad, host_state={"step": 3})
    assert ckpt.all_steps() == [1, 2]


def test_another_model_is_named_in_a_short_message(tmp_path):
  directory = str(tmp_path / "ckpt")
  save_steps(directory, steps=(1,))
  other = checkpoint.abstract_target({"w": jnp.zeros((DIM // 2,)), "b": jnp.zeros(3), "extra": jnp.zeros(2)})
  with checkpoint.Checkpointer(directory) as ckpt:
    with pytest.raises(checkpoint.CheckpointMismatch) as info:
      ckpt.restore_latest(other)
  message = str(info.value)
  assert "only in this run's params: ['extra']" in message and f"w: [{DIM}] in the checkpoint, [{DIM // 2}] now" in message
  assert len(message) < 600


def test_skip_guard_stops_after_n_skipped_updates_and_holds_saves():
  import ml_collections
  config = ml_collections.ConfigDict({"max_skipped_updates_in_a_row": 3, "rl": {"ppo_epochs": 1}})
  stopped = []
  guard = faults.SkipGuard(config, before_stop=lambda: stopped.append(True))
  guard.observe(1, {"skipped_updates": 1.0})
  assert not guard.may_save(1)
  guard.observe(2, {"skipped_updates": 0.0})  # an applied update ends the streak
  assert guard.may_save(2)
  guard.observe(3, {"skipped_updates": 1.0})
  guard.observe(4, {"skipped_updates": 1.0})
  with pytest.raises(RuntimeError, match=r"step 5: the last 3 updates \(since step 3\) were all skipped.*"
                                         r"max_skipped_updates_in_a_row=3"):
    guard.observe(5, {"skipped_updates": 1.0})
  assert stopped == [True]


def test_leaf_names_of_a_model_state():
  from flax import nnx
  model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
  state = nnx.state(model)
  state["kernel"].set_value(state["kernel"].get_value().at[0, 1].set(jnp.nan))
  assert faults.nonfinite_leaves(state) == ["kernel"]
