"""The import rules of docs/DESIGN.md, held against the code: a table of floors, no upward import, no cycle.

Every module of the package is parsed (ast, so nothing is imported); every `import` counts, those inside
functions too (a lazy import is still a dependency). A unit is a top-level module (jaxghpo/train.py:
"train") or a subpackage (jaxghpo/rl/: "rl"). A unit may import only units on a lower floor; modules
inside one subpackage may import each other, but no import chain between modules may close a cycle.
A new module fails here until it has a floor in FLOORS and a line in docs/DESIGN.md.
"""
from __future__ import annotations

import ast
import os
import shutil

import pytest

PACKAGE = "jaxghpo"
ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)

# Mirrored in docs/DESIGN.md ("Modules and what each may import"); lower floors first.
FLOORS = {
    # 0: imports nothing of jaxghpo
    "sections": 0, "faults": 0, "parallel": 0, "voting": 0, "disk_full": 0, "stopping": 0,
    "seed_stats": 0, "health": 0, "budget": 0, "registry": 0,
    "paths": 1, "rewards": 1,
    "logging_utils": 2, "checkpoint": 2, "validation": 2, "workdir_lock": 2, "models": 2, "deepconf": 2,
    "curriculum": 3, "rl": 3, "resume_check": 3,
    "derived": 4, "data": 4,
    "rollout": 5, "memory_estimate": 5,
    "evaluation": 6, "memory_check": 6,
    "diagnostics": 7, "experiment": 7,
    "report": 8, "loop": 8, "sft": 9, "aot": 8,
    "experiments": 9, "preflight": 9, "train_state": 0, "rl_step": 6, "hooks": 4,
    "train": 10,
    "main": 11,
}


def _module_name(path: str, root: str) -> str:
  rel = os.path.relpath(path, os.path.dirname(root))[:-len(".py")].replace(os.sep, ".")
  return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
  """Dotted names one import statement may refer to (for `from a import b`: a and a.b)."""
  if isinstance(node, ast.Import):
    return [a.name for a in node.names]
  if not isinstance(node, ast.ImportFrom):
    return []
  if node.level:
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[:len(parts) - (node.level - 1)]
    base = ".".join(parts + ([node.module] if node.module else []))
  else:
    base = node.module or ""
  return [base] + [f"{base}.{a.name}" for a in node.names]


def module_graph(root: str = ROOT) -> dict[str, set[str]]:
  """{module: modules of the package it imports}, e.g. "jaxghpo.train" -> {"jaxghpo.arms", ...}."""
  files = {}
  for dirpath, _, names in os.walk(root):
    for name in names:
      if name.endswith(".py"):
        path = os.path.join(dirpath, name)
        files[_module_name(path, root)] = path
  graph = {}
  for module, path in files.items():
    with open(path, encoding="utf-8") as f:
      tree = ast.parse(f.read(), path)
    deps = set()
    for node in ast.walk(tree):
      names = _imported(node, module, path.endswith("__init__.py"))
      if isinstance(node, ast.ImportFrom) and any(n in files for n in names[1:]):
        names = names[1:]       # `from pkg import mod`: the module, not the package's __init__
      for name in names:
        # the longest known module the name starts with ("jaxghpo.rl.losses.x" -> "jaxghpo.rl.losses")
        while name and name not in files:
          name = name.rpartition(".")[0]
        # a module's own packages run before it whatever it imports: not a dependency of its own
        if name and name != module and not module.startswith(name + "."):
          deps.add(name)
    graph[module] = deps
  return graph


def unit(module: str) -> str | None:
  """"jaxghpo.rl.losses" -> "rl"; "jaxghpo.train" -> "train"; the package itself -> None."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else None


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle of the graph as [a, b, ..., a], or None."""
  state: dict[str, int] = {}   # 1: on the current path, 2: done
  path: list[str] = []

  def visit(node: str) -> list[str] | None:
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        found = visit(nxt)
        if found:
          return found
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      found = visit(node)
      if found:
        return found
  return None


def violations(graph: dict[str, set[str]], floors: dict[str, int]) -> list[str]:
  """Every broken rule, as a sentence naming the modules and the mend."""
  out = []
  units = {unit(m) for m in graph} - {None}
  for u in sorted(units - set(floors)):
    out.append(f"{PACKAGE}.{u} has no floor: add it to FLOORS in tests/test_import_rules.py and to the module "
               "table of docs/DESIGN.md")
  for module in sorted(graph):
    for dep in sorted(graph[module]):
      a, b = unit(module), unit(dep)
      if a is None or b is None or a == b or a not in floors or b not in floors:
        continue
      if floors[b] >= floors[a]:
        out.append(f"{module} imports {dep}, but {a} (floor {floors[a]}) may import only lower floors and {b} is "
                   f"on floor {floors[b]}: move the shared piece below {a}, or pass it in")
  cycle = find_cycle(graph)
  if cycle:
    out.append("import cycle: " + " -> ".join(cycle))
  return out


