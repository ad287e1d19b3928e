"""Exports the policy of any checkpoint of a run as a Hugging Face model (safetensors + config + tokenizer).

    python tools/export_checkpoint.py --workdir=DIR [--step=N] --out=OUT
        [--config=configs/X.py [--config.a.b=value ...]] [--model_path=HF_DIR] [--dtype=bfloat16]

Reads DIR/config.json (written by the trainer at the start of a run) unless --config is given; the
model's shape and tokenizer come from config.model.path (or --model_path, e.g. when the run read its
model from a path this machine does not have). Restores only the parameters of step N (default: the
latest) from DIR/checkpoints, read-only (a run still writing there is not disturbed), and writes
OUT/config.json, OUT/model*.safetensors and the tokenizer, loadable by
transformers.AutoModelForCausalLM.from_pretrained(OUT) and vLLM.

The parameters are restored onto a mesh over this process's devices (fsdp over all of them), so a 7B
checkpoint needs its float32 parameters (~30 GB) in host or device memory, not the optimizer state.
"""
from __future__ import annotations

import json
import os
import sys

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from jaxghpo import experiment, models, parallel, paths  # noqa: E402
from jaxghpo import checkpoint as ckpt_lib  # noqa: E402
from jaxghpo.data import tokenizer as tok_lib  # noqa: E402


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  path = paths.join(workdir, "config.json")
  if not paths.exists(path):
    raise FileNotFoundError(f"{path} not found: the trainer writes it when a run starts; pass --config=configs/X.py "
                            "(with the run's overrides) instead")
  return ml_collections.ConfigDict(json.loads(paths.read_text(path)))


def _read_only_manager(directory: str) -> ocp.CheckpointManager:
  """An orbax manager over the trainer's checkpoints that never writes, deletes or cleans up."""
  options = ocp.CheckpointManagerOptions(read_only=True, create=False, cleanup_tmp_directories=False,
                                         enable_async_checkpointing=False)
  return ocp.CheckpointManager(directory, options=options)


def restore_params(directory: str, step: int | None, params_target):
  """(step, params) restored from `directory` into `params_target` (ShapeDtypeStructs with shardings)."""
  if not paths.isdir(directory):
    raise FileNotFoundError(f"{directory} does not exist: no checkpoints were saved for this run "
                            "(config.checkpoint_every_steps; SFT runs write DIR/export only)")
  manager = _read_only_manager(directory)
  try:
    steps = sorted(manager.all_steps())
    if not steps:
      raise FileNotFoundError(f"no complete checkpoint in {directory}")
    if step is None:
      step = steps[-1]
    if step not in steps:
      raise FileNotFoundError(f"no checkpoint for step {step} in {directory}; saved steps: {steps}")
    args = ocp.args.Composite(params=ocp.args.PyTreeRestore(
        item=params_target, restore_args=ocp.checkpoint_utils.construct_restore_args(params_target)))
    return step, manager.restore(step, args=args)["params"]
  finally:
    manager.close()


def export(workdir: str, out: str, *, step: int | None = None, config=None, model_path: str | None = None,
           dtype: str | None = None) -> int:
  """Writes the policy of checkpoint `step` (None: the latest) of the run in `workdir` to `out`; returns the step."""
  config = config if config is not None else read_run_config(workdir)
  path = experiment.resolve_model_path(model_path or str(config.model.path))
  model_cfg = models.load_config(path, dtype=config.model.dtype, param_dtype=config.model.param_dtype)
  mesh = parallel.make_mesh((1, -1, 1), devices=jax.local_devices())
  graphdef, state = nnx.split(models.abstract_model(model_cfg))
  target = ckpt_lib.abstract_target(state, parallel.param_shardings(state, mesh))
  step, params = restore_params(paths.join(workdir, "checkpoints"), step, target)
  tokenizer = tok_lib.load(str(config.model.get("tokenizer", "") or "") or path)
  models.save_pretrained(nnx.merge(graphdef, params), model_cfg, out, dtype=dtype, tokenizer=tokenizer)
  return step


def main(argv) -> None:
  from absl import flags
  del argv
  config = _CONFIG.value if flags.FLAGS["config"].present else None
  step = export(_WORKDIR.value, _OUT.value, step=_STEP.value, config=config, model_path=_MODEL_PATH.value,
                dtype=_DTYPE.value)
  print(f"exported step {step} of {_WORKDIR.value} to {_OUT.value}")


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  _WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory (DIR/checkpoints, DIR/config.json).")
  _OUT = flags.DEFINE_string("out", None, "Output directory of the Hugging Face model.")
  _STEP = flags.DEFINE_integer("step", None, "Checkpoint step (default: the latest).")
  _CONFIG = config_flags.DEFINE_config_file("config", None, "The run's config file (default: DIR/config.json).")
  _MODEL_PATH = flags.DEFINE_string("model_path", None, "Override config.model.path (shape and tokenizer).")
  _DTYPE = flags.DEFINE_string("dtype", None, "Storage dtype of the files (default: the params' dtype).")
  flags.mark_flags_as_required(["workdir", "out"])
  app.run(main)
