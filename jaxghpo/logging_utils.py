"""Metrics out of the loop: DIR/metrics.jsonl, TensorBoard scalars, a console progress line.

    deferred = DeferredMetrics()
    writer = MetricWriter(workdir, is_main_process=jax.process_index() == 0, total_steps=cfg.num_steps,
                          resume_step=restored_step)     # drops rows a killed run wrote after its checkpoint
    for step in ...:
      params, opt_state, device_metrics = train_step(...)
      done = deferred.push(step, device_metrics, host_metrics)   # step - 1's metrics, as Python numbers
      if done:
        writer.write(*done)
    if (done := deferred.flush()):
      writer.write(*done)
    writer.close()

metrics.jsonl holds one JSON object per write(), ``{"step": s, ...}``, values as Python numbers;
NaN and infinities are written as the strings "nan", "inf", "-inf" so every line is valid JSON.
The workdir may be a URI (gs://...; see paths.py): an object store cannot append, so there the file
is rewritten whole at every write (a small file: a few KB per step).
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np

from jaxghpo import disk_full, paths

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
DEFAULT_PROGRESS_KEYS = ("reward_mean", "accuracy_mean", "hint_ratio_mean", "pg_loss")


# ------------------------------------------------------------------------------- value conversion
def _float(x: float) -> float | str:
  return x if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))


def to_python(value: Any, name: str = "value") -> Any:
  """A metric value as JSON-able Python: numbers (non-finite floats as strings), bools, str, lists.

  numpy and jax scalars or size-1 arrays become int/float/bool; larger arrays become (nested) lists.
  A jax array is fetched from the device here (this blocks until it is computed).
  """
  if value is None or isinstance(value, (str, bool)):
    return value
  if isinstance(value, int):
    return value
  if isinstance(value, float):
    return _float(value)
  if isinstance(value, (np.ndarray, np.generic, jax.Array)):
    arr = np.asarray(value)
    if arr.dtype == object:
      raise TypeError(f"metric {name!r}: object arrays cannot be written; use numbers")
    if arr.size == 1:
      item = arr.reshape(()).item()
      return _float(item) if isinstance(item, float) else item
    return [to_python(v, name) for v in arr]
  if isinstance(value, (list, tuple)):
    return [to_python(v, name) for v in value]
  raise TypeError(f"metric {name!r} has type {type(value).__name__}; write numbers, arrays, bools or strings")


def _scalar_for_tensorboard(value: Any) -> float | None:
  """A number TensorBoard can plot, or None for strings, lists and None."""
  if isinstance(value, bool):
    return float(value)
  if isinstance(value, (int, float)):
    return float(value)
  if isinstance(value, str) and value in ("nan", "inf", "-inf"):
    return float(value)
  return None


_TAG_ILLEGAL = re.compile(r"[^A-Za-z0-9_.\-/]")


def tensorboard_tag(key: str) -> str:
  """A metric key as a legal TensorBoard tag ([A-Za-z0-9_.-/]): "pass@1" -> "pass_at_1", others -> "_".

  TensorBoard renames an illegal tag itself, with an INFO line per tag and write; naming it here keeps the
  console quiet and the name predictable."""
  return _TAG_ILLEGAL.sub("_", key.replace("@", "_at_"))


def _format_number(x: Any) -> str:
  if isinstance(x, float):
    return f"{x:.4g}"
  return str(x)


def _format_seconds(seconds: float) -> str:
  seconds = int(round(seconds))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


# ----------------------------------------------------------------------------------- the writer
class MetricWriter:
  """Writes one row of metrics per step to ``workdir/metrics.jsonl``, TensorBoard and the console.

  is_main_process: only the main process (jax.process_index() == 0) writes; others do nothing.
  total_steps: for the progress line's percentage and ETA (None: neither is shown).
  token_budget: config.max_gen_tokens when set (None or 0: none): the progress line shows the tokens
    spent against it (row key budget_tokens_total: config.budget_rule's count; gen_tokens_total in rows
    without it), and the ETA is to whichever ends the run first.
  tensorboard: write scalar event files under ``workdir/tensorboard`` (tensorboardX).
  progress: console output. On a terminal (stderr is a tty) a progress line on stderr redrawn in
    place; otherwise one plain summary line on stdout every ``print_every`` steps (and the last).
  progress_keys: the metrics shown on the console, when present in a row.
  resume_step: a resumed run passes the step it restored: rows with step > resume_step (written by
    the run that was stopped, after its checkpoint) are removed first, so the file has no duplicate
    steps, and TensorBoard purges its events after that step. None keeps every existing row.
  """

  def __init__(self, workdir: str | os.PathLike, *, is_main_process: bool = True, total_steps: int | None = None,
               tensorboard: bool = True, progress: bool = True, print_every: int = 10,
               progress_keys: tuple[str, ...] = DEFAULT_PROGRESS_KEYS, resume_step: int | None = None,
               token_budget: int | None = None):
    if print_every < 1:
      raise ValueError(f"print_every={print_every} must be >= 1")
    self.active = bool(is_main_process)
    self.path = paths.join(workdir, METRICS_FILE)
    self._remote = paths.is_remote(workdir)
    self._lines: list[str] = []  # a remote file's content (rewritten whole at each write)
    self.total_steps = total_steps
    self.token_budget = int(token_budget) if token_budget else None
    self._tokens_first: float | None = None  # gen_tokens_total of the first row that had it, and when
    self._t_tokens_first = 0.0
    self.print_every = int(print_every)
    self.progress = progress
    self.progress_keys = tuple(progress_keys)
    self._file = None
    self._tb = None
    self._t_first: float | None = None
    self._step_first: int | None = None
    self._drawn = False  # a progress line is on the terminal and needs a newline before other output
    if not self.active:
      return
    paths.makedirs(workdir)
    if resume_step is not None:
      self.truncate_after(resume_step)
    if self._remote:
      self._lines = paths.read_text(self.path).splitlines(keepends=True) if paths.exists(self.path) else []
    else:
      self._file = open(self.path, "a", encoding="utf-8")
    if tensorboard:
      purge = None if resume_step is None else int(resume_step) + 1
      self._tb = paths.tensorboard_writer(paths.join(workdir, TENSORBOARD_DIR), purge_step=purge)

  # --- file maintenance
  def truncate_after(self, step: int) -> int:
    """Removes rows with step > ``step`` (and unreadable lines a kill may leave); returns how many."""
    if not self.active or not paths.exists(self.path):
      return 0
    kept, removed = [], 0
    for line in paths.read_text(self.path).splitlines(keepends=True):
      try:
        row = json.loads(line)
        keep = isinstance(row, dict) and int(row["step"]) <= step
      except (ValueError, KeyError, TypeError):
        keep = False  # a half-written last line from a killed run
      if keep:
        kept.append(line if line.endswith("\n") else line + "\n")
      else:
        removed += 1
    if removed:
      paths.write_text(self.path, "".join(kept))  # atomic: a kill here leaves the old or the new file, never half
    return removed

  # --- writing
  def write(self, step: int, metrics: Mapping[str, Any]) -> dict:
    """Writes one row ``{"step": step, **metrics}`` and returns it as written (Python values)."""
    step = int(step)
    if "step" in metrics and int(to_python(metrics["step"], "step")) != step:
      raise ValueError(f"metrics['step']={metrics['step']} differs from step={step}")
    row = {"step": step}
    for key, value in metrics.items():
      if key != "step":
        row[str(key)] = to_python(value, str(key))
    if not self.active:
      return row
    line = json.dumps(row, allow_nan=False) + "\n"
    if self._remote:
      self._lines.append(line)
      paths.write_text(self.path, "".join(self._lines))
    else:
      with disk_full.writing(self.path, len(line.encode("utf-8"))):
        self._file.write(line)
        self._file.flush()
    if self._tb is not None:
      for key, value in row.items():
        number = _scalar_for_tensorboard(value)
        if key != "step" and number is not None:
          self._tb.add_scalar(tensorboard_tag(key), number, step)
    if self.progress:
      self._console(step, row)
    return row

  def _console(self, step: int, row: dict) -> None:
    now = time.perf_counter()
    tokens = row.get("budget_tokens_total", row.get("gen_tokens_total"))  # the budget's tokens (jaxghpo/budget.py)
    tokens = float(tokens) if isinstance(tokens, (int, float)) else None
    if self._t_first is None:
      self._t_first, self._step_first = now, step
    if self._tokens_first is None and tokens is not None:
      self._tokens_first, self._t_tokens_first = tokens, now
    done = step - self._step_first
    elapsed = now - self._t_first
    rate = done / elapsed if done > 0 and elapsed > 0 else None
    parts = [f"step {step}" + (f"/{self.total_steps}" if self.total_steps else "")]
    if self.total_steps and not self.token_budget:
      parts[0] += f" ({100.0 * step / self.total_steps:.0f}%)"
    etas = []
    if self.total_steps and rate:
      etas.append(max(self.total_steps - step, 0) / rate)
    if self.token_budget and tokens is not None:
      parts.append(f"tokens {int(tokens):,}/{self.token_budget:,} ({min(100.0, 100.0 * tokens / self.token_budget):.0f}%)")
      spent, took = tokens - self._tokens_first, now - self._t_tokens_first
      if spent > 0 and took > 0:
        etas.append(max(self.token_budget - tokens, 0.0) / (spent / took))
    parts.append(f"{rate:.3g} step/s" if rate else "- step/s")
    if etas:
      parts.append(f"ETA {_format_seconds(min(etas))}")
    parts += [f"{k}={_format_number(row[k])}" for k in self.progress_keys if k in row]
    line = " | ".join(parts)
    if sys.stderr.isatty():
      sys.stderr.write("\r\x1b[2K" + line)  # carriage return + clear line: redraw in place
      sys.stderr.flush()
      self._drawn = True
    elif (step % self.print_every == 0 or (self.total_steps is not None and step >= self.total_steps)
          or (self.token_budget and tokens is not None and tokens >= self.token_budget)):
      print(line, file=sys.stdout, flush=True)

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Flushes and closes the file and event writer; ends the progress line."""
    if self._drawn:
      sys.stderr.write("\n")
      sys.stderr.flush()
      self._drawn = False
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> "MetricWriter":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_metrics(workdir: str | os.PathLike) -> list[dict]:
  """The rows of ``workdir/metrics.jsonl`` (non-finite strings left as written)."""
  text = paths.read_text(paths.join(workdir, METRICS_FILE))
  return [json.loads(line) for line in text.splitlines() if line.strip()]


