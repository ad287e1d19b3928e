"""The hostile-input table: each bad case goes through the start-up path of `python -m jaxghpo.main` (the
workdir check, then train.run up to the first step), and the one line a user sees is collected into
docs/hostile_inputs.md. The test fails when the committed file differs from what the code prints now;
JAXGHPO_UPDATE_DOCS=1 rewrites it."""
import json
import os


from jaxghpo import memory_check, train, validation
from tests.test_faults_data import default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "hostile_inputs.md")
FIXED_MEMORY = (16 * 10**9, "host RAM available")  # the table's device, so the line does not depend on the machine

# (case, what is done to the README's config (configs/default.py, arms=), workdir kind)
CASES = [
    ("a negative token budget", {"max_gen_tokens": -5}, "dir"),
    ("a negative KL coefficient", {"rl.kl_coef": -1.0}, "dir"),
    ("a negative Adam epsilon", {"rl.adam_eps": -1.0}, "dir"),
    ("Adam's b2 above 1", {"rl.b2": 1.5}, "dir"),
    ("a NaN learning rate", {"rl.learning_rate": float("nan")}, "dir"),
    ("a group of one sample", {"rollout.group_size": 1}, "dir"),
    ("more evaluation samples than a group holds", {"eval.num_samples": 99}, "dir"),
    ("top_p of 0", {"rollout.top_p": 0.0}, "dir"),
    ("temperature 0 in RL", {"rollout.temperature": 0.0}, "dir"),
    ("no checkpoints", {"checkpoint_every_steps": 0}, "dir"),
    ("a seed beyond 32 bits", {"seed": 2**32}, "dir"),
    ("a hint ladder that goes down", {"curriculum.ladder": (0.5, 0.25)}, "dir"),
    ("an unknown curriculum mode", {"curriculum.mode": "grpo"}, "dir"),
    ("a mesh that does not fit the 8 devices", {"mesh.shape": (3, -1, 1)}, "dir"),
    ("micro-batches that do not divide the batch", {"rl.micro_batches": 3}, "dir"),
    ("a prompt too long for the memory", {"rollout.max_prompt_len": 100000}, "dir"),
    ("a prompt bucket too short for the prompts", {"rollout.max_prompt_len": 12}, "dir"),
    ("a model that does not exist", {"model.path": "builtin:nope"}, "dir"),
    ("an empty model path", {"model.path": ""}, "dir"),
    ("data files without a path", {"data.source": "files"}, "dir"),
    ("a data row without an answer", {"data.source": "files", "data.files": ("DATA/bad.jsonl",)}, "dir"),
    ("a data file that does not exist", {"data.source": "files", "data.files": ("DATA/missing.jsonl",)}, "dir"),
    ("a workdir that is a file", {}, "file"),
    ("a workdir below a file", {}, "below_file"),
]


def _set(config, key, value):
  *path, leaf = key.split(".")
  node = config
  for part in path:
    node = node[part]
  node[leaf] = value


class _Started(Exception):
  """The run got past every start-up check (the case is not refused)."""


def startup_line(config, workdir: str) -> str:
  """What `python -m jaxghpo.main` prints for this config and workdir before any step: its one line."""
  try:
    validation.check_workdir(workdir)
    train.run(config, workdir)
  except validation.StartupError as e:
    return f"jaxghpo: cannot start: {validation.one_line(e)}"
  except _Started:
    return "(not refused: the run started)"
  except Exception as e:  # noqa: BLE001 - a traceback the user would see: shown as its last line
    return f"(traceback) {type(e).__name__}: {validation.one_line(e)}"
  return "(not refused: the run ended)"


def build_table(tmp_path, monkeypatch) -> tuple[str, list]:
  monkeypatch.setattr(memory_check, "device_memory", lambda devices: FIXED_MEMORY)
  monkeypatch.setattr(train.Trainer, "run", lambda self: (_ for _ in ()).throw(_Started()))
  data = tmp_path / "data"
  data.mkdir()
  with open(data / "bad.jsonl", "w") as f:
    f.write(json.dumps({"problem": "a+1=", "solution": "a+1=b", "answer": "b"}) + "\n")
    f.write(json.dumps({"problem": "c+2=", "solution": "c+2=e"}) + "\n")
  rows = []
  for i, (case, overrides, kind) in enumerate(CASES):
    config = default_config()
    config.arms = ()
    for key, value in overrides.items():
      if isinstance(value, tuple):
        value = tuple(v.replace("DATA", str(data)) if isinstance(v, str) else v for v in value)
      _set(config, key, value.replace("DATA", str(data)) if isinstance(value, str) else value)
    workdir = str(tmp_path / f"run{i}")
    if kind in ("file", "below_file"):
      (tmp_path / f"case{i}").mkdir()
      with open(tmp_path / f"case{i}" / "file", "w") as f:
        f.write("x")
      workdir = str(tmp_path / f"case{i}" / "file") + ("/run" if kind == "below_file" else "")
    line = startup_line(config, workdir)
    line = line.replace(str(data), "DATA").replace(str(tmp_path / f"case{i}"), "TMP").replace(ROOT, "REPO")
    shown = ", ".join(f"{k}={v!r}" for k, v in overrides.items()) or {"file": "--workdir=TMP/file (a file)",
                                                                       "below_file": "--workdir=TMP/file/run"}[kind]
    rows.append((case, shown, line))
  lines = ["# Hostile inputs: what a user sees", "",
           "Generated by `tests/test_hostile_table.py` (JAXGHPO_UPDATE_DOCS=1 rewrites it): each case is the README's",
           "config (`configs/default.py`, `arms=`) with one change, run through the start-up path of",
           "`python -m jaxghpo.main` (the workdir check, then `train.run` up to the first step) on 8 CPU devices. Every",
           "case ends there, before anything is compiled, with the one line below on stderr and exit status 2.",
           "TMP and DATA stand for the test's directories, REPO for the checkout; the memory case assumes a device of 16 GB.",
           "Resumes that change the run's math are refused too (`jaxghpo/resume_check.py`, `tests/test_resume_check.py`).",
           "", "| case | input | the line printed |", "|---|---|---|"]
  for case, shown, line in rows:
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines.append(f"| {esc(case)} | `{esc(shown)}` | {esc(line)} |")
  return "\n".join(lines) + "\n", rows


def test_hostile_table_is_current(tmp_path, monkeypatch):
  text, rows = build_table(tmp_path, monkeypatch)
  bad = [(case, line) for case, _, line in rows if not line.startswith("jaxghpo: cannot start: ")]
  assert not bad, f"cases not refused with one line: {bad}"
  if os.environ.get("JAXGHPO_UPDATE_DOCS"):
    with open(DOC, "w") as f:
      f.write(text)
  with open(DOC) as f:
    committed = f.read()
  assert committed == text, ("docs/hostile_inputs.md is not what the code prints now; rewrite it with "
                             "JAXGHPO_UPDATE_DOCS=1 python -m pytest tests/test_hostile_table.py")
