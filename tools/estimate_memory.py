"""Per-device memory of a run: parameters, optimizer state, gradients, train-step activations, KV cache.

    python tools/estimate_memory.py --config=configs/qwen25_math_7b_ghpo.py [--mesh=1,8,4]
        [--model_config=PATH/config.json | HF_DIR | builtin:NAME] [--num_devices=N] [--config.a.b=value ...]
        [--compile]

--compile also compiles (never runs) the trainer's sampler and train step for the config on fake CPU
devices of the mesh's size (abstract params and optimizer state with their shardings: no weights are
allocated), prints XLA's per-device memory (compiled.memory_analysis(): arguments + outputs not aliased +
temporaries) next to the estimate, and ends with one JSON line for the train step:
{"compiled_bytes_per_device", "hbm_bytes_per_device", "sequences_per_device_per_microbatch",
"tokens_per_sequence"}. It sets the device count and XLA:CPU's sequential scheduler (CPU_COMPILE_FLAGS)
before jax's backend starts. Splash attention compiles in Pallas interpret mode. The 7B config takes
3 to 18 minutes on 2 cores, with the load.

The model's shape comes from --model_config, else from the config file's module-level MODEL_SHAPE (the
real-model configs carry one, so no weights are needed), else from config.model.path's config.json.

What is counted, and how, is in jaxghpo/memory_estimate.py (the analytic estimate, shared with the start-time
memory check of jaxghpo/memory_check.py); this tool prints it and compares it with XLA.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

from jaxghpo import aot, models, parallel  # noqa: E402
from jaxghpo.aot.report import CompiledMemory  # noqa: E402,F401  (tests and tools read it from here)
from jaxghpo.aot.shapes import load_config_module, resolve_model_config  # noqa: E402,F401

# The estimate lives in the package (the start-time memory check uses it); re-exported for the tool's users.
from jaxghpo.memory_estimate import (GB, K_HIDDEN, K_LOGITS, K_MLP, K_PREFILL_SCORES, K_QKV, K_SCORES,  # noqa: E402,F401
                                     MemoryEstimate, abstract_mesh, abstract_params, estimate,
                                     kv_cache_bytes_per_device, layer_param_count, optimizer_bytes_per_device,
                                     param_bytes_per_device, resolve_mesh_shape, run_model_config,
                                     sampler_activation_parts, train_activation_parts)


def format_report(est: MemoryEstimate, config, model_cfg: models.ModelConfig, hbm_bytes: float | None = None) -> str:
  """The table the CLI prints (GB = 1e9 bytes; MB = 1e6 when the whole run needs less than a GB)."""
  d, f, t = est.mesh_shape
  P, G = int(config.data.prompts_per_step), int(config.rollout.group_size)
  M = int(config.rl.micro_batches)
  unit, scale = ("GB", GB) if est.total >= GB else ("MB", 1e6)
  row = lambda name, value: f"{name:<56}{value / scale:8.2f} {unit}"
  n = est.num_params
  size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"
  rows = "row" if est.train_rows_per_device == 1 else "rows"
  prompts, samples, slots_p, slots_n, which = est.sampler_sizes
  lines = [
      f"mesh (data, fsdp, tensor) = ({d}, {f}, {t}) on {d * f * t} devices; model {model_cfg.model_type} "
      f"{size} params; compute {config.model.dtype}, params {config.model.param_dtype}",
      row(f"params ({config.model.param_dtype}, sharded)", est.params),
      row(f"optimizer (AdamW mu + nu, {config.model.param_dtype})", est.optimizer),
      f"-- train step ({P * G} rows / {d * f} batch shards / {M} micro-batches = {est.train_rows_per_device} "
      f"{rows} x {est.seq_len} tokens per device)",
      row("gradients" + (" (+ accumulator)" if M > 1 else ""), est.gradients),
      row("activations", est.train_activations),
      *[row(f"  {k}", v) for k, v in est.train_parts.items()],
      row("train step total", est.train_total),
      f"-- {which} sampler ({prompts} prompts x {samples} samples, {slots_p} + {slots_n} slots)",
      row(f"KV cache ({config.model.dtype})", est.kv_cache),
      row("sampler activations", est.sampler_activations),
      *[row(f"  {k}", v) for k, v in est.sampler_parts.items()],
      row("sampler total", est.sampler_total),
  ]
  peak = row("peak (max of the two)", est.total)
  if hbm_bytes:
    peak += f" of {hbm_bytes / scale:.0f} {unit} per device ({100 * est.total / hbm_bytes:.0f}%)"
  lines.append(peak)
  return "\n".join(lines)


# ------------------------------------------------------------------------------------------ compiled
# XLA:CPU's default scheduler orders for concurrency; the sequential memory-minimising schedule is the one
# comparable to a TPU's (8-layer model, full remat, before the blocks' backward work was tied to its turn:
# 151 MB of temporaries with the default, 26 MB without it; a whole 8-layer step after: 141.1 / 136.5 MB).
CPU_COMPILE_FLAGS = ("--xla_cpu_enable_concurrency_optimized_scheduler=false",)


def set_cpu_devices(count: int) -> None:
  """Fake CPU devices for compiling at a mesh's size; call before jax's backend starts (first device use)."""
  flags_ = [f for f in os.environ.get("XLA_FLAGS", "").split()
            if not f.startswith("--xla_force_host_platform_device_count")
            and f.split("=")[0] not in {x.split("=")[0] for x in CPU_COMPILE_FLAGS}]
  os.environ["XLA_FLAGS"] = " ".join([*flags_, f"--xla_force_host_platform_device_count={count}",
                                      *CPU_COMPILE_FLAGS])
  os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _compile(config, model_cfg: models.ModelConfig, mesh_shape, name: str) -> CompiledMemory:
  """Compiles (never runs) one of the run's programs (jaxghpo/aot/programs.py, the code compile_tpu.py uses) on
  this process's devices (fake CPU devices of the mesh's size); returns XLA's per-device memory."""
  mesh = parallel.make_mesh(mesh_shape, devices=jax.devices()[:math.prod(mesh_shape)])
  lowered = aot.programs.lower_all(config, model_cfg, mesh, only={name})[name]
  return CompiledMemory.of(lowered.compile())


