"""Experiments built on the library: their own arms, comparisons and reports. The library never imports
them (tests/test_import_rules.py: only main.py, when a config names arms); the embedded experiment is chains/."""


def run_side_by_side(config, workdir: str, run_arm, allow_config_change: bool = False) -> dict:
  """The arms of config.arms side by side (the embedded experiment's: chains/arms.py), each run by run_arm."""
  from jaxghpo.experiments.chains import arms  # noqa: PLC0415
  return arms.run_side_by_side(config, workdir, run_arm, allow_config_change=allow_config_change)
