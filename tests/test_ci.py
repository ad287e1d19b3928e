"""CI runs the whole suite: the README's test command (tests not marked slow) and the slow tests."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _commands(path):
  with open(os.path.join(ROOT, path)) as f:
    return [" ".join(m.split()) for m in re.findall(r"python3? -m pytest[^\n`&]*", f.read())]


def test_ci_runs_the_readme_command_and_the_slow_tests():
  ci = [c.replace("python3", "python") for c in _commands(".ci/run")]
  assert ci == ["python -m pytest -q tests", "python -m pytest -q -m slow tests"], ci
  readme = _commands("README.md")
  assert all(c in readme for c in ci), f"README states {readme}; CI runs {ci}"
