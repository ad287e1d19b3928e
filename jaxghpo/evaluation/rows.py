"""Evaluation rows on disk: one JSON line per problem, in DIR/eval/{split}_step{step}_hint{ratio}_{mode}.jsonl.

The report, the diagnostics and the study read these files by name (eval_rows_path): keep the names.
"""
from __future__ import annotations

import json
import math
import os
from typing import Mapping, Sequence

import numpy as np

from jaxghpo import paths


def jsonable(x):
  """x with numpy values as Python ones and non-finite floats as "nan" / "inf" / "-inf" (strict JSON)."""
  if isinstance(x, dict):
    return {str(k): jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [jsonable(v) for v in x]
  if isinstance(x, np.ndarray):
    return jsonable(x.tolist())
  if isinstance(x, np.generic):
    x = x.item()
  if isinstance(x, float) and not math.isfinite(x):
    return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
  return x


def eval_rows_path(workdir: str | os.PathLike, split: str, step: int, hint_ratio: float = 0.0,
                   tag: str = "") -> str:
  """DIR/eval/{split}_step{step:06d}_hint{hint_ratio:.2f}{_tag}.jsonl."""
  name = f"{split}_step{int(step):06d}_hint{float(hint_ratio):.2f}" + (f"_{tag}" if tag else "") + ".jsonl"
  return paths.join(workdir, "eval", name)


def write_rows(path: str | os.PathLike, rows: Sequence[Mapping]) -> str:
  """Writes rows as JSON lines (parent folders created; replaced atomically; `path` may be a URI, see
  paths.py). Call on process 0 only."""
  path = os.fspath(path)
  paths.write_text(path, "".join(json.dumps(jsonable(dict(row)), allow_nan=False) + "\n" for row in rows))
  return path