# ------------------------------------------------------------------------------ one step late
def _start_transfer(tree) -> None:
  """Starts device->host copies without waiting, so the later fetch finds the data on the host."""
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array):
      try:
        leaf.copy_to_host_async()
      except Exception:  # noqa: BLE001 - an optimisation only; device_get later still works
        pass


def fetch_to_host(metrics: Mapping[str, Any]) -> dict:
  """Device metrics -> Python numbers (blocks until they are computed). Module-level so tests can count it."""
  host = jax.device_get(dict(metrics))
  return {str(k): to_python(v, str(k)) for k, v in host.items()}


class DeferredMetrics:
  """Keeps step t's device metrics unfetched; hands back step t-1's as Python numbers.

  The host dispatches step t, then fetches step t-1's metrics, which are done by then (or nearly):
  it never waits for the step the device is running. host_metrics (timings, scheduler numbers:
  plain Python values known on the host) ride along and are merged into the same row.
  """

  def __init__(self):
    self._pending: tuple[int, Mapping[str, Any], Mapping[str, Any]] | None = None

  def push(self, step: int, device_metrics: Mapping[str, Any],
           host_metrics: Mapping[str, Any] | None = None) -> tuple[int, dict] | None:
    """Holds step's metrics; returns (previous step, its metrics) or None at the first push."""
    _start_transfer(device_metrics)
    previous = self._pending
    self._pending = (int(step), device_metrics, dict(host_metrics or {}))
    return None if previous is None else self._resolve(previous)

  def flush(self) -> tuple[int, dict] | None:
    """The held step's metrics (blocks until computed), or None; nothing is held afterwards."""
    previous, self._pending = self._pending, None
    return None if previous is None else self._resolve(previous)

  @staticmethod
  def _resolve(entry) -> tuple[int, dict]:
    step, device_metrics, host_metrics = entry
    out = fetch_to_host(device_metrics)
    for key, value in host_metrics.items():
      out[str(key)] = to_python(value, str(key))
    return step, out
