"""Compile (never run) every program of a run for a named TPU slice with XLA:TPU, on a CPU host.

    pip install -e ".[tpu]"          # libtpu: XLA:TPU and Mosaic, no TPU needed
    python tools/compile_tpu.py --config=configs/qwen25_math_7b_ghpo.py --slice=v5p-64 [--config.a.b=value ...]
        [--model_config=PATH/config.json | HF_DIR | builtin:NAME] [--only=train_step,train_sampler]
        [--num_layers=N] [--dump_dir=DIR]

Prints, per program (the training and evaluation samplers whole and as prefill + one decode step, the
reference logprobs when KL is on, the train step): XLA's memory per device against the chip's HBM,
flops and bytes accessed per device, the roofline time and XLA's optimal_seconds, the model FLOPs over
XLA's flops; then the predicted seconds of one GHPO step and the MFU it implies (jaxghpo/aot/report.py
says what is counted). These are compile-time predictions, not measurements. The last line is JSON
(docs/DESIGN.md): {"slice", "programs": {name: {"bytes_per_device", "flops_per_device",
"bytes_accessed_per_device", "roofline_s", "xla_optimal_s"}}, "hbm_bytes_per_device",
"sequences_per_device_per_microbatch", "tokens_per_sequence", "predicted_step_s", "predicted_mfu", ...}.
Exit status 1 when a program needs more than 90% of HBM. Slices: jaxghpo/aot/slices.py.

--num_layers compiles the model cut to N layers (the rest of its shape kept): two depths give the memory
per layer and the part that does not grow with depth, at a fraction of the compile time. --dump_dir has
XLA:TPU write each program's final HLO and buffer assignment there (`*memory-usage-report.txt`: the
allocations by size with the shapes each holds; `*buffer-assignment.txt`: every value in them).
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host compiles; the TPU devices come from libtpu's topology

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def main(argv) -> None:
  del argv
  if _DUMP_DIR.value:  # before the compile-only client starts: XLA reads XLA_FLAGS once
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" --xla_dump_to={_DUMP_DIR.value}"
                               " --xla_dump_hlo_pass_re=^$")
  from absl import flags
  from ml_collections import config_flags
  from jaxghpo import aot
  config = _CONFIG.value
  module = aot.shapes.load_config_module(config_flags.get_config_filename(flags.FLAGS["config"]))
  model_cfg = aot.shapes.resolve_model_config(config, _MODEL_CONFIG.value, module)
  if _NUM_LAYERS.value:
    model_cfg = model_cfg.replace(num_layers=_NUM_LAYERS.value)
  only = set(_ONLY.value.split(",")) if _ONLY.value else None
  reports, summary, slice_ = aot.compile_for_slice(config, _SLICE.value, model_cfg, only=only)
  print(aot.report.format_text(reports, summary, slice_), flush=True)
  print(aot.report.json_line(summary), flush=True)
  if aot.report.fits(reports, slice_.chip):
    raise SystemExit(1)


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (get_config()).",
                                            lock_config=True)
  _SLICE = flags.DEFINE_string("slice", None, "Cloud TPU slice name: v5p-64, v5e-16, v6e-64, v4-32, ...")
  _MODEL_CONFIG = flags.DEFINE_string("model_config", None, "config.json, HF dir or builtin:NAME (default: the "
                                      "config file's MODEL_SHAPE, else config.model.path)")
  _ONLY = flags.DEFINE_string("only", None, "comma-separated program names (default: every program of the run)")
  _NUM_LAYERS = flags.DEFINE_integer("num_layers", None, "compile the model cut to this many layers (analysis)")
  _DUMP_DIR = flags.DEFINE_string("dump_dir", None, "write XLA:TPU's HLO and buffer assignment of each program here")
  flags.mark_flags_as_required(["config", "slice"])
  app.run(main)
