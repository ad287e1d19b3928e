"""A resume against the config it was started with: what may change, what may not, and the record.

A run writes DIR/config.json when it starts. A resume (a checkpoint was restored) compares the config it
is given with that file, key by key (dotted keys of the JSON form):

  harmless keys (HARMLESS below: logging and evaluation cadence, checkpoint cadence and retention, the
      stopping point, the skip-streak limit, the export, the reward workers) may change; each change is
      printed, appended to DIR/config_changes.jsonl ({"step", "time", "changes": {key: [old, new]},
      "overridden"}) and config.json is rewritten with the new values;
  num_steps is harmless only when nothing follows it: rl.lr_schedule "warmup_cosine" decays the learning
      rate over num_steps, and curriculum.mode "anneal" with anneal_steps = 0 anneals over it;
  every other key changes what the run computes (group size, curriculum mode, learning rate, model,
      data, evaluation set, ...): the resume is refused with a diff naming each key, its old and new value.

`python -m jaxghpo.main ... --allow_config_change` resumes anyway (a researcher who means it); the
changes are recorded with "overridden": true.
"""
from __future__ import annotations

import datetime
import json

from jaxghpo import paths
from jaxghpo.validation import StartupError

HARMLESS = frozenset({
    "log_every_steps", "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints",
    "max_skipped_updates_in_a_row", "export_at_end", "max_gen_tokens", "num_steps", "rewards.num_workers",
})
_ABSENT = "(absent)"


class ConfigChanged(StartupError):
  """A resume with keys that change the math; `refused` maps each key to (old, new)."""

  def __init__(self, message: str, refused: dict):
    super().__init__(message)
    self.refused = refused


def flatten(tree, prefix: str = "") -> dict:
  """{"rl.learning_rate": 1e-06, ...}: the leaves of a JSON object by dotted key."""
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(flatten(value, name + "."))
    else:
      out[name] = value
  return out


def config_tree(config) -> dict:
  """The JSON form of a ConfigDict, as config.json holds it (tuples become lists)."""
  return json.loads(config.to_json_best_effort())


def diff(saved: dict, current: dict) -> dict:
  """{dotted key: (old, new)} of every leaf that differs, was added or was removed."""
  old, new = flatten(saved), flatten(current)
  return {k: (old.get(k, _ABSENT), new.get(k, _ABSENT)) for k in sorted(set(old) | set(new))
          if old.get(k, _ABSENT) != new.get(k, _ABSENT)}


def num_steps_is_harmless(current: dict) -> tuple[bool, str]:
  """Whether changing num_steps leaves every step's math as it was (and why not)."""
  flat = flatten(current)
  if flat.get("rl.lr_schedule", "warmup_cosine") == "warmup_cosine":
    return False, "rl.lr_schedule='warmup_cosine' decays the learning rate over num_steps"
  if flat.get("curriculum.mode") == "anneal" and not flat.get("curriculum.anneal_steps"):
    return False, "curriculum.mode='anneal' with anneal_steps=0 anneals the hints over num_steps"
  return True, ""


def classify(changes: dict, current: dict) -> tuple[dict, dict, dict]:
  """(allowed, refused, reasons) of `changes`: reasons names why a key that is usually harmless is not."""
  allowed, refused, reasons = {}, {}, {}
  for key, change in changes.items():
    ok = key in HARMLESS
    if ok and key == "num_steps":
      ok, why = num_steps_is_harmless(current)
      if not ok:
        reasons[key] = why
    (allowed if ok else refused)[key] = change
  return allowed, refused, reasons


def _show(changes: dict, reasons: dict | None = None) -> str:
  return "; ".join(f"{k}: {old!r} -> {new!r}" + (f" ({reasons[k]})" if reasons and k in reasons else "")
                   for k, (old, new) in changes.items())


def check(config, workdir: str, step: int, *, allow: bool = False, is_main_process: bool = True) -> dict:
  """Compares `config` with workdir/config.json at a resume from `step`; returns the changes {key: (old, new)}.

  Raises ConfigChanged naming each refused key (unless `allow`). Allowed changes are printed and recorded by
  process 0 (config_changes.jsonl, config.json rewritten). No saved config.json: nothing to compare."""
  saved_path = paths.join(workdir, "config.json")
  if not paths.exists(saved_path):
    return {}
  current = config_tree(config)
  changes = diff(json.loads(paths.read_text(saved_path)), current)
  if not changes:
    return {}
  allowed, refused, reasons = classify(changes, current)
  if refused and not allow:
    raise ConfigChanged(
        f"resume of {workdir} at step {step}: {len(refused)} key(s) that change what the run computes differ from "
        f"its config.json: {_show(refused, reasons)}. Resume with the saved values, start a fresh --workdir, or "
        "pass --allow_config_change to resume with them anyway (recorded in config_changes.jsonl)", refused)
  if is_main_process:
    record(workdir, step, changes, overridden=bool(refused))
    paths.write_text(saved_path, config.to_json_best_effort(indent=2))
    what = "changed with --allow_config_change" if refused else "changed (harmless)"
    print(f"resume at step {step}: config {what}: {_show(changes)} (recorded in config_changes.jsonl)", flush=True)
  return changes


def record(workdir: str, step: int, changes: dict, overridden: bool) -> None:
  """Adds one line to workdir/config_changes.jsonl (the file is rewritten whole: gs:// has no append)."""
  path = paths.join(workdir, "config_changes.jsonl")
  before = paths.read_text(path) if paths.exists(path) else ""
  row = {"step": int(step), "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
         "changes": {k: [old, new] for k, (old, new) in changes.items()}, "overridden": overridden}
  paths.write_text(path, before + json.dumps(row) + "\n")


def read_changes(workdir: str) -> list[dict]:
  path = paths.join(workdir, "config_changes.jsonl")
  if not paths.exists(path):
    return []
  return [json.loads(line) for line in paths.read_text(path).splitlines() if line.strip()]
