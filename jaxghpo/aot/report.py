"""What the compiler says about each program, and what it predicts for one GHPO step on a slice.

Everything here is a compile-time prediction, not a measurement: memory_analysis() is XLA's buffer
assignment of the compiled program (per device), cost_analysis() its count of flops and bytes accessed
(per device, of the partitioned program), and the roofline time is max(flops / peak FLOP/s, bytes /
HBM bandwidth) of one chip. Collectives over ICI, host work (rewards, the scheduler) and the decode
loop's early exit are not in it.

Model FLOPs (for MFU) are the work the model must do, counted once: 2 x (matmul params) per token
forward (the LM head only where logits are taken: the response positions in the train step and the
reference logprobs, the last prompt position in prefill), x 3 for forward + backward, plus causal
attention 2 x L x H x hd x T^2 per sequence forward (half the T x T products). Rematerialisation's
second forward is not model work, so MFU counts it as overhead.
"""
from __future__ import annotations

import dataclasses
import json
import re
import time

from jaxghpo import models

GB = 1e9


@dataclasses.dataclass
class CompiledMemory:
  """XLA's memory_analysis() of one compiled program, bytes per device."""
  arguments: int
  outputs: int
  aliased: int
  temporaries: int
  host_temporaries: int = 0  # in host memory (activations offloaded by a remat policy: pinned_host)

  @property
  def total(self) -> int:
    """Arguments + outputs not aliased to (donated) arguments + temporaries: the program's peak."""
    return self.arguments + self.outputs - self.aliased + self.temporaries

  @classmethod
  def of(cls, compiled) -> "CompiledMemory":
    m = compiled.memory_analysis()
    return cls(int(m.argument_size_in_bytes), int(m.output_size_in_bytes), int(m.alias_size_in_bytes),
               int(m.temp_size_in_bytes), int(getattr(m, "host_temp_size_in_bytes", 0) or 0))


@dataclasses.dataclass
class ProgramReport:
  name: str
  memory: CompiledMemory
  flops: float             # per device
  bytes_accessed: float    # per device
  xla_optimal_s: float     # XLA's own estimate (cost_analysis "optimal_seconds"); negative (-1) when XLA has none
  compile_s: float

  def roofline_s(self, chip) -> float:
    return max(self.flops / chip.peak_bf16_flops, self.bytes_accessed / chip.hbm_bytes_per_s)


def loop_repeats(name: str, config) -> int:
  """How many times XLA's count of `name` must be taken: a cost analysis counts a loop's body once, and the
  train step and the reference logprobs run their micro-batches in a lax.map (config.rl.micro_batches). The
  LM head's block loop inside (rl.logprob_chunk_tokens) stays counted once per micro-batch: XLA's flops of
  those programs are low by the head's share less one block (the model FLOPs beside them say how much)."""
  return int(config.rl.micro_batches) if name in ("train_step", "reference_logprobs") else 1


_OUT_OF_HBM = re.compile(r"Ran out of memory[^(]*\(([\d.]+)([KMGT]?)i?B?\) exceeds available HBM \(([\d.]+)([KMGT]?)")
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


def analyse(name: str, lowered, repeats: int = 1) -> ProgramReport:
  """Compiles `lowered` (never runs it) and reads XLA's memory and cost analyses; flops and bytes accessed
  are XLA's count x `repeats` (loop_repeats). XLA:TPU refuses to compile a program whose temporaries exceed
  the chip's HBM: that comes back as a report whose temporaries are the bytes XLA said it needs (no cost)."""
  t0 = time.time()
  try:
    compiled = lowered.compile()
  except Exception as e:  # pylint: disable=broad-except  (only XLA's out-of-memory refusal is a result)
    found = _OUT_OF_HBM.search(str(e))
    if found is None:
      raise
    need = float(found.group(1)) * _UNITS[found.group(2)]
    return ProgramReport(name, CompiledMemory(0, 0, 0, int(need)), 0.0, 0.0, -1.0, time.time() - t0)
  seconds = time.time() - t0
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax: one dict per program
    cost = cost[0] if cost else {}
  cost = cost or {}
  optimal = float(cost.get("optimal_seconds", -1.0))
  return ProgramReport(name, CompiledMemory.of(compiled), repeats * float(cost.get("flops", 0.0)),
                       repeats * float(cost.get("bytes accessed", 0.0)), repeats * optimal if optimal >= 0 else -1.0,
                       seconds)


