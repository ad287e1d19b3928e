"""The embedded experiment's comparison of arms run side by side: comparison.md / .png / .json.

Arms (arms.py) run at an equal token budget, one seed each; the pre-declared primary comparison is
unhinted valid pass@1 on the hard split after training, with a paired bootstrap over the fixed evaluation
problems (one seed: an interval over problems only; tools/study.py tests over seeds).
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import numpy as np

from jaxghpo import diagnostics, paths
from jaxghpo.report import (SUMMARY_JSON, _jsonable, _series, eval_curve, fmt, fmt_count,  # noqa: F401
                            read_metrics)

COMPARISON_MD = "comparison.md"
COMPARISON_PNG = "comparison.png"
COMPARISON_JSON = "comparison.json"


def per_problem_valid(workdir: str, split: str, step: int | None = None) -> dict[int, float] | None:
  """{problem_id: mean valid flag over its samples} of the unhinted sampled evaluation of `split` at
  `step` (None: the last evaluated step); None when the run has no such rows (or no trace checker)."""
  files = [f for f in diagnostics.list_eval_files(workdir)
           if f.split == split and float(f.hint_ratio) == 0.0 and f.mode == "sampled"]
  if step is not None:
    files = [f for f in files if f.step == step]
  if not files:
    return None
  rows = diagnostics.read_rows(max(files, key=lambda f: f.step).path)
  if not rows or "valid" not in rows[0]:
    return None
  return {int(r["problem_id"]): float(np.mean(r["valid"])) for r in rows}


def paired_bootstrap(a_SxP: Sequence[Sequence[float]], b_SxP: Sequence[Sequence[float]], *,
                     num_draws: int = 4000, seed: int = 0, confidence: float = 0.95) -> dict[str, float]:
  """Mean of b - a with a two-level paired bootstrap interval: seeds resampled, then problems.

  a_SxP, b_SxP: per seed (rows, paired by seed) the per-problem values of the same fixed problems
  (columns, paired by problem). Returns diff, low, high and p (two-sided bootstrap p-value of 0).
  """
  a, b = np.asarray(a_SxP, np.float64), np.asarray(b_SxP, np.float64)
  if a.shape != b.shape or a.ndim != 2 or a.size == 0:
    raise ValueError(f"paired_bootstrap needs two equal [seeds, problems] arrays; got {a.shape} and {b.shape}")
  d = b - a
  S, P = d.shape
  rng = np.random.default_rng(seed)
  si = rng.integers(0, S, size=(num_draws, S))
  pi = rng.integers(0, P, size=(num_draws, S, P))
  draws = d[si[..., None], pi].mean(axis=(1, 2))
  lo, hi = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
  p = 2 * min((draws <= 0).mean(), (draws >= 0).mean())
  return {"diff": float(d.mean()), "low": float(lo), "high": float(hi), "p": float(min(1.0, p)),
          "seeds": S, "problems": P}


def compare(workdir: str, runs: Mapping[str, str], *, labels: Mapping[str, str] | None = None,
            primary: tuple[str, str] = ("ghpo", "grpo"), console: bool = True) -> dict[str, Any]:
  """DIR/comparison.md, .png, .json: arms run side by side at an equal token budget (one seed each).

  runs: arm -> its workdir (each holds summary.json). The primary comparison (pre-declared): unhinted
  valid pass@1 on the hard split after training, primary[0] minus primary[1], with a paired
  bootstrap interval over the fixed evaluation problems.
  """
  labels = labels or {}
  summaries = {}
  for arm, d in runs.items():
    summaries[arm] = json.loads(paths.read_text(paths.join(d, SUMMARY_JSON)))
  splits = [s for s in ("easy", "mid", "hard", "ood", "ood_ops")
            if any(f"valid_pass@1/{s}/sampled/after" in s_ for s_ in summaries.values())]
  lines = ["# Arms side by side at an equal budget of generated tokens", "",
           "valid pass@1: answer right AND every written step valid (sampled, no hint, fixed evaluation set); "
           "before -> after. Signal yield: fraction of hard groups with non-zero advantage (with a valid success).", "",
           "| arm | steps | generated tokens | " + " | ".join(f"{s} valid" for s in splits)
           + " | hard answer pass@1 | signal yield hard (valid) | hint ratio hard |",
           "| --- | ---: | ---: | " + " | ".join("---:" for _ in splits) + " | ---: | ---: | ---: |"]
  for arm, s in summaries.items():
    cells = [f"{fmt(s.get(f'valid_pass@1/{sp}/sampled/before'))} -> {fmt(s.get(f'valid_pass@1/{sp}/sampled/after'))}"
             for sp in splits]
    lines.append(f"| {labels.get(arm, arm)} | {s.get('steps')} | {fmt_count(s.get('gen_tokens'))} | " + " | ".join(cells)
                 + f" | {fmt(s.get('pass@1/hard/sampled/after'))} | {fmt(s.get('signal_yield/hard/mean'))} "
                 f"({fmt(s.get('signal_yield/valid_hard/mean'))}) | {fmt(s.get('hint_ratio/hard/mean'))} |")
  out: dict[str, Any] = {"arms": list(runs), "summaries": summaries}
  a_arm, b_arm = primary[1], primary[0]
  if a_arm in runs and b_arm in runs:
    a, b = per_problem_valid(runs[a_arm], "hard"), per_problem_valid(runs[b_arm], "hard")
    if a and b and set(a) == set(b):
      ids = sorted(a)
      boot = paired_bootstrap([[a[i] for i in ids]], [[b[i] for i in ids]])
      out["primary"] = boot
      lines += ["", f"**Primary comparison** (declared before running): unhinted valid pass@1 on hard levels after "
                f"training, {labels.get(b_arm, b_arm)} minus {labels.get(a_arm, a_arm)}: {boot['diff']:+.3f} "
                f"(95% paired bootstrap over {boot['problems']} problems, one seed: [{boot['low']:+.3f}, "
                f"{boot['high']:+.3f}]). One seed: the interval is over problems only, not over training runs."]
  _plot_compare(paths.join(workdir, COMPARISON_PNG), runs, labels)
  paths.write_text(paths.join(workdir, COMPARISON_MD), "\n".join(lines) + f"\n\n![curves]({COMPARISON_PNG})\n")
  paths.write_text(paths.join(workdir, COMPARISON_JSON), json.dumps(_jsonable(out), indent=1, sort_keys=True))
  if console:
    print("\n".join(lines[4:]), flush=True)
    print(f"  written: {paths.join(workdir, COMPARISON_MD)}, {COMPARISON_PNG}", flush=True)
  return out


def _plot_compare(path: str, runs: Mapping[str, str], labels: Mapping[str, str]) -> str:
  """comparison.png: hard valid pass@1 (no hint) against generated tokens, and the valid signal yield."""
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure

  fig = Figure(figsize=(11, 3.8))
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, 2)
  for arm, d in runs.items():
    rows = read_metrics(d)
    curve = eval_curve(rows, "hard", "sampled", "valid_pass@1")
    if curve:
      axes[0].plot([c[1] for c in curve], [c[2] for c in curve], marker="o", label=labels.get(arm, arm))
    _, tokens = _series(rows, "gen_tokens_total")
    _, ys = _series(rows, "frac_groups_valid_signal/hard")
    if ys.size and tokens.size == ys.size:
      axes[1].plot(tokens, ys, marker=".", label=labels.get(arm, arm))
  axes[0].set_title("hard levels: valid pass@1 without hint")
  axes[1].set_title("hard groups with a valid success and\nnon-zero advantage (per step)")
  for ax in axes:
    ax.set_xlabel("generated tokens (retries included)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  fig.tight_layout()
  with paths.local_file(path) as local:
    fig.savefig(local, dpi=100)
  return path
