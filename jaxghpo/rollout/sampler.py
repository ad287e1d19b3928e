"""The jitted sampler: one prefill pass over left-padded prompts, then a KV-cache decode ``while_loop``.

Shapes are fixed per :class:`Sampler` (batch of prompts B, samples per prompt G, prompt bucket Lp, new
tokens N), so a call with other prompts, seeds or sampling controls never compiles again; params are a
traced argument (the weights being trained, with their own shardings, no copy).

Layout: rows are prompt-major (row ``b * G + g`` is sample g of prompt b). The KV cache has S = Lp + N
slots shared by all rows: slots [0, Lp) hold the left-padded prompt, slot Lp + t the t-th new token. RoPE
positions count from each row's first real prompt token, so padding changes nothing. The prefill runs
once per prompt and its cache is repeated for the G samples. The decode ``while_loop`` stops as soon as
every row has produced an EOS token (or after N tokens).

Outputs (:class:`SampleOutput`):
  tokens int32 [R, N]: new tokens, ``pad_id`` after the end; the EOS token itself is kept.
  lengths int32 [R]: new tokens up to and including EOS (N when no EOS came; 0 for inactive rows).
  logprobs float32 [R, N]: ``log_softmax(logits / T)`` of each new token (T = 1 when greedy), before
    top-k/top-p and the thought-switch penalty; 0 after the end.
  confidence float32 [R, N] or None: DeepConf ``-mean(top-k logprobs)``, 0 after the end.
  prompt_ids int32 [B, Lp], prompt_valid bool [B, Lp]: numpy, this process's rows of the left-padded prompts
    the sampler ran on (the trainer's batch reuses them instead of padding a second time).
  stopped bool [R] or None: rows ended by DeepConf online stopping (with confidence and a stop threshold:
    a row ends, without EOS, once the mean confidence of its last ``stop_window`` tokens falls below its
    prompt's threshold; see jaxghpo/deepconf.py).

Random numbers. With one ``rng`` per call, token t of every row is drawn from ``fold_in(rng, t)``, so a
row's draws depend on where it sits in the call. With ``row_keys`` (one key per prompt, as raw key data)
sample g of prompt b draws token t from ``fold_in(fold_in(row_keys[b], g), t)``: its draws depend on its
own key only, whatever the call's size, the row's position or the process it came from (common random
numbers, jaxghpo/rollout/crn.py). The mode is static (each Sampler compiles the one its caller uses);
the keys themselves are data, so new keys never compile again.

Modules: sampler.py (the Sampler, its call, the kept samplers, ``generate``); sampler_decode.py (the jitted
program: prefill and the decode loop); sampler_inputs.py (a call's inputs checked, padded, gathered over
processes); sampler_layout.py (the KV cache's axes and every array's placement on the mesh); sampler_aot.py
(the programs lowered from shapes alone).
"""
from __future__ import annotations

import collections
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxghpo import models
from jaxghpo.parallel import platform
from jaxghpo.rollout import penalties, sampler_aot, sampler_decode, sampler_inputs
from jaxghpo.rollout.sampler_decode import SampleOutput
from jaxghpo.rollout.sampler_layout import SamplerLayout


