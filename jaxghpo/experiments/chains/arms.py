"""Named arms of the embedded experiment, and running several of them side by side in one command.

An arm is a set of config overrides (dotted key -> value). `config.arms = "ghpo,grpo"` makes
`python -m jaxghpo.main --config=... --workdir=DIR` run each arm in DIR/ARM, one after another, from
the same base policy, problems and seed, each until it has generated config.max_gen_tokens tokens
(retries included: an equal budget), then write DIR/comparison.md and DIR/comparison.png
(compare.compare). tools/study.py runs the same arms over seeds. `python -m jaxghpo.main` calls
run_side_by_side with train.run when config.arms names arms; the trainer itself never imports this module.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

GHPO = {"curriculum.mode": "ghpo", "curriculum.ladder": (0.25, 0.5, 0.75), "curriculum.ladder_kind": "ratios",
        "hints.corruption": "none"}
RESPONSE = {"hints.placement": "response"}
ARMS: dict[str, dict[str, Any]] = {
    "grpo": {"curriculum.mode": "none", "hints.corruption": "none"},
    # GRPO rewarded for a valid trace (every step right), not for the answer alone: shortcuts earn nothing.
    "grpo_valid": {"curriculum.mode": "none", "hints.corruption": "none", "rewards.weights": {"valid_trace": 1.0}},
    "filter": {"curriculum.mode": "filter", "hints.corruption": "none"},
    "ghpo": dict(GHPO),
    "ghpo_steps": {**GHPO, "curriculum.ladder_kind": "steps"},
    "ghpo_response": {**GHPO, **RESPONSE},
    "adaptive": {"curriculum.mode": "adaptive", "hints.corruption": "none"},
    # The mechanism test (E2): adaptive plus GHPO's in-step ladder; adaptive whose hints grow only after a
    # group with 0 of G successes (GHPO's trigger on the adaptive schedule).
    "adaptive_retry": {"curriculum.mode": "adaptive", "curriculum.adaptive_retry": True, "hints.corruption": "none"},
    "adaptive_fail": {"curriculum.mode": "adaptive", "curriculum.adaptive_raise": "all_fail", "hints.corruption": "none"},
    "anneal": {"curriculum.mode": "anneal", "hints.corruption": "none"},
    # UFT: hint length ~ Binomial(n, p(t)) annealed to 0, response placement, a likelihood term on the hint.
    "uft": {"curriculum.mode": "anneal", "curriculum.anneal_random": True, "hints.corruption": "none",
            **RESPONSE, "rl.hint_nll_coef": 1.0},
    "ghpo_other": {**GHPO, "hints.corruption": "other"},
    "ghpo_shuffle": {**GHPO, "hints.corruption": "shuffle"},
    "ghpo_garble": {**GHPO, "hints.corruption": "garble"},
    # The frontier experiment's hinted arms (configs/frontier.py; README, "Frontier experiment (E1)").
    # GHPO's trigger with response-placed hints trained by likelihood (UFT's term on GHPO's hints).
    "ghpo_nll": {**GHPO, **RESPONSE, "rl.hint_nll_coef": 1.0},
    # A backward curriculum (R3 / AdaBack): adaptive, response placement, every problem starts at half its
    # trace and the hint fades as the problem is learned; no likelihood term.
    "backfade": {"curriculum.mode": "adaptive", "curriculum.initial_ratio": 0.5, "hints.corruption": "none",
                 **RESPONSE, "rl.hint_nll_coef": 0.0},
    # Guide-GRPO (arXiv 2506.13923): GHPO's trigger, hinted samples trained in the unhinted context with the
    # ratio against the hinted sampling distribution (rl.guide; docs/DESIGN.md, "The Guide loss").
    "guide": {**GHPO, "rl.guide": True},
}
ARM_LABELS = {"grpo": "GRPO (no hints)", "grpo_valid": "GRPO, valid-trace reward", "filter": "DAPO filter",
              "ghpo": "GHPO 0.25/0.5/0.75",
              "ghpo_steps": "GHPO step ladder", "ghpo_response": "GHPO, hint as response prefix",
              "adaptive": "adaptive", "adaptive_retry": "adaptive + GHPO ladder",
              "adaptive_fail": "adaptive, raised only after 0 of G", "anneal": "anneal", "uft": "UFT (anneal + hint NLL)",
              "ghpo_other": "GHPO, other problem's trace", "ghpo_shuffle": "GHPO, shuffled steps",
              "ghpo_garble": "GHPO, earlier hint lines garbled", "ghpo_nll": "GHPO, response hint + NLL",
              "backfade": "backward fade (adaptive, response)", "guide": "Guide (hinted samples, unhinted context)"}


def parse_arms(arms_or_text) -> list[str]:
  """The arm names of config.arms (a tuple; a comma-separated string from a command-line flag also reads)."""
  items = arms_or_text.split(",") if isinstance(arms_or_text, str) else list(arms_or_text)
  arms = [str(a).strip() for a in items if str(a).strip()]
  unknown = [a for a in arms if a not in ARMS]
  if unknown or not arms:
    raise ValueError(f"arms {arms_or_text!r}: unknown arms {unknown}; choose from {list(ARMS)}")
  return arms


def set_dotted(config, key: str, value) -> None:
  """config.a.b = value for key "a.b"; an unknown key is an error that names it."""
  *path, leaf = key.split(".")
  node = config
  for part in path:
    if part not in node:
      raise KeyError(f"override {key!r}: config has no {part!r} (under {'.'.join(path) or 'the top level'})")
    node = node[part]
  if leaf not in node:
    raise KeyError(f"override {key!r}: config has no key {leaf!r}; known: {sorted(node.keys())}")
  node[leaf] = value


def arm_config(config, arm: str):
  """A copy of `config` with the arm's overrides and no `arms` of its own."""
  c = copy.deepcopy(config)
  with c.unlocked():
    c.arms = ()
    for key, value in ARMS[arm].items():
      set_dotted(c, key, value)
  return c


