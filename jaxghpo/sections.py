"""One config section over its defaults: the merge that every module-level config (rl, curriculum) uses.

    out = sections.override(default_config(), given, "rl config")   # KeyError names unknown keys
"""
from __future__ import annotations

from typing import Callable, Mapping

import ml_collections


def override(defaults: ml_collections.ConfigDict, given, name: str,
             convert: Mapping[str, Callable] | None = None) -> ml_collections.ConfigDict:
  """`defaults` with every key of `given` (a ConfigDict, dict or None) set over it; convert[key] maps a
  given value first (e.g. a list to a tuple). A key the defaults lack is a KeyError naming it and the
  known keys (a misspelt key would otherwise be ignored without a word)."""
  values = given.to_dict() if hasattr(given, "to_dict") else dict(given or {})
  unknown = sorted(set(values) - set(defaults.keys()))
  if unknown:
    raise KeyError(f"{name} has unknown key(s) {unknown}; known keys: {sorted(defaults.keys())}")
  for key, value in values.items():
    defaults[key] = convert[key](value) if convert and key in convert else value
  return defaults