# ------------------------------------------------------------------------------------------ model FLOPs
def _matmul_params(cfg: models.ModelConfig) -> tuple[int, int]:
  """(params in the blocks' matmuls, params of the LM head): the embedding lookup is not a matmul."""
  head = cfg.vocab_size * cfg.hidden_size
  embeds = head * (1 if cfg.tie_word_embeddings else 2)
  return cfg.num_params() - embeds, head


def _attention_fwd(cfg: models.ModelConfig, queries: float, keys: float) -> float:
  """Forward attention FLOPs of `queries` tokens against `keys` keys each (QK^T and PV, 2 flops a MAC)."""
  return 4.0 * cfg.num_layers * cfg.num_heads * cfg.head_dim * queries * keys


def model_flops(config, cfg: models.ModelConfig) -> dict[str, float]:
  """Model FLOPs of one GHPO step's programs, all devices together (module docstring)."""
  P, G = int(config.data.prompts_per_step), int(config.rollout.group_size)
  Lp, N = int(config.rollout.max_prompt_len), int(config.rollout.max_new_tokens)
  R, T = P * G, Lp + N
  blocks, head = _matmul_params(cfg)
  forward = R * (2.0 * blocks * T + 2.0 * head * N + _attention_fwd(cfg, T, T) / 2)
  out = {"train_step": 3.0 * forward,
         "train_sampler/prefill": P * (2.0 * blocks * Lp + 2.0 * head + _attention_fwd(cfg, Lp, Lp) / 2),
         # one decode step: every row's new token against its context (the prompt and half the new tokens, on average)
         "train_sampler/decode_step": R * (2.0 * (blocks + head) + _attention_fwd(cfg, 1, Lp + N / 2))}
  if float(config.rl.kl_coef) != 0:
    out["reference_logprobs"] = forward
  return out


# --------------------------------------------------------------------------------------------- the step
def predicted_step(reports: dict[str, ProgramReport], config, chip, model_flops_per_device=None) -> dict[str, float]:
  """Roofline seconds of one GHPO step without retry rounds: one training sampler call (prefill + every new
  token's decode step), the reference logprobs when KL is on, the train step; and a retry round's cost.

  Each program's time is max(flops / peak, bytes accessed / bandwidth) with flops the larger of XLA's count
  and the model FLOPs (per device): XLA:TPU's cost analysis counted 0.61-0.65x the model's matmul FLOPs in
  the 7B prefill and train step (1.04x in a decode step), and a prediction from the smaller would be short."""
  N = int(config.rollout.max_new_tokens)
  model = model_flops_per_device or {}

  def r(name):
    if name not in reports:
      return 0.0
    rep = reports[name]
    return max(max(rep.flops, model.get(name, 0.0)) / chip.peak_bf16_flops, rep.bytes_accessed / chip.hbm_bytes_per_s)
  sampler = r("train_sampler/prefill") + N * r("train_sampler/decode_step")
  return {"decode_steps": N, "sampler_s": sampler, "reference_s": r("reference_logprobs"), "train_step_s": r("train_step"),
          "step_s": sampler + r("reference_logprobs") + r("train_step"), "retry_round_s": sampler}


def summary(reports: dict[str, ProgramReport], config, model_cfg, slice_, tokens_per_sequence: int,
            sequences_per_device_per_microbatch: int) -> dict:
  """The JSON contract line of tools/compile_tpu.py (docs/DESIGN.md) plus the step's breakdown."""
  chip = slice_.chip
  flops = model_flops(config, model_cfg)
  step = predicted_step(reports, config, chip, {k: v / slice_.num_chips for k, v in flops.items()})
  N = int(config.rollout.max_new_tokens)
  step_model_flops = (flops["train_step"] + flops["train_sampler/prefill"] + N * flops["train_sampler/decode_step"]
                      + flops.get("reference_logprobs", 0.0))
  mfu = step_model_flops / (step["step_s"] * chip.peak_bf16_flops * slice_.num_chips) if step["step_s"] else 0.0
  programs = {name: {"bytes_per_device": rep.memory.total, "temporaries_per_device": rep.memory.temporaries,
                     "host_bytes_per_device": rep.memory.host_temporaries, "flops_per_device": rep.flops,
                     "bytes_accessed_per_device": rep.bytes_accessed, "roofline_s": rep.roofline_s(chip),
                     "xla_optimal_s": rep.xla_optimal_s} for name, rep in reports.items()}
  return {"slice": slice_.name, "programs": programs, "hbm_bytes_per_device": int(chip.hbm_bytes),
          "sequences_per_device_per_microbatch": int(sequences_per_device_per_microbatch),
          "tokens_per_sequence": int(tokens_per_sequence), "predicted_step_s": step["step_s"],
          "predicted_mfu": mfu, "step": step,
          "model_flops_per_device": {k: v / slice_.num_chips for k, v in flops.items()}}


