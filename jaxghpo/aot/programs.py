"""Every program a training run executes, lowered from shapes alone for a mesh of any devices.

    lowered = programs.lower_all(config, model_cfg, mesh)   # {name: jax.stages.Lowered}

Names: "train_sampler" (the training rollouts' program: prefill and the decode loop, P prompts x G
samples, the largest of GroupSampler's buckets), "train_sampler/prefill" and "train_sampler/decode_step"
(its two parts, each alone: a cost analysis counts a while loop's body once, so the step time multiplies
the decode step by the new tokens), the same three for "eval_sampler" (evaluation's sizes, with token
confidences), "reference_logprobs" (only when rl.kl_coef != 0) and "train_step". Params, optimizer
state, prompts and the batch are ShapeDtypeStructs with the shardings the trainer gives them: no weights
are read and nothing is placed on a device, so the mesh may hold a TPU slice's devices on a CPU host
(jaxghpo/aot/slices.py). The sizes come from the same functions experiment.setup uses.
"""
from __future__ import annotations

import numpy as np
import jax
from flax import nnx

from jaxghpo import derived, models, parallel, rl
from jaxghpo.aot.shapes import run_model_config


def _abstract(tree, shardings):
  return jax.tree.map(lambda s, x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shardings, tree)


def abstract_state(config, model_cfg: models.ModelConfig, mesh):
  """(model (abstract), graphdef, params, param shardings, rl config, optimizer, opt_state): shapes only."""
  model = models.abstract_model(run_model_config(config, model_cfg))
  graphdef, state = nnx.split(model)
  shardings = parallel.param_shardings(state, mesh)
  params = _abstract(state, shardings)
  rl_cfg = derived.rl_config(config)
  optimizer = rl.make_optimizer(rl_cfg, max(int(config.num_steps) * int(rl_cfg.ppo_epochs), 1))
  opt_state = _abstract(jax.eval_shape(optimizer.init, params),
                        rl.optimizer_shardings(optimizer, params, shardings, mesh))
  return model, graphdef, params, shardings, rl_cfg, optimizer, opt_state


def abstract_batch(config, rl_cfg, mesh) -> rl.RLBatch:
  """The train step's batch of P*G rows x (prompt + new) tokens, sharded by rows as the trainer places it."""
  rows = int(config.data.prompts_per_step) * int(config.rollout.group_size)
  Lp, N = int(config.rollout.max_prompt_len), int(config.rollout.max_new_tokens)
  arr = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=parallel.batch_sharding(mesh, len(shape)))
  return rl.RLBatch(tokens=arr((rows, Lp + N), np.int32), segment_ids=arr((rows, Lp + N), np.int32),
                    advantages=arr((rows,), np.float32), old_logp=arr((rows, Lp + N), np.float32),
                    ref_logp=arr((rows, Lp + N), np.float32) if float(rl_cfg.kl_coef) != 0 else None, prompt_len=Lp)


def samplers(config, model, mesh) -> dict:
  """{"train_sampler", "eval_sampler"}: the Sampler objects the run's GroupSamplers hold (largest bucket)."""
  from jaxghpo import experiment
  from jaxghpo.rollout import Sampler
  P, G = int(config.data.prompts_per_step), int(config.rollout.group_size)
  return {f"{name}_sampler": Sampler(model, batch_size=P, num_samples=G, mesh=mesh, **sizes)
          for name, sizes in experiment.sampler_sizes(config).items()}


def lower_all(config, model_cfg: models.ModelConfig, mesh, only=None) -> dict[str, jax.stages.Lowered]:
  """{name: Lowered} of every program of the run (module docstring); `only`: a subset of names."""
  want = lambda name: only is None or name in only or name.split("/")[0] in only  # a sampler's name: its parts too
  model, graphdef, params, shardings, rl_cfg, optimizer, opt_state = abstract_state(config, model_cfg, mesh)
  out = {}
  for name, sampler in samplers(config, model, mesh).items():
    row_keys = name == "train_sampler"  # training draws by per-problem keys (rollout/crn.py); evaluation does not
    if want(name):
      out[name] = sampler.lower_abstract(params, row_keys=row_keys)
    if want(f"{name}/prefill") or want(f"{name}/decode_step"):
      out.update({f"{name}/{part}": lowered for part, lowered in sampler.lower_parts(params, row_keys=row_keys).items()
                  if want(f"{name}/{part}")})
  batch = abstract_batch(config, rl_cfg, mesh)
  if float(rl_cfg.kl_coef) != 0 and want("reference_logprobs"):
    out["reference_logprobs"] = rl.make_logprob_fn(graphdef, rl_cfg, mesh, shardings).lower(params, batch)
  if want("train_step"):
    step = rl.make_train_step(graphdef, rl_cfg, mesh, optimizer, shardings)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=parallel.replicated(mesh))
    out["train_step"] = step.lower(params, opt_state, batch, key)
  return out
