"""The start-time memory check: the analytic estimate of a run (jaxghpo/memory_estimate.py: params +
optimizer + the train step's activations, or the sampler's KV cache, whichever is larger) against the
memory of the devices, before anything is compiled.

    check(config, mesh_shape, devices)   raises validation.StartupError naming the key to change

The device's memory is jax's `memory_stats()["bytes_limit"]` where the backend reports it (TPU, GPU);
on CPU, where every device of the process shares the host's RAM, the estimate times the process's
devices is compared with the RAM psutil reports available. The estimate was fitted to XLA:CPU's buffer
assignment within ~12% (tools/estimate_memory.py); the check refuses only a run whose estimate exceeds
the whole memory, so a run it passes may still need some headroom.
JAXGHPO_SKIP_MEMORY_CHECK=1 turns the check off (an estimate that is wrong for a new platform).
"""
from __future__ import annotations

import os

from jaxghpo.validation import StartupError

# Which keys to change when a term dominates: the term's name in MemoryEstimate's parts -> the mend.
_SEQUENCE = "rollout.max_prompt_len={P} or rollout.max_new_tokens={N} (T = {T} tokens per sequence)"
MENDS = {
    "attention": "lower " + _SEQUENCE + ", or set model.attention to a flash kernel ('splash' on TPU, 'cudnn' on "
                 "GPU): the xla attention keeps [heads, T, T] float32 scores per layer",
    "mlp": "lower " + _SEQUENCE + ", raise rl.micro_batches, or set model.remat='full'",
    "hidden": "lower " + _SEQUENCE + ", raise rl.micro_batches, or set model.remat='full'",
    "qkv": "lower " + _SEQUENCE + ", raise rl.micro_batches, or set model.remat='full'",
    "saved block inputs": "lower " + _SEQUENCE + " or raise rl.micro_batches",
    "saved matmul outputs": "lower " + _SEQUENCE + ", raise rl.micro_batches, or set model.remat='full'",
    "logits": "lower rl.logprob_chunk_tokens",
    "gathered weights": "change config.mesh.shape (more tensor parallelism)",
    "kv cache": "lower " + _SEQUENCE + " (the sampler's KV cache), or data.prompts_per_step x "
                "rollout.group_size",
    "prefill logits": "lower data.prompts_per_step",
    "prefill scores": "lower rollout.max_prompt_len={P} (the prefill's [heads, P, P] scores)",
    "prompt cache": "lower rollout.max_prompt_len={P} or data.prompts_per_step",
    "params": "choose a smaller model (model.path), model.param_dtype='bfloat16', or more devices (config.mesh.shape)",
    "optimizer": "choose a smaller model (model.path), model.param_dtype='bfloat16', or more devices "
                 "(config.mesh.shape)",
    "gradients": "choose a smaller model (model.path) or more devices (config.mesh.shape)",
}


def device_memory(devices) -> tuple[int | None, str]:
  """(bytes one device may use, where the number comes from); (None, why) when nothing reports it."""
  device = devices[0]
  try:
    stats = device.memory_stats()
  except Exception:  # noqa: BLE001 - some backends raise instead of returning None
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"{device.platform} memory_stats bytes_limit"
  try:
    import psutil
  except ImportError:
    return None, "psutil is not installed"
  local = max(1, sum(1 for d in devices if d.process_index == device.process_index))
  return int(psutil.virtual_memory().available) // local, (f"host RAM available / {local} local devices"
                                                           if local > 1 else "host RAM available")


def _fmt(n: float) -> str:
  for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
    if n >= scale:
      return f"{n / scale:.1f} {unit}"
  return f"{n / 1e3:.1f} kB"


def culprit(est) -> tuple[str, int, str]:
  """(the largest term of the larger program, its bytes, "train step" | "sampler")."""
  if est.train_total >= est.sampler_total:
    parts = {"params": est.params, "optimizer": est.optimizer, "gradients": est.gradients, **est.train_parts}
    where = "train step"
  else:
    parts = {"params": est.params, "optimizer": est.optimizer, "kv cache": est.kv_cache, **est.sampler_parts}
    where = f"{est.sampler_sizes[-1]} sampler"
  name = max(parts, key=parts.get)
  return name, int(parts[name]), where


def message(est, config, limit: int, source: str) -> str:
  name, size, where = culprit(est)
  P, N = int(config.rollout.max_prompt_len), int(config.rollout.max_new_tokens)
  if where.startswith("eval"):
    P = int(config.eval.get("max_prompt_len", 0) or P)
    N = int(config.eval.get("max_new_tokens", 0) or N)
  mend = MENDS.get(name, "lower the sizes of the batch or the sequence").format(P=P, N=N, T=P + N)
  if where.startswith("eval"):
    mend = mend.replace("rollout.max_prompt_len", "eval.max_prompt_len").replace(
        "rollout.max_new_tokens", "eval.max_new_tokens")
  return (f"start-time memory check: the {where} needs about {_fmt(est.total)} per device ({name} "
          f"{_fmt(size)}), more than the {_fmt(limit)} of the device ({source}); {mend} "
          "(estimate: tools/estimate_memory.py; JAXGHPO_SKIP_MEMORY_CHECK=1 skips this check)")


def check(config, mesh_shape, devices, model_cfg=None) -> None:
  """Raises StartupError when the estimate of `config` on `mesh_shape` exceeds a device's memory.

  model_cfg: the policy's models.ModelConfig (default: read from config.model.path's config.json, no
  weights). Nothing is checked when the backend and psutil report no memory, or for SFT runs."""
  if os.environ.get("JAXGHPO_SKIP_MEMORY_CHECK") or config.get("mode", "rl") != "rl":
    return
  limit, source = device_memory(devices)
  if limit is None:
    return
  from jaxghpo import memory_estimate, models
  if model_cfg is None:
    model_cfg = models.load_config(models.hf.resolve_model_path(str(config.model.path)))
  platform = "tpu" if devices and devices[0].platform == "tpu" else "cpu"  # whose compiler's constants
  est = memory_estimate.estimate(config, model_cfg, tuple(int(x) for x in mesh_shape), platform)
  if est.total > limit:
    raise StartupError(message(est, config, limit, source))