def fits(reports: dict[str, ProgramReport], chip, headroom: float = 0.9) -> list[str]:
  """The programs whose per-device memory is above `headroom` x the chip's HBM (a run needs room for the
  executables and XLA's scratch besides)."""
  return [name for name, rep in reports.items() if "/" not in name and rep.memory.total > headroom * chip.hbm_bytes]


def format_text(reports: dict[str, ProgramReport], summary_: dict, slice_) -> str:
  chip = slice_.chip
  hbm = chip.hbm_bytes
  lines = [f"XLA:TPU compile for {slice_.name} ({slice_.num_chips} chips, topology {slice_.topology}, "
           f"{hbm / GB:.0f} GB HBM, {chip.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16, "
           f"{chip.hbm_bytes_per_s / 1e9:.0f} GB/s per chip). Compile-time predictions, not measurements.",
           f"{'program':<28}{'memory/dev':>12}{'% HBM':>7}{'temps':>10}{'TFLOP/dev':>11}{'GB acc/dev':>11}"
           f"{'roofline':>11}{'XLA opt':>10}{'XLA/model':>10}{'compile':>9}"]
  model = summary_["model_flops_per_device"]
  for name, rep in reports.items():
    ratio = f"{rep.flops / model[name]:.2f}x" if model.get(name) else "-"
    lines.append(f"{name:<28}{rep.memory.total / GB:>10.2f}GB{100 * rep.memory.total / hbm:>6.0f}%"
                 f"{rep.memory.temporaries / GB:>8.2f}GB{rep.flops / 1e12:>11.3f}{rep.bytes_accessed / GB:>11.3f}"
                 f"{_seconds(rep.roofline_s(chip)):>11}{_seconds(rep.xla_optimal_s):>10}{ratio:>10}"
                 f"{rep.compile_s:>8.0f}s" + (f"  (+{rep.memory.host_temporaries / GB:.2f} GB in host memory)"
                                          if rep.memory.host_temporaries else ""))
  step = summary_["step"]
  lines.append(f"predicted GHPO step (no retry round): {step['step_s']:.2f} s = sampler {step['sampler_s']:.2f} s "
               f"(prefill + {step['decode_steps']} decode steps, every row to the end) + reference "
               f"{step['reference_s']:.2f} s + train step {step['train_step_s']:.2f} s; each retry round adds "
               f"{step['retry_round_s']:.2f} s; MFU {100 * summary_['predicted_mfu']:.1f}%")
  for name, est in summary_.get("estimated_bytes_per_device", {}).items():
    if name in reports:
      got = reports[name].memory.total
      lines.append(f"{name}: compiled {got / GB:.2f} GB per device, analytic estimate (jaxghpo/memory_estimate.py, "
                   f"XLA:TPU constants) {est / GB:.2f} GB ({100 * (est - got) / got:+.0f}%)")
  over = fits(reports, chip)
  lines.append("fits: every program within 90% of HBM" if not over else
               "DOES NOT FIT: " + ", ".join(f"{n} needs {reports[n].memory.total / GB:.2f} GB of {0.9 * hbm / GB:.1f} "
                                             "GB (90% of HBM)" for n in over))
  return "\n".join(lines)


def _seconds(s: float) -> str:
  if s < 0:
    return "-"
  return f"{s * 1e3:.2f}ms" if s < 1 else f"{s:.2f}s"


def json_line(summary_: dict) -> str:
  return json.dumps(summary_)