def run_side_by_side(config, workdir: str, run_arm: Callable[..., dict], allow_config_change: bool = False) -> dict:
  """Runs each arm of config.arms in workdir/ARM with run_arm(arm config, arm workdir, allow_config_change=...) (the
  entry point passes train.run), then compare.compare of all of them.

  A stop signal (SIGTERM, SIGINT) ends the arm it came in (saved) and the command: a rerun of the same
  command skips the finished arms, resumes that one, runs the rest and compares. Several processes: every
  process trains every arm; the comparison is written by process 0 while the others wait for it at an
  agreed barrier (its outcome is shared, so an error there stops every process)."""
  from jaxghpo import paths
  from jaxghpo.experiments.chains import compare
  arms = parse_arms(config.arms)
  if not int(config.max_gen_tokens):
    raise ValueError("config.arms compares arms at an equal budget of generated tokens: set config.max_gen_tokens > 0")
  out = {}
  for arm in arms:
    print(f"== arm {arm} ({ARM_LABELS[arm]}): {paths.join(workdir, arm)}", flush=True)
    out[arm] = run_arm(arm_config(config, arm), paths.join(workdir, arm), allow_config_change=allow_config_change)
    if out[arm].get("stop_reason") in ("SIGTERM", "SIGINT"):
      out["stop_reason"] = out[arm]["stop_reason"]
      print(f"arms: {out['stop_reason']} in arm {arm}: rerun the same command to resume it, run the remaining "
            "arms and compare", flush=True)
      return out
  runs = {arm: paths.join(workdir, arm) for arm in arms}
  out["comparison"] = on_process_zero("arms_compare", lambda: compare.compare(workdir, runs, labels=ARM_LABELS))
  return out


def on_process_zero(name: str, fn):
  """fn() on process 0 (its result; None elsewhere) while the other processes wait at an agreed barrier.
  The outcome is shared: an error on process 0 is raised on every process, naming it."""
  import jax
  from jaxghpo.parallel import hosts
  if jax.process_count() == 1:
    return fn()
  result, error = None, None
  if jax.process_index() == 0:
    try:
      result = fn()
    except Exception as e:  # pylint: disable=broad-except  (raised below, on every process)
      error = e
  outcome = hosts.allgather_json(None if error is None else f"{type(error).__name__}: {error}")[0]  # the barrier
  if error is not None:
    raise error
  if outcome is not None:
    raise RuntimeError(f"{name} failed on process 0: {outcome}")
  return result