def test_the_package_keeps_its_import_rules():
  graph = module_graph()
  assert "jaxghpo.train" in graph and "jaxghpo.rl.losses" in graph   # the walk found the package
  assert not violations(graph, FLOORS), "\n".join(violations(graph, FLOORS))


def test_every_floor_names_a_unit_of_the_package():
  units = {unit(m) for m in module_graph()} - {None}
  assert set(FLOORS) <= units, sorted(set(FLOORS) - units)


def test_design_doc_lists_every_unit():
  with open(os.path.join(os.path.dirname(ROOT), "docs", "DESIGN.md"), encoding="utf-8") as f:
    text = f.read()
  table = text[text.index("## Modules and what each may import"):]
  table = table[:table.index("\n## ", 1)]
  missing = [u for u in FLOORS if u not in table]
  assert not missing, f"docs/DESIGN.md's module table does not name {missing}"


def test_the_checker_finds_upward_imports_cycles_and_unknown_units():
  floors = {"low": 0, "mid": 1, "top": 2}
  ok = {"jaxghpo.top": {"jaxghpo.mid.a"}, "jaxghpo.mid.a": {"jaxghpo.low", "jaxghpo.mid.b"},
        "jaxghpo.mid.b": set(), "jaxghpo.low": set()}
  assert violations(ok, floors) == []
  upward = {**ok, "jaxghpo.low": {"jaxghpo.top"}}
  found = violations(upward, floors)
  assert any("jaxghpo.low imports jaxghpo.top" in v and "floor 0" in v for v in found), found
  assert any(v.startswith("import cycle: ") for v in found), found
  sideways = {**ok, "jaxghpo.mid.b": {"jaxghpo.mid.a"}}     # inside one unit: allowed, but a cycle
  assert violations(sideways, floors) == ["import cycle: jaxghpo.mid.a -> jaxghpo.mid.b -> jaxghpo.mid.a"]
  unknown = {**ok, "jaxghpo.new": set()}
  assert any("jaxghpo.new has no floor" in v for v in violations(unknown, floors))


def test_a_planted_upward_import_fails(tmp_path):
  # A copy of the package where rewards (floor 1) imports train (floor 10), lazily inside a function.
  copy = tmp_path / PACKAGE
  shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns("__pycache__", "assets"))
  with open(copy / "rewards" / "simple.py", "a", encoding="utf-8") as f:
    f.write("\n\ndef _planted():\n  from jaxghpo import train\n  return train\n")
  found = violations(module_graph(str(copy)), FLOORS)
  assert any("jaxghpo.rewards.simple imports jaxghpo.train" in v for v in found), found
  assert any(v.startswith("import cycle: ") for v in found), found   # train reaches rewards: a cycle too


@pytest.mark.parametrize("source, module, is_package, expected", [
    ("from . import losses", "jaxghpo.rl", True, ["jaxghpo.rl", "jaxghpo.rl.losses"]),
    ("from .losses import x", "jaxghpo.rl.train_step", False, ["jaxghpo.rl.losses", "jaxghpo.rl.losses.x"]),
    ("from ..models import y", "jaxghpo.rl.train_step", False, ["jaxghpo.models", "jaxghpo.models.y"]),
    ("import jaxghpo.data.files", "jaxghpo.train", False, ["jaxghpo.data.files"]),
])
def test_relative_imports_resolve(source, module, is_package, expected):
  assert _imported(ast.parse(source).body[0], module, is_package) == expected


def test_only_the_entry_point_reaches_the_experiment():
  """A run of another task never imports the embedded experiment: only main.py (when config.arms names arms)."""
  graph = module_graph()
  importers = sorted(m for m, deps in graph.items() if not m.startswith(f"{PACKAGE}.experiments")
                     and any(d.startswith(f"{PACKAGE}.experiments") for d in deps))
  assert importers == [f"{PACKAGE}.main"], importers


def test_the_library_names_no_task_outside_tasks_and_experiments():
  """The trainer, evaluator and report ask the task interface (data/tasks/base.py); none names the shipped task."""
  offenders = []
  for dirpath, _, names in os.walk(ROOT):
    rel = os.path.relpath(dirpath, ROOT)
    if rel.startswith((os.path.join("data", "tasks"), "experiments", "assets")):
      continue
    for name in names:
      if name.endswith(".py"):
        with open(os.path.join(dirpath, name), encoding="utf-8") as f:
          offenders += [f"{os.path.join(rel, name)}:{i}" for i, line in enumerate(f, 1) if "chains" in line]
  assert not offenders, offenders

