"""Builds what a run needs from its config: mesh, policy, tokenizer, problems, rewards.

Kept apart from train.py so that the loop reads top-down and tools (evaluation, export, the
study) can build the same pieces without training.
"""
from __future__ import annotations

import dataclasses
import os

import jax
import jax.numpy as jnp
import ml_collections

from jaxghpo import derived, models, parallel, rewards
from jaxghpo.data import files as files_lib
from jaxghpo.data import tokenizer as tok_lib
from jaxghpo.data.example import Example
from jaxghpo.data.tasks import get_task

ASSETS = os.path.join(os.path.dirname(__file__), "assets")


def resolve_model_path(path: str) -> str:
  """"builtin:NAME" -> the directory of a model shipped in jaxghpo/assets/; anything else unchanged."""
  if path.startswith("builtin:"):
    name = path.split(":", 1)[1]
    out = os.path.join(ASSETS, name)
    if not os.path.isdir(out):
      raise FileNotFoundError(f"config.model.path={path!r}: no shipped model {name!r} in {ASSETS}; "
                              "make it with tools/make_base_policy.py")
    return out
  return path


def parse_levels(text) -> list[int]:
  if isinstance(text, (list, tuple)):
    return [int(x) for x in text]
  return [int(x) for x in str(text).split(",") if x.strip()]


@dataclasses.dataclass
class Problems:
  train: list[Example]
  eval_sets: dict[str, list[Example]]  # name -> problems (e.g. "easy", "hard", "ood")
  extract_answer: object  # completion -> answer string, for the exact-match reward (None: math-verify)
  load_report: object = None


def load_problems(config: ml_collections.ConfigDict) -> Problems:
  d, e = config.data, config.eval
  if d.source == "task":
    task = get_task(d.task)
    weights = {int(k): float(v) for k, v in d.train_levels.items()}
    train = task.generate("train", int(d.num_train), derived.seed(config, "train_problems"), levels=weights)
    eval_sets = {}
    for name, split, levels in (("easy", "test", e.easy_levels), ("hard", "test", e.hard_levels),
                                ("ood", "ood", e.ood_levels)):
      levels = parse_levels(levels)
      if levels:
        eval_sets[name] = task.generate(split, int(e.num_problems) * len(levels), derived.seed(config, "eval_problems"),
                                        levels=levels)
    return Problems(train, eval_sets, task.extract_answer)
  if d.source == "files":
    paths = [p for p in str(d.files).split(",") if p.strip()]
    if not paths:
      raise ValueError("config.data.source='files' needs config.data.files (comma-separated JSONL/Parquet paths)")
    train, reports = [], []
    for p in paths:
      exs, report = files_lib.load_file(p, fields=dict(d.fields), on_bad_row=d.on_bad_row)
      train.extend(exs)
      reports.append(report)
    eval_paths = [p for p in str(e.get("files", "") or "").split(",") if p.strip()]
    eval_sets = {}
    for p in eval_paths:
      exs, _ = files_lib.load_file(p, fields=dict(d.fields), on_bad_row=d.on_bad_row)
      eval_sets[os.path.splitext(os.path.basename(p))[0]] = exs[: int(e.num_problems)]
    return Problems(train, eval_sets, None, reports)
  raise ValueError(f"config.data.source={d.source!r} is not one of 'task', 'files'")


def load_policy(config, mesh):
  """(model placed on the mesh, model config, tokenizer)."""
  path = resolve_model_path(config.model.path)
  with jax.set_mesh(mesh):
    model, cfg = models.from_pretrained(path, dtype=jnp.dtype(config.model.dtype),
                                        param_dtype=jnp.dtype(config.model.param_dtype), mesh=mesh)
  tokenizer = tok_lib.load(config.model.tokenizer or path)
  return model, cfg, tokenizer


def make_mesh(config):
  return parallel.make_mesh(tuple(config.mesh.shape))


def reward_fn(config, problems: Problems):
  """(completions, answers) -> (total float32 [B], accuracy float32 [B])."""
  kwargs = {}
  if problems.extract_answer is not None:
    kwargs["extract"] = problems.extract_answer

  def score(completions, answers):
    total, accuracy, _ = rewards.combine(config.rewards, completions, answers, **kwargs)
    return total, accuracy

  return score


def validate(config, num_devices: int, num_processes: int) -> None:
  """Fails at start with a message naming the conflicting keys."""
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
  if G < 2 and config.mode == "rl":
    raise ValueError(f"config.rollout.group_size={G}: group-relative advantages need at least 2 samples")
  for key in ("num_steps", "checkpoint_every_steps", "seed"):
    if key not in config:
      raise ValueError(f"config.{key} is missing; every config needs num_steps, checkpoint_every_steps, seed")
  derived.check_not_set(config)


def check_prompt_room(config, problems: Problems, tokenizer) -> None:
  """max_prompt_len must hold the longest prompt with the longest hint the scheduler can ask for."""
  from jaxghpo import curriculum
  from jaxghpo.curriculum import hints as hints_lib
  from jaxghpo.data import templates
  top = curriculum.highest_ratio(config.curriculum)
  sample = sorted(problems.train, key=lambda ex: len(ex.solution) + len(ex.problem))[-64:]
  worst = 0
  for ex in sample:
    hint = hints_lib.cut(ex.steps, top, config.hints.unit, tokenizer=tokenizer, step_sep=ex.step_sep)
    r = templates.render(ex, hint, config.hints.placement, tokenizer, config.data.style)
    worst = max(worst, len(r.prompt_ids) + len(r.hint_ids))
  if worst > int(config.rollout.max_prompt_len):
    raise ValueError(f"config.rollout.max_prompt_len={config.rollout.max_prompt_len} is too short: the longest "
                     f"prompt with a hint at ratio {top:.2f} (config.curriculum ladder / max_ratio) needs {worst} "
                     "tokens; raise max_prompt_len")
