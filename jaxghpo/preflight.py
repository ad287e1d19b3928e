"""`python -m jaxghpo.main --config=... --workdir=... --dry_run_slice=v5p-64`: the check before reserving a pod.

Builds the run as it would be built on the slice (the config checked against the slice's device and host
counts, derived keys, the model's shape from the config: no weights, no data, no workdir files), compiles
every program with XLA:TPU for the slice's devices (jaxghpo/aot), prints the report, and returns the
exit status: 0 when every program fits in 90% of a chip's HBM, 1 naming those that do not. Nothing is
trained and nothing is written.
"""
from __future__ import annotations

import os


def run(config, config_path: str, slice_name: str) -> int:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host compiles; the slice's devices come from libtpu
  from jaxghpo import aot, experiment
  slice_ = aot.slices.parse(slice_name)
  experiment.validate(config, slice_.num_chips, slice_.num_hosts)  # derived keys included, as a run checks them
  model_cfg = aot.shapes.resolve_model_config(config, None, aot.shapes.load_config_module(config_path))
  reports, summary, slice_ = aot.compile_for_slice(config, slice_name, model_cfg)
  print(aot.report.format_text(reports, summary, slice_), flush=True)
  print(aot.report.json_line(summary), flush=True)
  over = aot.report.fits(reports, slice_.chip)
  if over:
    print(f"pre-flight for {slice_.name}: {', '.join(over)} would not fit; raise config.rl.micro_batches (fewer sequences per "
          "device at once), lower config.rollout.max_new_tokens / max_prompt_len or "
          "data.prompts_per_step, or choose a larger slice", flush=True)
    return 1
  print(f"pre-flight for {slice_.name}: every program compiles and fits; nothing was trained or written", flush=True)
  return 0
