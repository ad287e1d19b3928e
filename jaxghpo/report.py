"""The end-of-run report: DIR/summary.md, DIR/summary.json, DIR/curves.png and a few console lines.

    summary = train.Trainer(config, workdir).run()
    report.finish(workdir, config, summary)

Every number comes from the run's own files: DIR/metrics.jsonl (step 0 holds the evaluation before
training, steps 1..N the training metrics, and the rows of evaluation steps their eval/... keys) and
DIR/eval/*.jsonl (the completions, read by jaxghpo.diagnostics). `summarize(workdir)` returns the flat
dict that summary.json holds; tools/study.py reads the same dict for each of its runs.

Keys of the summary (T = before | after; S = easy | hard | ood, or whatever splits the run evaluated):
  pass@1/S/greedy/T, pass@1/S/sampled/T   without hints (sampled = avg@k over k samples at eval temperature)
  pass@1/S/.../T/level_L                  the same per level
  pass@k/S/sampled/T, eval_k              pass@k (unbiased) of the sampled evaluation and its k
  pass@1/S/hintR/sampled/T                with a hint of ratio R > 0
  valid_pass@1/S/sampled/T[/level_L]      answer right AND every written step valid (procedural tasks;
                                          the primary metric: no chance floor); pass@1 is the answer alone
  signal_yield/{hard,all}/{mean,first_quarter,last_quarter}   fraction of groups with non-zero advantage
  signal_yield/{valid_hard,valid_all}/...  the same, counting only groups with a VALID success
  hint_ratio/{all,hard}/{mean,q1,q2,q3,q4}                    mean hint ratio of the trained groups
  train_pass_rate/hard/{first_quarter,last_quarter}
  gen_tokens, steps, retries, time/steps_s (sum of time/step_s), time/wall_s (train.run's wall clock)
  complete (the run reached its last step or token budget and evaluated), diag/... (jaxghpo.diagnostics)
  budget_spent                            the budget's tokens spent (config.budget_rule; jaxghpo/budget.py)
  exact/level_L/<metric>/T                exact teacher-forced measures (the task's exact sets, evaluation/exact.py)
Values that a run cannot give (a split not evaluated, no hard groups drawn) are None.
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from jaxghpo import diagnostics, paths

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
CURVES_PNG = "curves.png"
_EVAL_KEY_RE = re.compile(r"eval/(?P<split>[^/]+)/hint(?P<ratio>[^/]+)/(?P<mode>[^/]+)/(?P<metric>.+)")
SPLIT_ORDER = ("easy", "hard", "ood")


# ------------------------------------------------------------------------------------ reading
def _number(value: Any) -> Any:
  """metrics.jsonl writes non-finite floats as strings; read them back as floats."""
  if isinstance(value, str) and value in ("nan", "inf", "-inf"):
    return float(value)
  return value


def read_metrics(workdir: str) -> list[dict]:
  """The rows of DIR/metrics.jsonl, one per step (a step written twice keeps its last row), by step."""
  path = paths.join(workdir, "metrics.jsonl")
  if not paths.exists(path):
    raise FileNotFoundError(f"{path} does not exist: is {workdir!r} the workdir of a run?")
  by_step: dict[int, dict] = {}
  for line in paths.read_text(path).splitlines():
    if line.strip():
      row = {k: _number(v) for k, v in json.loads(line).items()}
      by_step[int(row["step"])] = row
  return [by_step[s] for s in sorted(by_step)]


def eval_metrics(row: Mapping) -> dict[tuple[str, str, str, str], float]:
  """{(split, ratio, mode, metric): value} of a metrics row's eval/... keys."""
  out = {}
  for key, value in row.items():
    m = _EVAL_KEY_RE.fullmatch(key)
    if m:
      out[(m["split"], m["ratio"], m["mode"], m["metric"])] = value
  return out


def eval_rows(rows: Sequence[Mapping]) -> list[Mapping]:
  """The metrics rows that carry an evaluation (step 0 and every evaluated step), by step."""
  return [r for r in rows if any(k.startswith("eval/") for k in r)]


def _get(config, dotted: str, default=None):
  """config.a.b from a ConfigDict or a dict read from config.json; default when absent."""
  node = config
  for part in dotted.split("."):
    try:
      node = node[part]
    except (KeyError, TypeError, AttributeError):
      return default
  return node


def _load_config(workdir: str, config):
  if config is not None:
    return config
  path = paths.join(workdir, "config.json")
  if paths.exists(path):
    return json.loads(paths.read_text(path))
  return {}


