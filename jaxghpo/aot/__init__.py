"""Ahead-of-time compilation of a run's programs for a named TPU slice, on any host (libtpu: `.[tpu]`).

    reports, summary = aot.compile_for_slice(config, "v5p-64", model_cfg)

slices.py: Cloud TPU slice names -> chips, topology, devices; programs.py: every program of a run
lowered from shapes; report.py: memory, cost, roofline, predicted step time and MFU. Used by
tools/compile_tpu.py, tools/estimate_memory.py and `python -m jaxghpo.main --dry_run_slice=...`.
"""
from __future__ import annotations


from jaxghpo.aot import programs, report, shapes, slices


def mesh_for_slice(config, slice_):
  """The run's mesh (config.mesh.shape, one -1 filled) over the slice's devices."""
  from jaxghpo import parallel
  devices = slices.devices(slice_)
  shape = parallel.validate_mesh_shape(tuple(config.mesh.shape), len(devices))
  return parallel.make_mesh(shape, devices=devices)


def compile_for_slice(config, slice_name: str, model_cfg, only=None, log=print):
  """Compiles (never runs) every program of the run for the slice: ({name: ProgramReport}, summary dict)."""
  slice_ = slices.parse(slice_name)
  shapes.check_positions(config, model_cfg)
  mesh = mesh_for_slice(config, slice_)
  d, f, _ = (mesh.shape[a] for a in ("data", "fsdp", "tensor"))
  rows = int(config.data.prompts_per_step) * int(config.rollout.group_size)
  micro = int(config.rl.micro_batches)
  per_device = rows // (d * f) // micro
  tokens = int(config.rollout.max_prompt_len) + int(config.rollout.max_new_tokens)
  log(f"compiling for {slice_.name}: mesh (data, fsdp, tensor) = ({d}, {f}, {mesh.shape['tensor']}), "
      f"{per_device} sequences x {tokens} tokens per device per micro-batch")
  reports = {}
  for name, lowered in programs.lower_all(config, model_cfg, mesh, only=only).items():
    reports[name] = report.analyse(name, lowered, report.loop_repeats(name, config))
    log(f"  {name}: {reports[name].memory.total / report.GB:.2f} GB per device, compiled in "
        f"{reports[name].compile_s:.0f} s")
  summary = report.summary(reports, config, shapes.run_model_config(config, model_cfg), slice_, tokens, per_device)
  from jaxghpo import memory_estimate  # the analytic estimate with XLA:TPU's constants, beside what it compiled
  est = memory_estimate.estimate(config, model_cfg, (d, f, mesh.shape["tensor"]), platform="tpu")
  # The sampler program holds the params but not the optimizer state, which the run keeps resident beside it.
  summary["estimated_bytes_per_device"] = {"train_step": est.train_total,
                                           "train_sampler": est.sampler_total - est.optimizer}
  return reports, summary, slice_


__all__ = ["compile_for_slice", "mesh_for_slice", "programs", "report", "shapes", "slices"]
