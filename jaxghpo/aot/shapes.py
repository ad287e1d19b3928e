"""A run's model shape without its weights: from a config.json, an HF dir, a builtin name, or the config file.

Real-model configs (configs/qwen25_math_7b_ghpo.py) carry a module-level MODEL_SHAPE (the HF config's
fields), so a 7B run can be estimated and compiled on a machine that holds no weights.
"""
from __future__ import annotations

import importlib.util
import json
import os

from jaxghpo import models
from jaxghpo.memory_estimate import run_model_config  # noqa: F401  (the run's dtypes, attention and remat)


def load_config_module(path: str):
  """The config file as a module (for its MODEL_SHAPE etc.); `path` may carry ':arg' like config_flags."""
  path = path.split(":", 1)[0]
  spec = importlib.util.spec_from_file_location("_shaped_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def resolve_model_config(config, model_config: str | None = None, module=None) -> models.ModelConfig:
  """--model_config (config.json, HF dir or builtin:NAME), else module.MODEL_SHAPE, else config.model.path."""
  if model_config:
    path = models.hf.resolve_model_path(model_config)
    if os.path.isfile(path):
      with open(path) as f:
        return models.ModelConfig.from_hf_dict(json.load(f), source=path)
    return models.load_config(path)
  shape = getattr(module, "MODEL_SHAPE", None) if module is not None else None
  if shape:
    return models.ModelConfig(**shape)
  path = models.hf.resolve_model_path(str(config.model.path))
  if not path or not os.path.isfile(os.path.join(path, "config.json")):
    raise ValueError(f"no model shape: config.model.path={config.model.path!r} has no config.json and the config "
                     "file defines no MODEL_SHAPE; pass --model_config=PATH/config.json (or an HF dir)")
  return models.load_config(path)


def check_positions(config, model_cfg: models.ModelConfig) -> None:
  """Fails when a sequence (prompt + new tokens, training or evaluation) is longer than the model's positions."""
  from jaxghpo import experiment
  for name, sizes in experiment.sampler_sizes(config).items():
    T = sizes["max_prompt_len"] + sizes["max_new_tokens"]
    if T > model_cfg.max_position_embeddings:
      raise ValueError(f"{name} sequences of {sizes['max_prompt_len']} + {sizes['max_new_tokens']} = {T} tokens are "
                       f"longer than the model's max_position_embeddings={model_cfg.max_position_embeddings} "
                       f"({model_cfg.model_type}); lower config.rollout.max_prompt_len / "
                       "max_new_tokens (or config.eval's), or use a model trained on longer positions")