def _series(rows: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of the training rows (step >= 1) that hold a finite `key`."""
  pairs = [(int(r["step"]), float(r[key])) for r in rows
           if int(r["step"]) >= 1 and isinstance(r.get(key), (int, float)) and math.isfinite(float(r[key]))]
  if not pairs:
    return np.zeros(0, np.int64), np.zeros(0)
  steps, values = zip(*pairs)
  return np.asarray(steps, np.int64), np.asarray(values, np.float64)


def _mean(values) -> float | None:
  values = np.asarray(values, np.float64)
  return float(values.mean()) if values.size else None


def quarter_means(values) -> list[float | None]:
  """Means of the four consecutive quarters of `values` (np.array_split: earlier quarters take the
  remainder); None for a quarter without values (runs of fewer than 4 steps)."""
  return [_mean(chunk) for chunk in np.array_split(np.asarray(values, np.float64), 4)]


def first_last_quarter(values) -> tuple[float | None, float | None]:
  """Means of the first and the last ceil(n/4) values (one value each for runs under 4 steps)."""
  values = np.asarray(values, np.float64)
  if not values.size:
    return None, None
  size = max(1, math.ceil(values.size / 4))
  return _mean(values[:size]), _mean(values[-size:])


# ------------------------------------------------------------------------------------ summary
def summarize(workdir: str, config=None, summary: Mapping | None = None, *,
              with_diagnostics: bool = True) -> dict[str, Any]:
  """The flat summary dict of a run (module docstring), from DIR/metrics.jsonl and DIR/eval/*.jsonl.

  config: the run's ConfigDict (None: DIR/config.json); summary: what Trainer.run returned (only its
  wall-clock time, "wall_s", is used: the files do not hold it).
  """
  config = _load_config(workdir, config)
  rows = read_metrics(workdir)
  train_rows = [r for r in rows if int(r["step"]) >= 1]
  evals = eval_rows(rows)
  out: dict[str, Any] = {
      "workdir": os.fspath(workdir),
      "mode": _get(config, "curriculum.mode"),
      "corruption": _get(config, "hints.corruption", "none"),
      "seed": _get(config, "seed"),
      "num_steps": _get(config, "num_steps"),
      "budget_tokens": _get(config, "max_gen_tokens", 0),
      "steps": int(train_rows[-1]["step"]) if train_rows else 0,
  }

  # Evaluation: before = step 0; after = the last evaluated step after training.
  before = eval_metrics(evals[0]) if evals and int(evals[0]["step"]) == 0 else {}
  after_row = next((r for r in reversed(evals) if int(r["step"]) > 0), None)
  after = eval_metrics(after_row) if after_row is not None else {}
  out["eval_step/before"] = 0 if before else None
  out["eval_step/after"] = int(after_row["step"]) if after_row is not None else None
  splits = sorted({k[0] for k in list(before) + list(after)},
                  key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))
  out["splits"] = splits
  k_values = sorted({int(m.split("@")[1]) for (_, _, mode, m) in list(before) + list(after)
                     if mode == "sampled" and re.fullmatch(r"pass@\d+", m) and m != "pass@1"})
  out["eval_k"] = k_values[0] if k_values else None
  for when, metrics in (("before", before), ("after", after)):
    for (split, ratio, mode, metric), value in metrics.items():
      if not metric.startswith(("pass@", "valid_pass@1")):
        continue
      head, _, level = metric.partition("/")
      name = (head if head in ("pass@1", "valid_pass@1")
              else ("pass@k" if head == f"pass@{out['eval_k']}" else None))
      if name is None:
        continue
      where = f"{split}/{mode}" if float(ratio) == 0.0 else f"{split}/hint{ratio}/{mode}"
      out[f"{name}/{where}/{when}" + (f"/{level}" if level else "")] = value
  # Exact teacher-forced measures (the task's exact sets; jaxghpo/evaluation/exact.py).
  step0 = evals[0] if evals and int(evals[0]["step"]) == 0 else None
  for when, row in (("before", step0), ("after", after_row)):
    for key, value in (row or {}).items():
      if key.startswith("eval/exact/"):
        out[f"exact/{key[len('eval/exact/'):]}/{when}"] = _number(value)
  for split in splits:
    for mode in ("greedy", "sampled"):
      for when in ("before", "after"):
        out.setdefault(f"pass@1/{split}/{mode}/{when}", None)

  # Learning signal and hints over the run.
  # The valid signal yield counts only groups with a valid success (lucky answers left out).
  for name, key in (("hard", "frac_groups_nonzero_adv/hard"), ("all", "frac_groups_nonzero_adv"),
                    ("valid_hard", "frac_groups_valid_signal/hard"), ("valid_all", "frac_groups_valid_signal")):
    _, values = _series(rows, key)
    first, last = first_last_quarter(values)
    out.update({f"signal_yield/{name}/mean": _mean(values), f"signal_yield/{name}/first_quarter": first,
                f"signal_yield/{name}/last_quarter": last})
  for name, key in (("all", "hint_ratio_mean"), ("hard", "hint_ratio_mean/hard")):
    _, values = _series(rows, key)
    out[f"hint_ratio/{name}/mean"] = _mean(values)
    for q, value in enumerate(quarter_means(values), 1):
      out[f"hint_ratio/{name}/q{q}"] = value
  _, hard_pass = _series(rows, "pass_rate/hard")
  out["train_pass_rate/hard/first_quarter"], out["train_pass_rate/hard/last_quarter"] = first_last_quarter(hard_pass)

  # Cost.
  _, budget_total = _series(rows, "budget_tokens_total")
  _, gen_total = _series(rows, "gen_tokens_total")
  _, gen_step = _series(rows, "gen_tokens")
  out["gen_tokens"] = float(gen_total[-1]) if gen_total.size else (float(gen_step.sum()) if gen_step.size else None)
  _, retries = _series(rows, "retries")
  out["retries"] = float(retries.sum()) if retries.size else 0.0
  _, step_s = _series(rows, "time/step_s")
  out["time/steps_s"] = float(step_s.sum()) if step_s.size else None
  out["time/wall_s"] = float(summary["wall_s"]) if summary and "wall_s" in summary else None
  # What config.max_gen_tokens counted (jaxghpo/budget.py; runs from before budget_tokens_total: generated).
  out["budget_spent"] = float(budget_total[-1]) if budget_total.size else out["gen_tokens"]
  budget = int(out["budget_tokens"] or 0)
  reached_end = out["steps"] == out["num_steps"] or (budget > 0 and (out["budget_spent"] or 0) >= budget)
  out["complete"] = bool(reached_end and after_row is not None and int(after_row["step"]) == out["steps"])

  if with_diagnostics:
    out.update({f"diag/{k}": v for k, v in diagnostics.run_diagnostics(workdir, task_of(config)).items()})
  return out


def eval_curve(rows: Sequence[Mapping], split: str = "hard", mode: str = "sampled",
               metric: str = "pass@1") -> list[tuple[int, float, float]]:
  """[(step, generated tokens so far, value)] of an unhinted eval metric at every evaluated step."""
  out = []
  for row in eval_rows(rows):
    value = row.get(f"eval/{split}/hint0/{mode}/{metric}")
    if isinstance(value, (int, float)):
      tokens = float(row.get("gen_tokens_total", 0.0)) if int(row["step"]) > 0 else 0.0
      out.append((int(row["step"]), tokens, float(value)))
  return out


# ------------------------------------------------------------------------------------ output
def fmt(value: Any, digits: int = 3) -> str:
  """A number for a table: None/NaN as "-", floats with `digits` decimals, ints with separators."""
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "-"
  if isinstance(value, bool):
    return "yes" if value else "no"
  if isinstance(value, (int, np.integer)):
    return f"{int(value):,}"
  if isinstance(value, float):
    return f"{value:.{digits}f}"
  return str(value)


def fmt_count(value: Any) -> str:
  """A count (tokens, completions, retries) with thousands separators; None as "-"."""
  return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{int(round(value)):,}"


def fmt_seconds(seconds: float | None) -> str:
  if seconds is None:
    return "-"
  m, s = divmod(int(round(seconds)), 60)
  return f"{m}m{s:02d}s" if m else f"{s}s"


def _delta(a, b) -> str:
  return "-" if a is None or b is None else f"{b - a:+.3f}"


def task_of(config):
  """The run's task (jaxghpo.data.tasks.task_for) from its ConfigDict or config.json dict; None when the config
  names none this code knows (a run from before the task interface: the generic diagnostics only)."""
  from jaxghpo.data import tasks  # noqa: PLC0415
  try:
    return tasks.task_for(config if hasattr(config, "data") else ml_collections.ConfigDict(config))
  except (KeyError, ValueError, TypeError, AttributeError):
    return None


def markdown(s: Mapping[str, Any], task=None) -> str:
  """summary.md from the summary dict."""
  k = s.get("eval_k")
  lines = [f"# Run summary: `{s['workdir']}`", "",
           f"curriculum mode **{s.get('mode')}** (hint corruption: {s.get('corruption')}), seed {s.get('seed')}, "
           f"{s['steps']} steps (configured {s.get('num_steps')}"
           + (f", token budget {fmt(s.get('budget_tokens'))}" if s.get("budget_tokens") else "") + "), "
           f"{fmt_count(s.get('gen_tokens'))} generated tokens (retries included), "
           f"wall time {fmt_seconds(s.get('time/wall_s'))} (training steps {fmt_seconds(s.get('time/steps_s'))})"
           + ("" if s.get("complete") else " — **the run did not reach its end; numbers are partial**"), "",
           "## answer pass@1 without hints (the answer alone), before -> after training", ""]
  splits = s.get("splits", [])
  greedy = any(s.get(f"pass@1/{sp}/greedy/{w}") is not None for sp in splits for w in ("before", "after"))
  kk = f"pass@{k or 'k'}"
  lines += [("greedy: one completion at temperature 0; " if greedy else "")
            + f"sampled: mean accuracy of {k or 'k'} samples (avg@k), and {kk}.", "",
            "| split |" + (" greedy before | greedy after |" if greedy else "")
            + f" sampled before | sampled after | change (sampled) | {kk} before | {kk} after |",
            "| --- |" + (" ---: | ---: |" if greedy else "") + " ---: | ---: | ---: | ---: | ---: |"]
  for split in splits:
    g0, g1 = s.get(f"pass@1/{split}/greedy/before"), s.get(f"pass@1/{split}/greedy/after")
    p0, p1 = s.get(f"pass@1/{split}/sampled/before"), s.get(f"pass@1/{split}/sampled/after")
    lines.append(f"| {split} |" + (f" {fmt(g0)} | {fmt(g1)} |" if greedy else "") + f" {fmt(p0)} | {fmt(p1)} "
                 f"| {_delta(p0, p1)} | {fmt(s.get(f'pass@k/{split}/sampled/before'))} "
                 f"| {fmt(s.get(f'pass@k/{split}/sampled/after'))} |")
  if any(key.startswith("valid_pass@1/") for key in s):
    lines += ["", "## valid pass@1 without hints (the primary metric), before -> after", "",
              "Answer right AND every written step valid (sampled at the eval temperature); beside it the "
              "answer alone (answer pass@1 above) and the share of right answers that are not valid traces (shortcuts).",
              "", "| split / level | valid before | valid after | change | answer pass@1 after | shortcut share after |",
              "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for split in s.get("splits", []):
      levels = sorted({key.rsplit("/", 1)[1] for key in s if key.startswith(f"valid_pass@1/{split}/sampled/")
                       and key.split("/")[-1].startswith("level_")}, key=lambda x: int(x.split("_")[1]))
      for suffix in [""] + [f"/{lv}" for lv in levels]:
        v0 = s.get(f"valid_pass@1/{split}/sampled/before{suffix}")
        v1 = s.get(f"valid_pass@1/{split}/sampled/after{suffix}")
        a1 = s.get(f"pass@1/{split}/sampled/after{suffix}")
        share = None if a1 is None or v1 is None or a1 <= 0 else max(0.0, 1.0 - v1 / a1)
        name = split + (f" {suffix[1:].replace('_', ' ')}" if suffix else " (all)")
        lines.append(f"| {name} | {fmt(v0)} | {fmt(v1)} | {_delta(v0, v1)} | {fmt(a1)} | {fmt(share)} |")
  hinted = sorted({key.split("/")[2] for key in s
                   if key.startswith("pass@1/") and key.split("/")[2].startswith("hint")})
  if hinted:
    lines += ["", "With a hint in the prompt (sampled answer pass@1, before -> after):", "",
              "| split | hint | before | after |", "| --- | --- | ---: | ---: |"]
    for split in s.get("splits", []):
      for h in hinted:
        b, a = s.get(f"pass@1/{split}/{h}/sampled/before"), s.get(f"pass@1/{split}/{h}/sampled/after")
        if b is not None or a is not None:
          lines.append(f"| {split} | {h[4:]} | {fmt(b)} | {fmt(a)} |")
  lines += ["", "## Learning signal (fraction of groups with non-zero advantage)", "",
            "| groups | mean over the run | first quarter | last quarter |", "| --- | ---: | ---: | ---: |"]
  for name in ("hard", "all", "valid_hard", "valid_all"):
    if name.startswith("valid") and s.get(f"signal_yield/{name}/mean") is None:
      continue  # a run without a trace checker
    lines.append(f"| {name.replace('valid_', 'with a valid success, ')} | {fmt(s.get(f'signal_yield/{name}/mean'))} "
                 f"| {fmt(s.get(f'signal_yield/{name}/first_quarter'))} "
                 f"| {fmt(s.get(f'signal_yield/{name}/last_quarter'))} |")
  lines += ["", "## Hint ratio over time (mean ratio of the trained groups, per quarter of the run)", "",
            "| groups | q1 | q2 | q3 | q4 | mean |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
  for name in ("all", "hard"):
    lines.append(f"| {name} | " + " | ".join(fmt(s.get(f"hint_ratio/{name}/q{q}")) for q in range(1, 5))
                 + f" | {fmt(s.get(f'hint_ratio/{name}/mean'))} |")
  lines += ["", f"Training pass rate on hard problems (final groups, hints included): first quarter "
            f"{fmt(s.get('train_pass_rate/hard/first_quarter'))}, last quarter "
            f"{fmt(s.get('train_pass_rate/hard/last_quarter'))}. Groups re-sampled with a longer hint: "
            f"{fmt_count(s.get('retries'))}."]
  lines += _diagnostics_markdown(s, task)
  lines += ["", f"![curves]({CURVES_PNG})", ""]
  return "\n".join(lines)


def _diagnostics_markdown(s: Mapping[str, Any], task=None) -> list[str]:
  lines: list[str] = task.diagnostics_markdown(s, fmt, fmt_count) if task is not None else []
  regress = [(mode, *(s.get(f"diag/regression/easy/{mode}/{key}")
                      for key in ("pass@1/before", "pass@1/after", "lost_frac", "gained_frac")))
             for mode in ("greedy", "sampled") if f"diag/regression/easy/{mode}/problems" in s]
  if regress:
    lines += ["", "## Regression on the easy levels (the same problems before and after)", "",
              "| evaluation | pass@1 before | pass@1 after | solved before, lost after | unsolved before, gained |",
              "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {m} | {fmt(b)} | {fmt(a)} | {fmt(lost)} | {fmt(gained)} |" for m, b, a, lost, gained in regress]
  votes = sorted({k.split("/")[2] for k in s if k.startswith("diag/vote/") and k.endswith("/after/maj_accuracy")})
  if votes:
    lines += ["", "## Majority voting over the sampled completions (no hint, after training)", "",
              "| split | mean single-sample accuracy | majority vote | confidence-filtered vote | online DeepConf vote "
              "| tokens saved |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for split in votes:
      conf = f"diag/confidence/{split}/hint0/sampled/after"
      lines.append(f"| {split} | {fmt(s.get(f'diag/vote/{split}/hint0/after/sample_accuracy'))} "
                   f"| {fmt(s.get(f'diag/vote/{split}/hint0/after/maj_accuracy'))} "
                   f"| {fmt(s.get(f'{conf}/conf_vote_accuracy'))} | {fmt(s.get(f'{conf}/online_vote_accuracy'))} "
                   f"| {fmt(s.get(f'{conf}/tokens_saved_frac'))} |")
    if not any(k.startswith("diag/confidence/") for k in s):
      lines += ["", "(Confidence-filtered voting needs per-token confidences in the evaluation rows; this run's "
                "rows carry none, so only plain majority voting is shown.)"]
  return lines


def console_lines(s: Mapping[str, Any]) -> list[str]:
  """A few lines for the end of a run."""
  steps = f"{s['steps']} step" + ("s" if s["steps"] != 1 else "")
  out = [f"summary ({s.get('mode')}, seed {s.get('seed')}, {steps}, {fmt_count(s.get('gen_tokens'))} tokens, "
         f"{fmt_seconds(s.get('time/wall_s') or s.get('time/steps_s'))})" + ("" if s.get("complete") else " [partial]")]
  splits = s.get("splits", [])
  greedy = any(s.get(f"pass@1/{sp}/greedy/{w}") is not None for sp in splits for w in ("before", "after"))
  out.append("  no hint, before -> after: valid pass@1 (answer and every step right) | answer pass@1"
             + (" | greedy answer pass@1" if greedy else ""))
  for split in splits:
    line = (f"    {split:<7} {fmt(s.get(f'valid_pass@1/{split}/sampled/before'))} -> "
            f"{fmt(s.get(f'valid_pass@1/{split}/sampled/after'))} | {fmt(s.get(f'pass@1/{split}/sampled/before'))}"
            f" -> {fmt(s.get(f'pass@1/{split}/sampled/after'))}")
    if greedy:
      line += (f" | {fmt(s.get(f'pass@1/{split}/greedy/before'))} -> "
               f"{fmt(s.get(f'pass@1/{split}/greedy/after'))}")
    out.append(line)
  out.append(f"  signal yield on hard groups: mean {fmt(s.get('signal_yield/hard/mean'))} (first quarter "
             f"{fmt(s.get('signal_yield/hard/first_quarter'))}, last {fmt(s.get('signal_yield/hard/last_quarter'))})")
  out.append("  hint ratio by quarter: " + " ".join(fmt(s.get(f"hint_ratio/all/q{q}"), 2) for q in range(1, 5)))
  sc = "diag/shortcut/hard/hint0/sampled"
  if f"{sc}/after/shortcut_rate" in s:
    out.append(f"  shortcut rate on hard (sampled, no hint): {fmt(s.get(f'{sc}/before/shortcut_rate'))} -> "
               f"{fmt(s.get(f'{sc}/after/shortcut_rate'))}")
  return out


def plot_curves(path: str, rows: Sequence[Mapping], s: Mapping[str, Any]) -> str:
  """curves.png: signal yield, hint ratio and hard training pass rate over steps, with eval markers."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure  # no pyplot: no global state, the Agg canvas draws the file

  fig = Figure(figsize=(13, 3.8))
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, 3)
  for key, label in (("frac_groups_nonzero_adv/hard", "hard groups"), ("frac_groups_nonzero_adv", "all groups")):
    steps, values = _series(rows, key)
    axes[0].plot(steps, values, marker=".", label=label)
  axes[0].set_title("learning-signal yield\n(groups with non-zero advantage)")
  for key, label in (("hint_ratio_mean/hard", "hard groups"), ("hint_ratio_mean", "all groups")):
    steps, values = _series(rows, key)
    axes[1].plot(steps, values, marker=".", label=label)
  axes[1].set_title("hint ratio of the trained groups")
  steps, values = _series(rows, "pass_rate/hard")
  axes[2].plot(steps, values, marker=".", color="tab:gray", label="training (final groups, hints included)")
  for mode, marker in (("sampled", "o"), ("greedy", "s")):
    curve = eval_curve(rows, "hard", mode)
    if curve:
      axes[2].plot([c[0] for c in curve], [c[2] for c in curve], marker=marker, linestyle="--",
                   label=f"eval without hint ({mode})")
  axes[2].set_title("pass rate on hard problems")
  for ax in axes:
    ax.set_xlabel("step")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.suptitle(f"{s.get('mode')} (seed {s.get('seed')}): {os.path.basename(os.path.normpath(s['workdir']))}",
               fontsize=9)
  fig.tight_layout()
  with paths.local_file(path) as local:
    fig.savefig(local, dpi=100)
  return path


def _jsonable(value: Any) -> Any:
  if isinstance(value, dict):
    return {k: _jsonable(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def finish(workdir: str, config=None, summary: Mapping | None = None, *, is_main_process: bool | None = None,
           console: bool = True) -> dict[str, Any]:
  """Writes summary.json, summary.md and curves.png into `workdir` and prints a short summary.

  Only the main process (jax.process_index() == 0 unless `is_main_process` says) reads and writes;
  the others return {}. Returns the summary dict (see `summarize`).
  """
  if is_main_process is None:
    import jax
    is_main_process = jax.process_index() == 0
  if not is_main_process:
    return {}
  s = summarize(workdir, config, summary)
  s["files"] = {"summary_md": SUMMARY_MD, "summary_json": SUMMARY_JSON, "curves_png": CURVES_PNG}
  plot_curves(paths.join(workdir, CURVES_PNG), read_metrics(workdir), s)
  paths.write_text(paths.join(workdir, SUMMARY_MD), markdown(s, task_of(_load_config(workdir, config))))
  # Atomic (paths.write_text): the study treats summary.json as "finished".
  paths.write_text(paths.join(workdir, SUMMARY_JSON),
                   json.dumps(_jsonable(s), indent=1, sort_keys=True, allow_nan=False))
  if console:
    print("\n".join(console_lines(s)), flush=True)
    print(f"  written: {paths.join(workdir, SUMMARY_MD)}, {SUMMARY_JSON}, {CURVES_PNG}", flush=True)
  return s