def compile_train_step(config, model_cfg: models.ModelConfig, mesh_shape) -> CompiledMemory:
  """The trainer's train step for `config`: abstract params and optimizer state, the full batch of P*G rows."""
  return _compile(config, model_cfg, mesh_shape, "train_step")


def compile_sampler(config, model_cfg: models.ModelConfig, mesh_shape) -> CompiledMemory:
  """The training sampler (P prompts x G samples, the config's prompt and new-token slots), from shapes."""
  return _compile(config, model_cfg, mesh_shape, "train_sampler")


def format_compiled(name: str, measured: CompiledMemory, estimated: int, hbm_bytes: float | None) -> str:
  unit, scale = ("GB", GB) if max(measured.total, estimated) >= GB else ("MB", 1e6)
  line = (f"compiled {name}: {measured.total / scale:.2f} {unit} per device (arguments "
          f"{measured.arguments / scale:.2f}, outputs {measured.outputs / scale:.2f}, aliased "
          f"{measured.aliased / scale:.2f}, temporaries {measured.temporaries / scale:.2f}); estimated "
          f"{estimated / scale:.2f} {unit}")
  if hbm_bytes:
    line += f"; {100 * measured.total / hbm_bytes:.0f}% of {hbm_bytes / GB:.0f} GB"
  return line


def main(argv) -> None:
  from absl import flags
  from ml_collections import config_flags
  del argv
  config = _CONFIG.value
  module = load_config_module(config_flags.get_config_filename(flags.FLAGS["config"]))
  mesh = [int(x) for x in _MESH.value.split(",")] if _MESH.value else None
  given = tuple(int(x) for x in (mesh if mesh is not None else config.mesh.shape))
  if _COMPILE.value:  # before the backend starts: as many fake CPU devices as the mesh has
    if -1 in given and not _NUM_DEVICES.value:
      raise SystemExit(f"--compile: mesh {given} has a -1 entry; pass --num_devices or --mesh=d,f,t")
    set_cpu_devices(math.prod(resolve_mesh_shape(config, mesh, _NUM_DEVICES.value)))
  # A -1 in the mesh shape takes the devices this process sees unless --num_devices says otherwise.
  mesh_shape = resolve_mesh_shape(config, mesh, _NUM_DEVICES.value or (jax.device_count() if -1 in given else None))
  model_cfg = resolve_model_config(config, _MODEL_CONFIG.value, module)
  est = estimate(config, model_cfg, mesh_shape, _PLATFORM.value)
  hbm = getattr(module, "HBM_BYTES_PER_CHIP", None)
  print(format_report(est, config, model_cfg, hbm), flush=True)
  if not _COMPILE.value:
    return
  if len(jax.devices()) < math.prod(mesh_shape):
    raise SystemExit(f"--compile: {len(jax.devices())} devices for mesh {mesh_shape}; the backend started before "
                     "the tool could ask for fake devices")
  t0 = time.time()
  sampler = compile_sampler(config, model_cfg, mesh_shape)
  print(format_compiled("sampler", sampler, est.sampler_total, hbm) + f" [{time.time() - t0:.0f} s]", flush=True)
  t0 = time.time()
  train = compile_train_step(config, model_cfg, mesh_shape)
  print(format_compiled("train step", train, est.train_total, hbm) + f" [{time.time() - t0:.0f} s]", flush=True)
  print(json.dumps({"compiled_bytes_per_device": train.total, "hbm_bytes_per_device": int(hbm) if hbm else None,
                    "sequences_per_device_per_microbatch": est.train_rows_per_device,
                    "tokens_per_sequence": est.seq_len}))


if __name__ == "__main__":
  from absl import app, flags
  from ml_collections import config_flags
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (get_config()).",
                                            lock_config=True)
  _MESH = flags.DEFINE_string("mesh", None, "data,fsdp,tensor (default: config.mesh.shape)")
  _MODEL_CONFIG = flags.DEFINE_string("model_config", None, "config.json, HF dir or builtin:NAME (default: the "
                                      "config file's MODEL_SHAPE, else config.model.path)")
  _NUM_DEVICES = flags.DEFINE_integer("num_devices", None, "devices, to size a -1 entry of the mesh shape "
                                      "(default: the devices this process sees)")
  _PLATFORM = flags.DEFINE_enum("platform", "cpu", ["cpu", "tpu"], "whose compiler's constants the estimate uses "
                                "(tpu: fitted to XLA:TPU, tools/compile_tpu.py; cpu: to XLA:CPU, what --compile checks)")
  _COMPILE = flags.DEFINE_bool("compile", False, "also compile (never run) the sampler and the train step on fake "
                               "CPU devices of the mesh's size and print XLA's memory per device; the last line is "
                               "JSON: compiled_bytes_per_device, hbm_bytes_per_device, "
                               "sequences_per_device_per_microbatch, tokens_per_sequence (of the train step)")
  flags.mark_flags_as_required(["config"])
  app.run(main)
