"""Start-time checks: one table of ranges for every numeric key, the workdir, and the memory estimate."""
import os
import subprocess
import sys

import jax
import pytest

from configs import base
from jaxghpo import curriculum, experiment, memory_check, rl, validation
from tests.test_faults_data import default_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKED_ELSEWHERE = {"mesh.shape.0", "mesh.shape.1", "mesh.shape.2"}  # parallel.validate_mesh_shape


def _set(config, key, value):
  section, _, name = key.rpartition(".")
  node = config
  for part in section.split(".") if section else []:
    node = node[part]
  node[name] = value


@pytest.mark.parametrize("key, value, message", [
    ("max_gen_tokens", -5, r"config\.max_gen_tokens=-5: must be >= 0 \(0: no token budget"),
    ("rl.kl_coef", -1.0, r"config\.rl\.kl_coef=-1\.0: must be >= 0"),
    ("rl.adam_eps", -1.0, r"config\.rl\.adam_eps=-1\.0: must be > 0"),
    ("rl.b2", 1.5, r"config\.rl\.b2=1\.5: must be in \[0, 1\) \(Adam's second-moment decay\)"),
    ("rl.b1", -0.1, r"config\.rl\.b1=-0\.1: must be in \[0, 1\)"),
    ("rollout.group_size", 1, r"config\.rollout\.group_size=1: must be >= 2 \(group-relative advantages"),
    ("rollout.tip_window", 0, r"config\.rollout\.tip_window=0: must be >= 1"),
    ("rewards.deadline_s", 0.0, r"config\.rewards\.deadline_s=0\.0: must be > 0"),
    ("eval.deepconf.percentile", 101.0, r"config\.eval\.deepconf\.percentile=101\.0: must be in \[0, 100\]"),
    ("curriculum.prior_alpha", 0.0, r"config\.curriculum\.prior_alpha=0\.0: must be > 0"),
    ("data.task_configs.chains.num_train", 0, r"config\.data\.task_configs\.chains\.num_train=0: must be >= 1"),
    ("seed", 2**32, r"config\.seed=4294967296: must be in \[0, 2\*\*32\)"),
])
def test_out_of_range_values_are_refused_naming_key_and_range(key, value, message):
  config = default_config()
  experiment.validate(config, 8, 1)
  _set(config, key, value)
  with pytest.raises(validation.StartupError, match=message):
    experiment.validate(config, 8, 1)


def test_group_size_one_is_a_group_size_error_not_an_eval_error():
  config = default_config()
  config.rollout.group_size = 1
  with pytest.raises(validation.StartupError, match="rollout.group_size=1") as e:
    experiment.validate(config, 8, 1)
  assert "eval.num_samples" not in str(e.value)


def test_every_numeric_key_has_a_range_and_its_default_lies_in_it():
  leaves = dict(validation.numeric_leaves(base.get_base_config()))
  leaves.update(validation.numeric_leaves(rl.default_config(), "rl."))
  leaves.update(validation.numeric_leaves(curriculum.default_config(), "curriculum."))
  missing = sorted(k for k in leaves if validation.range_of(k) is None and k not in CHECKED_ELSEWHERE)
  assert not missing, f"numeric keys without an entry in jaxghpo/validation.py RANGES: {missing}"
  outside = sorted(k for k, v in leaves.items() if k not in CHECKED_ELSEWHERE
                   and not validation.range_of(k).contains(float(v)))
  assert not outside, f"defaults outside their own range: {outside}"
  stale = sorted(k for k in validation.RANGES if "*" not in k and k not in leaves)
  assert not stale, f"RANGES entries for keys that no config has: {stale}"


def test_module_configs_use_the_same_table():
  with pytest.raises(ValueError, match=r"config\.rl\.b2=1\.5: must be in \[0, 1\)"):
    rl.resolve_config({"b2": 1.5})
  with pytest.raises(ValueError, match=r"config\.curriculum\.ema_decay=1\.0: must be in \[0, 1\)"):
    curriculum.resolve_config({"ema_decay": 1.0})
  with pytest.raises(ValueError, match=r"config\.curriculum\.ladder\.1=1\.5: must be in \(0, 1\]"):
    curriculum.resolve_config({"ladder": (0.5, 1.5)})


