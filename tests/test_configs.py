"""Every experiment config loads and validates; the 7B GHPO configs hold the paper's settings and fit
their TPU slice (checked from the configs' MODEL_SHAPE, without weights)."""
import glob
import importlib.util
import math
import os
import re
import shlex
import subprocess
import sys

import pytest

from jaxghpo import curriculum, experiment, models, rl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import estimate_memory as em  # noqa: E402

CONFIGS = sorted(p for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
                 if os.path.basename(p) not in ("__init__.py", "base.py"))
BIG = ["qwen25_math_7b_ghpo.py", "qwen25_7b_ghpo.py"]
CHIPS_PER_HOST = 4  # v4 and v5p TPU VMs


def load(path):
  spec = importlib.util.spec_from_file_location(f"_cfg_{os.path.basename(path)[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_the_big_configs_are_found():
  names = [os.path.basename(p) for p in CONFIGS]
  assert set(BIG) <= set(names) and "default.py" in names and "smoke.py" in names


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_loads_and_validates(path):
  module = load(path)
  config = module.get_config()
  for key in ("num_steps", "checkpoint_every_steps", "seed"):
    assert key in config and int(config[key]) >= 0, key
  assert config.num_steps > 0 and config.checkpoint_every_steps > 0
  assert config.curriculum.mode in curriculum.MODES
  curriculum.resolve_config(config.curriculum)  # unknown keys or bad values raise
  rl.resolve_config(config.rl)
  if not config.model.path:  # required on the command line; validate refuses it empty
    with pytest.raises(ValueError, match="config.model.path='': is empty"):
      experiment.validate(config, 8, 1)
    config.model.path = "/path/to/model"
  chips = getattr(module, "NUM_CHIPS", 8)
  experiment.validate(config, chips, max(1, chips // CHIPS_PER_HOST) if hasattr(module, "NUM_CHIPS") else 1)


@pytest.mark.parametrize("name", BIG)
def test_7b_configs_are_the_papers_ghpo(name):
  c = load(os.path.join(ROOT, "configs", name)).get_config()
  assert c.mode == "rl"
  assert c.rollout.group_size == 8 and c.rollout.temperature == 1.0
  assert c.rollout.max_prompt_len == 2048 and c.rollout.max_new_tokens == 2048
  assert c.rl.learning_rate == 1e-6 and c.rl.lr_schedule == "warmup_cosine" and c.rl.end_lr_ratio == 0.0
  assert c.rl.kl_coef == 0.0 and c.rl.clip_low == c.rl.clip_high == 0.2 and c.rl.ppo_epochs == 1
  assert c.curriculum.mode == "ghpo" and tuple(c.curriculum.ladder) == (0.25, 0.5, 0.75)
  assert c.curriculum.cold_start_steps == 20
  assert dict(c.rewards.weights) == {"math": 1.0, "format": 0.5} and c.rewards.accuracy == "math"
  assert c.data.style == "boxed" and c.hints.placement == "prompt"
  assert c.data.source == "files"
  assert c.model.dtype == "bfloat16" and c.model.param_dtype == "float32"
  # Filled in on the command line; the keys must exist (the config is locked against unknown keys).
  for key in ("model.path", "data.files", "eval.files"):
    section, leaf = key.split(".")
    assert leaf in c[section], key


@pytest.mark.parametrize("name", BIG)
def test_7b_configs_fit_their_slice(name):
  module = load(os.path.join(ROOT, "configs", name))
  c = module.get_config()
  cfg = models.ModelConfig(**module.MODEL_SHAPE)
  d, f, t = tuple(c.mesh.shape)
  assert d * f * t == module.NUM_CHIPS, f"mesh {c.mesh.shape} must multiply to the slice's {module.NUM_CHIPS} chips"
  hosts = module.NUM_CHIPS // CHIPS_PER_HOST
  P, G = c.data.prompts_per_step, c.rollout.group_size
  assert P % hosts == 0, "each host feeds the same number of problems"
  assert (P * G) % (d * f) == 0, "sequences split evenly over the batch shards"
  assert (P * G // (d * f)) % c.rl.micro_batches == 0, "micro-batches split each device's rows evenly"
  for what, size in (("heads", cfg.num_heads), ("kv heads", cfg.num_kv_heads), ("mlp", cfg.intermediate_size),
                     ("vocab", cfg.vocab_size)):
    assert size % t == 0, f"{what} ({size}) must divide by tensor={t} or it is replicated"
  assert cfg.hidden_size % f == 0
  assert c.rollout.max_prompt_len + c.rollout.max_new_tokens <= cfg.max_position_embeddings
  assert cfg.num_params() == pytest.approx(7.6e9, rel=0.02)

  # The memory estimate (XLA:TPU's constants) pasted in the docstring is what the estimator says today, and it
  # fits the chip; the compiled figures beside it come from tools/compile_tpu.py (BENCHMARKS.md).
  est = em.estimate(c, cfg, (d, f, t), platform="tpu")
  # By hand: float32 params, every matrix split 32 ways (all dims divide 8 and 4); norms and biases add little.
  assert est.params == pytest.approx(4 * cfg.num_params() / module.NUM_CHIPS, rel=0.01)
  assert est.optimizer == pytest.approx(2 * est.params, rel=1e-6)
  assert est.total < 0.9 * module.HBM_BYTES_PER_CHIP
  if name == "qwen25_math_7b_ghpo.py":
    pasted = re.findall(r"gives ([\d.]+) GB for the train step", module.__doc__ or "")
    assert len(pasted) == 1 and float(pasted[0]) == pytest.approx(est.train_total / em.GB, abs=0.011)
    assert c.rl.micro_batches == 4 and P * G // (d * f) // c.rl.micro_batches * (
        c.rollout.max_prompt_len + c.rollout.max_new_tokens) >= 65_536, "the issue's tokens per device per micro-batch"
  assert math.isfinite(est.total)


# ----------------------------------------------------------------------------- tools/launch_tpu.sh
LAUNCH = os.path.join(ROOT, "tools", "launch_tpu.sh")


def _launch(tmp_path, *args):
  # A `gcloud` on PATH that records any call: a dry run must never reach it (no network in tests).
  fake = tmp_path / "bin"
  fake.mkdir(exist_ok=True)
  (fake / "gcloud").write_text(f"#!/bin/sh\ntouch {tmp_path}/gcloud_called\n")
  (fake / "gcloud").chmod(0o755)
  env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
  return subprocess.run(["bash", LAUNCH, *args], capture_output=True, text=True, env=env, timeout=30)


def test_launch_script_parses():
  assert subprocess.run(["bash", "-n", LAUNCH], capture_output=True).returncode == 0


def test_launch_dry_run_prints_the_command_for_every_worker(tmp_path):
  out = _launch(tmp_path, "--dry-run", "--name=ghpo-v5p", "--zone=us-east5-a", "--project=proj", "--setup",
                "--config=configs/qwen25_math_7b_ghpo.py", "--workdir=gs://bucket/runs/math7b", "--",
                "--config.model.path=/mnt/models/Qwen2.5-Math-7B", "--config.data.files=/mnt/data/math 3to5.jsonl")
  assert out.returncode == 0, out.stderr
  assert not (tmp_path / "gcloud_called").exists()
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 1
  argv = shlex.split(lines[0])
  assert argv[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "ghpo-v5p"]
  assert {"--zone=us-east5-a", "--project=proj", "--worker=all"} <= set(argv)
  remote = [a for a in argv if a.startswith("--command=")][0][len("--command="):]
  assert remote.startswith("cd ~/jaxghpo && ")
  assert "pip install -q -e ." in remote and "jax[tpu]==" in remote
  # What each worker's shell runs, word by word (the space in the data path survives the quoting).
  run = shlex.split(remote.split(" && ")[-1])
  assert run == ["python3", "-m", "jaxghpo.main", "--config=configs/qwen25_math_7b_ghpo.py",
                 "--workdir=gs://bucket/runs/math7b", "--config.model.path=/mnt/models/Qwen2.5-Math-7B",
                 "--config.data.files=/mnt/data/math 3to5.jsonl"]


def test_launch_sync_and_errors(tmp_path):
  out = _launch(tmp_path, "--dry-run", "--sync", "--detach", "--name", "t", "--zone", "z", "--config", "configs/smoke.py",
                "--workdir", "gs://b/smoke")
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  assert len(lines) == 3 and "tpu-vm scp --recurse" in lines[1] and "--worker=all" in lines[1]
  remote = shlex.split(lines[2])[-1]
  assert remote.startswith("--command=cd ~/jaxghpo && nohup python3 -m jaxghpo.main --config=configs/smoke.py")
  assert remote.endswith("> launch.log 2>&1 < /dev/null &")
  missing = _launch(tmp_path, "--dry-run", "--zone=z", "--config=c.py", "--workdir=gs://b/r")
  assert missing.returncode == 2 and "--name" in missing.stderr
  unknown = _launch(tmp_path, "--dry-run", "--name=t", "--zone=z", "--config=c.py", "--workdir=gs://b/r", "--bogus")
  assert unknown.returncode == 2 and "--bogus" in unknown.stderr
  local = _launch(tmp_path, "--dry-run", "--name=t", "--zone=z", "--config=c.py", "--workdir=/tmp/run")
  assert local.returncode == 0 and "neither a gs:// path" in local.stderr
  assert not (tmp_path / "gcloud_called").exists()


@pytest.mark.parametrize("name", ["default", "smoke"])
def test_embedded_configs_leave_room_for_their_longest_hint(name):
  """The start-up checks of the trainer (mesh, batch, prompt room for the longest hint) pass for the
  configs that run the embedded task, so a trace-format change cannot silently break them."""
  import jax
  from jaxghpo.data import tokenizer as tok_lib
  config = load(os.path.join(ROOT, "configs", f"{name}.py")).get_config()
  experiment.validate(config, jax.device_count(), 1)
  problems = experiment.load_problems(config)
  experiment.check_prompt_room(config, problems, tok_lib.load(tok_lib.task_tokenizer_path()))


def test_prompt_room_counts_hints_only_in_modes_that_give_them():
  """A no-hint mode (GRPO "none", DAPO "filter") needs room for the bare prompt only; "ghpo" needs the hint's."""
  from jaxghpo.data import tokenizer as tok_lib
  config = load(os.path.join(ROOT, "configs", "default.py")).get_config()
  config.data.task_configs.chains.num_train = 200
  config.rollout.max_prompt_len = 32  # a level-6 prompt fits; with a 75% hint it does not
  problems = experiment.load_problems(config)
  tok = tok_lib.load(tok_lib.task_tokenizer_path())
  for mode in ("none", "filter"):
    config.curriculum.mode = mode
    experiment.check_prompt_room(config, problems, tok)
  config.curriculum.mode = "ghpo"
  with pytest.raises(ValueError, match="max_prompt_len=32 is too short"):
    experiment.check_prompt_room(config, problems, tok)


def test_32k_config_is_for_a_model_with_the_positions():
  """configs/qwen25_math_7b_ghpo_32k.py: 32,768 tokens per sequence need Qwen2.5-7B's 131k positions (the Math
  model's end at 4,096: the position check refuses it), at least one sequence per device per micro-batch, and
  the TPU estimate within 90% of a v5p chip."""
  from jaxghpo.aot import shapes
  module = load(os.path.join(ROOT, "configs", "qwen25_math_7b_ghpo_32k.py"))
  c = module.get_config()
  cfg = models.ModelConfig(**module.MODEL_SHAPE)
  assert c.rollout.max_prompt_len + c.rollout.max_new_tokens == 32_768
  shapes.check_positions(c, cfg)
  math_model = load(os.path.join(ROOT, "configs", "qwen25_math_7b_ghpo.py")).MODEL_SHAPE
  with pytest.raises(ValueError, match="max_position_embeddings=4096"):
    shapes.check_positions(c, models.ModelConfig(**math_model))
  d, f, t = tuple(c.mesh.shape)
  assert c.data.prompts_per_step * c.rollout.group_size // (d * f) // c.rl.micro_batches >= 1
  est = em.estimate(c, cfg, (d, f, t), platform="tpu")
  assert est.total < 0.9 * module.HBM_BYTES_PER_CHIP