class Sampler:
  """A compiled sampler for one model structure and fixed sizes.

  Args:
    model: the policy (its graph structure is captured; weights are passed at call time).
    batch_size: prompts per call B (a call may bring fewer: the rest are inactive filler rows).
    max_prompt_len: the prompt bucket Lp; any prompt up to Lp tokens runs without compiling.
    max_new_tokens: N, new tokens per row.
    num_samples: G samples per prompt; the prompt's prefill is computed once and its cache repeated.
    cache_dtype: KV cache dtype (default: the model's compute dtype).
    mesh: the training mesh; rows and cache are sharded over ("data", "fsdp") (and KV heads over
      "tensor" when it divides them). Params keep their own shardings.
    return_confidence: also return DeepConf token confidence, from the top ``confidence_k`` logprobs
      (default 20, or V when the vocabulary is smaller).
    donate_cache: keep a preallocated cache [R, Lp + N] and donate it to each call (True), or build it
      inside the jitted call (False, default: no measurable speed difference on CPU, see BENCHMARKS.md,
      and no cache memory is held between calls, which the train step needs on an accelerator).

  Several processes (multi-host): each process passes its own ``batch_size / process_count`` prompts;
  rows of the outputs are laid out in process order (``parallel.hosts.local_rows`` returns a process's).
  """

  def __init__(self, model: nnx.Module, *, batch_size: int, max_prompt_len: int, max_new_tokens: int,
               num_samples: int = 1, cache_dtype=None, mesh: jax.sharding.Mesh | None = None,
               return_confidence: bool = False, confidence_k: int = 20, donate_cache: bool = False):
    for name, value in (("batch_size", batch_size), ("max_prompt_len", max_prompt_len),
                        ("max_new_tokens", max_new_tokens), ("num_samples", num_samples),
                        ("confidence_k", confidence_k)):
      if int(value) < 1:
        raise ValueError(f"Sampler {name}={value} must be >= 1")
    self.graphdef, _ = nnx.split(model)
    self.cfg: models.ModelConfig = model.cfg
    self.batch_size, self.num_samples = int(batch_size), int(num_samples)
    self.num_rows = self.batch_size * self.num_samples
    self.max_prompt_len, self.max_new_tokens = int(max_prompt_len), int(max_new_tokens)
    self.cache_dtype = jnp.dtype(cache_dtype or self.cfg.compute_dtype)
    self.mesh = mesh
    self.return_confidence = bool(return_confidence)
    self.confidence_k = min(int(confidence_k), self.cfg.vocab_size)
    self.donate_cache = bool(donate_cache)
    self._cache = None
    self.layout = SamplerLayout(self.cfg, self.cache_dtype, mesh, self.num_rows,
                                self.max_prompt_len + self.max_new_tokens)
    program = functools.partial(sampler_decode.program, self)
    if self.donate_cache:
      self._fn = jax.jit(program, static_argnames=("key_impl",), donate_argnames=("cache",))
    else:
      self._fn = jax.jit(functools.partial(program, cache=None), static_argnames=("key_impl",))

  # ---- the call --------------------------------------------------------------------------------------
  def __call__(self, params, prompts: Sequence[Sequence[int]], *, rng, temperature: float = 0.0,
               top_p: float = 1.0, top_k: int = 0, eos_id=None, pad_id: int = 0,
               penalty: penalties.ThoughtSwitchPenalty | None = None, stop_threshold=None,
               stop_window: int = 1, row_keys=None) -> SampleOutput:
    """Samples ``num_samples`` continuations of each prompt.

    params: the model (nnx.Module) or its state from ``nnx.split(model)`` (same structure as at build).
    prompts: up to ``batch_size`` ragged lists of token ids, each 1..max_prompt_len long.
    rng: a JAX PRNG key (or an int seed). temperature 0 is greedy.
    eos_id: None, an id, or a list of ids that end a row. pad_id: written after the end.
    penalty: the TIP thought-switch penalty (off by default).
    stop_threshold: DeepConf online stopping (needs return_confidence): float32 [len(prompts)], one
      threshold per prompt (or a float for all); a row ends once the mean confidence of its last
      ``stop_window`` tokens is below its prompt's threshold (SampleOutput.stopped). None: off. Both are
      traced inputs: turning stopping on or off, or changing them, compiles nothing.
    row_keys: None, or raw key data [len(prompts), ...] (jax.random.key_data of one key per prompt, of
      `rng`'s implementation): every row draws from its own key (module docstring); `rng` is then unused
      for tokens. A Sampler is called either always with row_keys or always without (one compile each).
    Rows beyond ``len(prompts) * num_samples`` are inactive: length 0, all pad.
    """
    (args, kwargs), local = self._arguments(params, prompts, rng=rng, temperature=temperature, top_p=top_p,
                                            top_k=top_k, eos_id=eos_id, pad_id=pad_id, penalty=penalty,
                                            stop_threshold=stop_threshold, stop_window=stop_window,
                                            row_keys=row_keys)
    with platform.targeting(self.mesh):
      out, cache = self._fn(*args, **kwargs)
    if self.donate_cache:
      self._cache = cache
    return out.replace(prompt_ids=local[0], prompt_valid=local[1])

  def lower(self, params, prompts, **controls) -> jax.stages.Lowered:
    """The lowered program for these arguments (same keywords as a call), for cost/memory analysis or
    for reading the compiled HLO: ``sampler.lower(model, prompts, rng=key).compile().as_text()``."""
    (args, kwargs), _ = self._arguments(params, prompts, **controls)
    with platform.targeting(self.mesh):
      return self._fn.lower(*args, **kwargs)

  # ---- ahead of time: lowering from shapes alone (sampler_aot.py) -------------------------------------
  def abstract_arguments(self, params, key_impl: str = "threefry2x32", row_keys: bool = False):
    """(args, kwargs) of a call as ShapeDtypeStructs with their shardings (params: abstract or real).

    Nothing is placed on a device, so a program for another machine's devices (a TPU slice compiled on a
    CPU host, jaxghpo/aot) lowers from these; the values a real call would bring do not change the program."""
    return sampler_aot.abstract_arguments(self, params, key_impl, row_keys)

  def lower_abstract(self, params, key_impl: str = "threefry2x32", row_keys: bool = False) -> jax.stages.Lowered:
    """The whole sampling program (prefill and the decode loop) lowered from shapes (see abstract_arguments)."""
    args, kwargs = self.abstract_arguments(params, key_impl, row_keys)
    with platform.targeting(self.mesh):
      return self._fn.lower(*args, **kwargs)

  def lower_parts(self, params, key_impl: str = "threefry2x32",
                  row_keys: bool = False) -> dict[str, jax.stages.Lowered]:
    """{"prefill", "decode_step"}: the two parts of the program, each lowered alone from shapes.

    The decode loop's trip count is data (it ends when every row has), so a cost analysis of the whole
    program counts its body once; one decode step lowered alone is what N steps repeat."""
    return sampler_aot.lower_parts(self, params, key_impl, row_keys)

  def _arguments(self, params, prompts, **controls):
    """((args, kwargs), this process's padded prompts) of a call (sampler_inputs.py), the donated cache added."""
    args, local = sampler_inputs.call_arguments(self, params, prompts, **controls)
    if not self.donate_cache:
      return (args, {}), local
    if self._cache is None:
      self._cache = jax.jit(self.layout.empty_cache)()
    return (args, {"cache": self._cache}), local