def test_range_text():
  assert validation.Range(0.0, 1.0, hi_open=True).text() == "in [0, 1)"
  assert validation.Range(lo=0.0, lo_open=True).text() == "> 0"
  assert validation.Range(lo=1, whole=True).text() == ">= 1"
  assert not validation.Range(lo=1, whole=True).contains(1.5)
  assert not validation.Range().contains(float("inf"))


def test_a_file_workdir_is_one_line(tmp_path):
  path = tmp_path / "a_file"
  path.write_text("x")
  with pytest.raises(validation.StartupError, match=r"--workdir=.*a_file is a file, not a directory"):
    validation.check_workdir(str(path))
  with pytest.raises(validation.StartupError, match=r"--workdir=.*a_file/run cannot be written: Not a directory"):
    validation.check_workdir(str(path / "run"))


def _read_only_dir(tmp_path) -> str:
  if os.geteuid() != 0:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return str(ro / "run")
  return "/sys/jaxghpo_read_only_test_run"  # root writes anywhere but on a read-only file system


def test_a_read_only_workdir_is_one_line(tmp_path):
  workdir = _read_only_dir(tmp_path)
  try:
    os.makedirs(workdir)
  except OSError:
    pass
  else:
    os.rmdir(workdir)
    pytest.skip(f"{workdir} is writable here")
  with pytest.raises(validation.StartupError, match=r"--workdir=.* cannot be written: (Permission denied|"
                                                    r"Operation not permitted|Read-only file system)"):
    validation.check_workdir(workdir)


def test_memory_check_refuses_a_huge_prompt_before_compiling():
  config = default_config()
  memory_check.check(config, (1, 1, 1), jax.devices())  # the default run fits
  config.rollout.max_prompt_len = 100000
  with pytest.raises(validation.StartupError, match=r"start-time memory check: the train step needs about [\d.]+ TB "
                                                    r"per device \(attention .*lower rollout\.max_prompt_len=100000"):
    memory_check.check(config, (1, 1, 1), jax.devices())
  # Through the start-up path: refused before any weight is loaded (load_policy is never reached).
  called = []
  original = experiment.load_policy
  experiment.load_policy = lambda *a, **k: called.append(1) or original(*a, **k)
  try:
    with pytest.raises(validation.StartupError, match="rollout.max_prompt_len=100000"):
      experiment.setup(config)
  finally:
    experiment.load_policy = original
  assert not called


def test_device_memory_reports_a_number():
  limit, source = memory_check.device_memory(jax.devices())
  assert limit is None or limit > 0, (limit, source)


def test_main_prints_one_line_and_exits_2_for_a_file_workdir(tmp_path):
  path = tmp_path / "file_workdir"
  path.write_text("x")
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-m", "jaxghpo.main", "--config=configs/smoke.py", f"--workdir={path}"],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  lines = [line for line in proc.stderr.splitlines() if "jaxghpo: cannot start" in line]
  assert lines == [f"jaxghpo: cannot start: --workdir={path} is a file, not a directory; give a directory (it is "
                   "made if missing)"], proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr


def test_library_info_logs_are_off_unless_verbose():
  """main's default: jax's "Unable to initialize backend 'tpu'" and orbax's INFO lines are not printed."""
  import logging

  from absl import logging as absl_logging

  from jaxghpo import main
  names = ("jax", "orbax", "absl", "tensorboardX", "etils")
  saved = {n: logging.getLogger(n).level for n in names}
  verbosity = absl_logging.get_verbosity()
  try:
    main.quiet_libraries()
    assert not logging.getLogger("jax._src.xla_bridge").isEnabledFor(logging.INFO)
    assert not logging.getLogger("orbax.checkpoint.checkpoint_manager").isEnabledFor(logging.INFO)
    assert logging.getLogger("jax._src.xla_bridge").isEnabledFor(logging.WARNING)
    assert absl_logging.get_verbosity() == absl_logging.WARNING
  finally:
    for n, level in saved.items():
      logging.getLogger(n).setLevel(level)
    absl_logging.set_verbosity(verbosity)


def test_a_misspelt_reward_kind_fails_at_start():
  from configs.base import get_base_config
  from jaxghpo import experiment
  c = get_base_config()
  c.rewards.weights = {"exactt": 1.0}
  with pytest.raises(ValueError, match=r"rewards\.weights\.exactt: unknown reward kind; registered kinds: \["):
    experiment.validate_values(c)
