"""XLA:TPU on a CPU host: configs/smoke.py's programs compile for a v5e-4 slice (libtpu, `.[tpu]`), and the
splash kernel reaches XLA:TPU as its Mosaic custom call, not as the Pallas interpreter's loops."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from jaxghpo import aot  # noqa: E402

MOSAIC = 'custom_call_target="tpu_custom_call"'


def smoke_config(**overrides):
  from configs import smoke
  config = smoke.get_config()
  for dotted, value in overrides.items():
    section, key = dotted.split(".")
    config[section][key] = value
  return config


@pytest.fixture(scope="module")
def compiled():
  config = smoke_config(**{"model.attention": "splash", "rl.kl_coef": 0.01})
  model_cfg = aot.shapes.resolve_model_config(config)
  slice_ = aot.slices.parse("v5e-4")
  mesh = aot.mesh_for_slice(config, slice_)
  assert {d.platform for d in mesh.devices.flat} == {"tpu"}
  names = ("train_sampler", "train_sampler/prefill", "reference_logprobs", "train_step")
  lowered = aot.programs.lower_all(config, model_cfg, mesh, only=set(names))
  assert set(names) <= set(lowered)
  return {name: lowered[name].compile() for name in names}, slice_


def test_splash_compiles_to_mosaic_on_a_cpu_host(compiled):
  programs, _ = compiled
  for name in ("train_sampler/prefill", "reference_logprobs", "train_step"):
    assert MOSAIC in programs[name].as_text(), f"{name}: splash did not lower to its Mosaic kernel"


def test_xla_attention_has_no_mosaic_call():
  """The check above can fail: with model.attention = "xla" there is no Mosaic call to find."""
  config = smoke_config(**{"model.attention": "xla"})
  mesh = aot.mesh_for_slice(config, aot.slices.parse("v5e-4"))
  lowered = aot.programs.lower_all(config, aot.shapes.resolve_model_config(config), mesh,
                                   only={"train_sampler/prefill"})["train_sampler/prefill"]
  assert MOSAIC not in lowered.compile().as_text()


def test_report_of_the_compiled_programs(compiled):
  programs, slice_ = compiled
  reports = {name: aot.report.ProgramReport(name, aot.report.CompiledMemory.of(c), 1.0, 1.0, -1.0, 0.0)
             for name, c in programs.items()}
  for name, rep in reports.items():
    assert 0 < rep.memory.total < slice_.chip.hbm_bytes, name
  assert aot.report.fits(reports, slice_.chip) == []


def test_slice_names():
  s = aot.slices.parse("v5p-64")
  assert (s.num_chips, s.topology, s.num_hosts) == (32, "2x4x4", 8)
  assert aot.slices.parse("v5e-16").num_chips == 16
  with pytest.raises(ValueError, match="v5p-8, v5p-16"):
    aot.slices.parse("v5p-6")
  with pytest.raises(ValueError, match="GENERATION-N"):
    aot.slices.parse("h100-8")


@pytest.mark.slow
def test_dry_run_slice_trains_nothing_and_names_what_does_not_fit(tmp_path):
  """`python -m jaxghpo.main --dry_run_slice`: compiles for the slice, writes nothing to the workdir; a batch far
  beyond a v5e chip's 16 GB exits 1 naming the program that would not fit."""
  import subprocess
  workdir = tmp_path / "run"
  base = [sys.executable, "-m", "jaxghpo.main", "--config=configs/smoke.py", f"--workdir={workdir}",
          "--dry_run_slice=v5e-4"]
  ok = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=900)
  assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
  assert "every program compiles and fits" in ok.stdout
  assert not workdir.exists()
  big = subprocess.run(base + ["--config.data.prompts_per_step=4096", "--config.rollout.group_size=64"], cwd=ROOT,
                       capture_output=True, text=True, timeout=900)
  assert big.returncode == 1, big.stdout[-2000:] + big.stderr[-2000:]
  assert "would not fit" in big.stdout and "train_step" in big.stdout.splitlines()[-1]
  assert not workdir.exists()