_SAMPLERS: "collections.OrderedDict[tuple, Sampler]" = collections.OrderedDict()
_MAX_SAMPLERS = 8


def prompt_bucket(longest: int, minimum: int = 8) -> int:
  """The prompt bucket for a longest prompt: the next power of two, at least ``minimum``."""
  return max(minimum, 1 << max(0, int(longest) - 1).bit_length())


def sampler_for(model: nnx.Module, *, batch_size: int, max_prompt_len: int, max_new_tokens: int,
                num_samples: int = 1, return_confidence: bool = False, confidence_k: int = 20,
                mesh: jax.sharding.Mesh | None = None, cache_dtype=None) -> Sampler:
  """The kept :class:`Sampler` for this model structure and these sizes (built on first use; the last
  eight are kept). ``generate`` draws its samplers from here, so both share compiled programs."""
  graphdef, _ = nnx.split(model)
  key = (graphdef, int(batch_size), int(max_prompt_len), int(max_new_tokens), int(num_samples),
         bool(return_confidence), int(confidence_k), mesh, None if cache_dtype is None else jnp.dtype(cache_dtype).name)
  sampler = _SAMPLERS.pop(key, None)
  if sampler is None:
    sampler = Sampler(model, batch_size=batch_size, max_prompt_len=max_prompt_len, max_new_tokens=max_new_tokens,
                      num_samples=num_samples, cache_dtype=cache_dtype, mesh=mesh,
                      return_confidence=return_confidence, confidence_k=confidence_k)
  _SAMPLERS[key] = sampler
  while len(_SAMPLERS) > _MAX_SAMPLERS:
    _SAMPLERS.popitem(last=False)
  return sampler


def generate(model: nnx.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int, *, rng,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, eos_id=None, pad_id: int = 0,
             num_samples: int = 1, max_prompt_len: int | None = None, return_confidence: bool = False,
             confidence_k: int = 20, penalty: penalties.ThoughtSwitchPenalty | None = None,
             mesh: jax.sharding.Mesh | None = None, cache_dtype=None) -> SampleOutput:
  """Samples continuations of ragged prompts (docs/DESIGN.md contract); see :class:`Sampler`.

  Uses the kept :class:`Sampler` (see :func:`sampler_for`) with batch_size ``len(prompts)`` and prompt
  bucket ``max_prompt_len`` (default: the next power of two >= the longest prompt, at least 8), so
  repeated calls of the same shape do not compile again.
  Returns tokens int32 [B*G, N], logprobs float32 [B*G, N], lengths int32 [B*G] (rows prompt-major).
  """
  if not prompts:
    raise ValueError("generate() got no prompts")
  bucket = max_prompt_len or prompt_bucket(max(len(p) for p in prompts))
  sampler = sampler_for(model, batch_size=len(prompts), max_prompt_len=bucket, max_new_tokens=max_new_tokens,
                        num_samples=num_samples, return_confidence=return_confidence, confidence_k=confidence_k,
                        mesh=mesh, cache_dtype=cache_dtype)
  return sampler(model, prompts, rng=rng, temperature=temperature, top_p=top_p, top_k=top_k, eos_id=eos_id,
                 pad_id=pad_id, penalty=penalty)
