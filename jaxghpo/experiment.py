"""Builds what a run needs from its config: mesh, policy, tokenizer, problems, rewards.

Kept apart from train.py so that the loop reads top-down and tools (evaluation, export, the
study) can build the same pieces without training.
"""
from __future__ import annotations

import dataclasses
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxghpo import derived, memory_check, models, parallel, paths, rewards, validation
from jaxghpo.data import tasks
from jaxghpo.data import tokenizer as tok_lib
from jaxghpo.data.tasks import Problems, get_task  # noqa: F401  (re-exported: tools and tests build Problems here)
from jaxghpo.data.tasks.base import task_report as _task_report

from jaxghpo.models.hf import ASSETS, resolve_model_path  # noqa: E402,F401  (re-exported: tools and tests call it here)


def load_problems(config: ml_collections.ConfigDict) -> Problems:
  """The run's problems, from its task (jaxghpo.data.tasks.task_for: training pool, named evaluation sets,
  checker, exact sets)."""
  return tasks.task_for(config).load(train_seed=derived.seed(config, "train_problems"))


def load_policy(config, mesh):
  """(model placed on the mesh, model config, tokenizer)."""
  path = resolve_model_path(config.model.path)
  with jax.set_mesh(mesh):
    model, cfg = models.from_pretrained(path, dtype=jnp.dtype(config.model.dtype),
                                        param_dtype=jnp.dtype(config.model.param_dtype), mesh=mesh,
                                        attention=config.model.get("attention", "xla"),
                                        remat=config.model.get("remat", "none"))
  tokenizer = tok_lib.load(config.model.tokenizer or path)
  return model, cfg, tokenizer


def make_mesh(config):
  return parallel.make_mesh(tuple(config.mesh.shape))


def reward_fn(config, problems: Problems):
  """(completions, answers, problems=, contexts=) -> (total float32 [B], accuracy float32 [B]).

  problems / contexts (optional, B items): each completion's problem text and the prompt-side hint it
  continues, for reward kinds that check the written trace (rewards "valid_trace")."""
  kwargs = {}
  if problems.extract_answer is not None:
    kwargs["extract"] = problems.extract_answer
  if problems.check_completion is not None:  # the valid_trace reward: the task checker's "valid"
    kwargs["check_trace"] = lambda problem, text: problems.check_completion(problem, text)[0]

  def score(completions, answers, **context):
    total, accuracy, _ = rewards.combine(config.rewards, completions, answers, **kwargs, **context)
    return total, accuracy

  return score


def validate(config, num_devices: int, num_processes: int):
  """Fails at start with a message naming the conflicting keys (every value that could only fail later).

  Raises validation.StartupError (a ValueError), which `python -m jaxghpo.main` prints as one line. Returns the
  module configs with their derived keys (derived.derive, computed once; None outside RL)."""
  with validation.startup_errors():
    return _validate(config, num_devices, num_processes)


def _validate(config, num_devices: int, num_processes: int):
  modules = validate_values(config)
  shape = parallel.validate_mesh_shape(tuple(config.mesh.shape), num_devices)
  P, G = int(config.data.prompts_per_step), int(config.rollout.group_size)
  batch_shards = shape[0] * shape[1]
  if P % num_processes:
    raise ValueError(f"config.data.prompts_per_step={P} is not divisible by the {num_processes} processes")
  if (P * G) % batch_shards:
    raise ValueError(f"config.data.prompts_per_step * config.rollout.group_size = {P * G} sequences is not "
                     f"divisible by the mesh's data x fsdp = {batch_shards} (config.mesh.shape={shape})")
  M = int(config.rl.micro_batches)
  if (P * G) % M:
    raise ValueError(f"config.rl.micro_batches={M} does not divide the {P * G} sequences")
  if ((P * G) // M) % batch_shards:
    raise ValueError(f"config.rl.micro_batches={M}: a micro-batch of {(P * G) // M} sequences does not divide "
                     f"over the mesh's data x fsdp = {batch_shards} shards; lower micro_batches")
  for key in ("num_steps", "checkpoint_every_steps", "seed"):
    if key not in config:
      raise ValueError(f"config.{key} is missing; every config needs num_steps, checkpoint_every_steps, seed")
  derived.check_not_set(config)
  return modules


def validate_values(config):
  """Ranges of single values that would otherwise fail only later (a division by zero after the first
  evaluation, a sampler error at the first sample, a run that cannot learn); each error names the key."""
  from jaxghpo.curriculum import hints as hints_lib
  from jaxghpo.data import templates
  c = config

  def need(ok: bool, key: str, why: str) -> None:
    if not ok:
      raise validation.StartupError(f"config.{key}={_get(c, key)!r}: {why}")

  for key, value in _float_leaves(c):
    if not math.isfinite(value):
      raise validation.StartupError(f"config.{key}={value}: must be a finite number (a NaN learning rate, for one, turns "
                       "every parameter into NaN without a single skipped update)")
  # Every numeric key against its range (one table: jaxghpo/validation.py), then what relates keys.
  validation.check_ranges(c)
  path = str(c.model.path).strip()
  need(bool(path), "model.path", "is empty; give a Hugging Face model directory or builtin:NAME "
       "(an empty path would read ./config.json)")
  need(c.data.on_bad_row in ("error", "skip"), "data.on_bad_row", "must be 'error' or 'skip'")
  need(c.data.style in templates.STYLES, "data.style", f"must be one of {templates.STYLES}")
  need(c.hints.placement in templates.PLACEMENTS, "hints.placement", f"must be one of {templates.PLACEMENTS}")
  need(c.hints.unit in hints_lib.UNITS, "hints.unit", f"must be one of {hints_lib.UNITS}")
  need(c.hints.corruption in ("none", "other", "shuffle", "garble"), "hints.corruption",
       "must be none, other, shuffle or garble")
  rewards.validate_config(c.rewards)  # every reward kind registered (a misspelt one fails here, not at step 1)
  uses_trace = "valid_trace" in c.rewards.weights or c.rewards.accuracy == "valid_trace"
  need(not uses_trace or tasks.TASKS.get(tasks.task_name(c)).checks_traces, "rewards.weights",
       f"the valid_trace reward checks a written trace with a task's checker; task {tasks.task_name(c)!r} has none "
       "(use 'exact' or 'math' for its data)")
  r = c.rollout
  e = c.eval
  need(int(e.num_samples) <= int(r.group_size), "eval.num_samples",
       f"must be <= config.rollout.group_size={int(r.group_size)} (evaluation draws one group per problem)")
  from jaxghpo.evaluation import specs as eval_specs
  eval_specs.specs(c)  # config.evals: each named evaluator's fields (errors name config.evals.NAME.KEY)
  if c.mode == "rl":
    return derived.derive(c)  # the module configs' own named errors (temperature > 0 among them), once
  derived.curriculum_config(c)
  return None


def _float_leaves(c, prefix: str = ""):
  """(dotted key, value) of every float in a ConfigDict, nested sections and tuples included."""
  for key, value in c.items():
    name = f"{prefix}{key}"
    if hasattr(value, "items"):
      yield from _float_leaves(value, name + ".")
    elif isinstance(value, (list, tuple)):
      for i, v in enumerate(value):
        if isinstance(v, float):
          yield f"{name}[{i}]", v
    elif isinstance(value, float):
      yield name, value


def _get(c, dotted: str):
  for part in dotted.split("."):
    c = c.get(part) if hasattr(c, "get") else c[part]
  return c


def check_prompt_room(config, problems: Problems, tokenizer) -> None:
  """Every row's prompt, with the longest hint the config can ask for, must fit its prompt bucket.

  Training rows are measured with the hint at curriculum.highest_ratio against
  config.rollout.max_prompt_len; evaluation rows with the largest hint ratio of the evaluators of
  config.evals that evaluate their split (else no hint) against the evaluation bucket. A row that does not
  fit (or renders to no token at all) stops the run here, naming file:line and the numbers, with
  config.data.on_bad_row="error"; with "skip" it is dropped and counted under prompt_too_long in the
  load report. So no prompt fails at sampling. `problems` is changed in place.
  (Hint corruptions "other"/"shuffle"/"garble" put other text of the same step count in the hint: not bounded here.)
  """
  from jaxghpo import curriculum
  from jaxghpo.data import prompt_room
  c = config
  kwargs = dict(unit=c.hints.unit, placement=c.hints.placement, style=c.data.style, tokenizer=tokenizer)
  top = curriculum.highest_ratio(c.curriculum)
  train_limit = int(c.rollout.max_prompt_len)
  reports = list(problems.load_report or [_task_report("train", problems.train)])
  problems.load_report = reports
  lengths, exact = prompt_room.prompt_lengths(problems.train, top, limit=train_limit, **kwargs)
  problems.train = _keep_fitting(problems.train, lengths, exact, reports, train_limit, top, c.data.on_bad_row,
                                 "config.rollout.max_prompt_len", "config.curriculum (ladder / max_ratio)")
  eval_limit = int(c.eval.get("max_prompt_len", 0) or train_limit)
  from jaxghpo.evaluation import specs as eval_specs
  ratios = eval_specs.split_hint_ratios(c, list(problems.eval_sets))
  for name, examples in list(problems.eval_sets.items()):
    ratio = ratios[name]
    report = problems.eval_reports.setdefault(name, _task_report(f"eval/{name}", examples))
    lengths, exact = prompt_room.prompt_lengths(examples, ratio, limit=eval_limit, **kwargs)
    key = "config.eval.max_prompt_len" if c.eval.get("max_prompt_len", 0) else "config.rollout.max_prompt_len"
    problems.eval_sets[name] = _keep_fitting(examples, lengths, exact, [report], eval_limit, ratio, c.data.on_bad_row,
                                             key, "the hint_ratio of config.evals")


def _keep_fitting(examples, lengths_N, exact_N, reports, limit: int, ratio: float, on_bad_row: str, limit_key: str,
                  ratio_key: str) -> list:
  """The examples whose prompt length is in [1, limit]; raises (on_bad_row="error") or counts the rest."""
  bad_N = (lengths_N > limit) | (lengths_N < 1)
  if not bad_N.any():
    return list(examples)
  bounds = np.cumsum([0] + [r.loaded for r in reports])
  if bounds[-1] != len(examples):
    raise RuntimeError(f"load reports count {bounds[-1]} rows but there are {len(examples)} problems")

  def where(i: int) -> str:
    k = int(np.searchsorted(bounds, i, side="right")) - 1
    return reports[k].where(i - int(bounds[k]))

  bad = np.flatnonzero(bad_N)
  if on_bad_row == "error":
    rows = "; ".join(f"{where(i)} needs {'' if exact_N[i] else 'at least '}{lengths_N[i]} tokens"
                     for i in bad[:5])
    more = f" (and {bad.size - 5} more)" if bad.size > 5 else ""
    raise ValueError(
        f"{limit_key}={limit} is too short: {bad.size} of {len(examples)} rows do not fit with a hint at ratio "
        f"{ratio:.2f} ({ratio_key}): {rows}{more}. Raise {limit_key}, or set config.data.on_bad_row='skip' "
        "to drop and count such rows")
  for k, report in enumerate(reports):
    report.drop_loaded(list(~bad_N[bounds[k]:bounds[k + 1]]), "prompt_too_long")
  kept = [ex for ex, b in zip(examples, bad_N) if not b]
  if not kept:
    raise ValueError(f"no row fits {limit_key}={limit} with a hint at ratio {ratio:.2f} (the shortest needs "
                     f"{lengths_N.min()} tokens); raise {limit_key}")
  return kept


def data_report(problems: Problems) -> dict:
  """What data_report.json holds: per file (or task split) rows read / kept / skipped by reason /
  duplicates (conflicting answers named), totals, and the training data's content fingerprint."""
  from jaxghpo.data import pipeline as pipeline_lib
  train = [r.to_json() for r in problems.load_report or []]
  totals = {"rows_read": sum(r["rows_read"] for r in train), "kept": len(problems.train), "skipped": {},
            "conflicting_duplicates": sum(r["conflicting_duplicates"] for r in train)}
  for r in train:
    for reason, n in r["skipped"].items():
      totals["skipped"][reason] = totals["skipped"].get(reason, 0) + n
  return {"train": train, "train_totals": totals,
          "eval": {name: r.to_json() for name, r in problems.eval_reports.items()},
          "content_fingerprint": f"{pipeline_lib.content_fingerprint(problems.train):016x}"}


def write_data_report(problems: Problems, workdir: str, is_main_process: bool = True) -> dict:
  """Prints one line per source and writes workdir/data_report.json (process 0); returns the report."""
  report = data_report(problems)
  if is_main_process:
    reports = (problems.load_report or []) + list(problems.eval_reports.values())
    clean = [r for r in reports if not r.skipped and not r.num_conflicts and not r.level_unknown
             and r.loaded == r.rows_read]
    for r in reports:  # a source with anything skipped, conflicting or unknown gets its own line
      if not any(r is c for c in clean):
        print(f"data: {r}", flush=True)
    if clean:
      print("data: every row kept: " + ", ".join(f"{r.path} {r.loaded}" for r in clean), flush=True)
    # Through jaxghpo/paths.py: a gs:// workdir gets an object (os/open would write ./gs:/... locally).
    paths.write_text(paths.join(workdir, "data_report.json"), json.dumps(report, indent=1))
  return report


@dataclasses.dataclass
class Setup:
  """Everything a training run builds from its config before the first step (see `setup`)."""
  mesh: object
  model: object
  model_cfg: object
  tokenizer: object
  problems: Problems
  pipeline: object           # data.pipeline.Pipeline of this host's P / process_count problems per batch
  scheduler: object          # curriculum.HintScheduler
  rl_cfg: ml_collections.ConfigDict
  graphdef: object
  params: object
  param_shardings: object
  optimizer: object
  opt_state: object
  train_step: object         # (params, opt_state, batch, rng) -> (params, opt_state, metrics), jitted
  ref_logprobs: object       # batch -> ref logprobs [R, T] (kl_coef != 0), else None
  rollout: object            # rollout.groups.GroupSampler for training (P, P/2, P/4 buckets)
  eval_rollout: object       # rollout.groups.GroupSampler for evaluation (its own sizes, confidences)
  deepconf: object = None    # deepconf.DeepConfOnline of config.eval.deepconf (None: not enabled)
  task: object = None        # data.tasks.base.Task: what the trainer, evaluator and report know of the task


def sampler_sizes(config) -> dict[str, dict]:
  """{"train", "eval"}: the sizes of the run's two samplers (prompt columns, new tokens, confidences).

  Evaluation may reach longer (out-of-distribution) problems than training: its own sizes; it also returns
  DeepConf token confidences (confidence-filtered voting in the report, DeepConf online stopping)."""
  train = {"max_prompt_len": int(config.rollout.max_prompt_len), "max_new_tokens": int(config.rollout.max_new_tokens)}
  return {"train": train,
          "eval": {"max_prompt_len": int(config.eval.get("max_prompt_len", 0) or train["max_prompt_len"]),
                   "max_new_tokens": int(config.eval.get("max_new_tokens", 0) or train["max_new_tokens"]),
                   "return_confidence": True}}


def setup(config) -> Setup:
  """Checks the config and builds the mesh, policy, data, scheduler, train step and samplers."""
  from jaxghpo import curriculum, deepconf, rl
  from jaxghpo.data import pipeline as pipeline_lib
  from jaxghpo.rollout import groups as groups_lib
  from jaxghpo.rollout import penalties
  from flax import nnx

  modules = validate(config, jax.device_count(), jax.process_count())  # with the derived keys (computed once)
  mesh = make_mesh(config)
  with validation.startup_errors():  # before any weight is loaded or program compiled
    memory_check.check(config, tuple(mesh.devices.shape), jax.devices())
  model, model_cfg, tokenizer = load_policy(config, mesh)
  with validation.startup_errors():  # a bad row, a missing file, a prompt that does not fit: one line
    task = tasks.task_for(config)
    problems = load_problems(config)  # the module-level seam (tests and tools wrap it)
    check_prompt_room(config, problems, tokenizer)
  score = reward_fn(config, problems)
  P = int(config.data.prompts_per_step)
  pipeline = pipeline_lib.make_pipeline(problems.train, batch_size_per_process=P // jax.process_count(),
                                        seed=derived.seed(config, "data_order"), shuffle=True)
  scheduler = curriculum.HintScheduler(modules.curriculum)

  rl_cfg = modules.rl
  graphdef, params = nnx.split(model)
  param_shardings = parallel.param_shardings(params, mesh)
  optimizer = rl.make_optimizer(rl_cfg, int(config.num_steps) * int(rl_cfg.ppo_epochs))
  opt_state = rl.init_opt_state(optimizer, params, param_shardings, mesh)
  train_step = rl.make_train_step(graphdef, rl_cfg, mesh, optimizer, param_shardings)
  ref_logprobs = None
  if float(rl_cfg.kl_coef) != 0.0:
    ref_params = jax.tree.map(lambda x: x.copy(), params)
    logprob_fn = rl.make_logprob_fn(graphdef, rl_cfg, mesh, param_shardings)
    ref_logprobs = lambda batch: logprob_fn(ref_params, batch)  # noqa: E731

  # TIP (config.rollout.tip_*): the thought-switch penalty of training rollouts and of evaluation (or None).
  tip = {where: penalties.from_config(config.rollout, tokenizer, where) for where in ("train", "eval")}
  sizes = sampler_sizes(config)
  rollout = groups_lib.GroupSampler(model, mesh, tokenizer, score, config, P=P, penalty=tip["train"],
                                    guide=bool(rl_cfg.guide), **sizes["train"])
  eval_rollout = groups_lib.GroupSampler(model, mesh, tokenizer, score, config, P=P, divisors=(1,),
                                         penalty=tip["eval"], **sizes["eval"])
  return Setup(mesh, model, model_cfg, tokenizer, problems, pipeline, scheduler, rl_cfg, graphdef, params,
               param_shardings, optimizer, opt_state, train_step, ref_logprobs, rollout, eval_rollout,
               deepconf.from_config(config.eval, int(config.eval.num_samples)), task)
