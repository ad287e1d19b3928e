"""Records which keys of an experiment config are read, by path ("rl.clip_low"), while code runs.

Every read of a ConfigDict goes through ``ConfigDict.__getitem__`` (attribute access, ``get``, ``items``,
``values`` and ``dict(cd)`` all call it), so the recorder patches that one method. Reads are attributed
by the identity of the ConfigDict they are made on: the experiment config and its sections are
registered under their paths; a module config resolved from a section (``rl.resolve_config``,
``curriculum.resolve_config``) is registered under that section, so that the trainer's reads of the
resolved copy count for the key they came from.

Copies and checks are not reads: ``to_dict`` (a copy), the resolve functions themselves (they copy and
validate) and the validators listed in VALIDATORS run with recording off. A key that only a validator
looks at does nothing in a run.
"""
from __future__ import annotations

import contextlib
import functools
import importlib

import ml_collections

# (module, function): functions that only check values. Reads inside them do not count.
VALIDATORS = (
    ("jaxghpo.experiment", "validate"),
    ("jaxghpo.experiment", "validate_values"),
    ("jaxghpo.validation", "check_ranges"),
    ("jaxghpo.memory_check", "check"),
    ("jaxghpo.experiment", "check_prompt_room"),
    ("jaxghpo.derived", "validate"),
    ("jaxghpo.derived", "check_not_set"),
    ("jaxghpo.rl", "validate_config"),
    ("jaxghpo.rl.config", "validate_config"),
    ("jaxghpo.curriculum.config", "validate_config"),
)
# (module, function, section): functions that return a resolved copy of a config section.
RESOLVERS = (
    ("jaxghpo.rl", "resolve_config", "rl"),
    ("jaxghpo.rl.config", "resolve_config", "rl"),
    ("jaxghpo.curriculum", "resolve_config", "curriculum"),
    ("jaxghpo.curriculum.config", "resolve_config", "curriculum"),
)


def leaf_paths(config: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
  """Every leaf key of `config` as a dotted path (a ConfigDict value is a section, not a leaf)."""
  out = set()
  for key in config.keys():
    value = config._fields[key]  # not a read: the recorder must not see the walk
    path = prefix + str(key)
    if isinstance(value, ml_collections.ConfigDict):
      out |= leaf_paths(value, path + ".")
    else:
      out.add(path)
  return out


class ReadRecorder:
  """``with ReadRecorder(config) as rec: ...`` then ``rec.read`` is the set of paths read."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    self.read: set[str] = set()
    self._paths: dict[int, tuple[object, str]] = {}
    self._off = 0
    self._stack = contextlib.ExitStack()
    self.register(config, "")

  def register(self, node, path: str) -> None:
    """Reads of `node` (and the sections below it) count as reads of `path` (and below)."""
    self._paths[id(node)] = (node, path)  # the node is kept alive, so its id is not reused
    for key in node.keys():
      child = node._fields[key]
      if isinstance(child, ml_collections.ConfigDict):
        self.register(child, f"{path}{key}.")

  @contextlib.contextmanager
  def off(self):
    self._off += 1
    try:
      yield
    finally:
      self._off -= 1

  def _patch(self, owner, name, new):
    old = getattr(owner, name)
    setattr(owner, name, new)
    self._stack.callback(setattr, owner, name, old)
    return old

  def __enter__(self):
    rec = self
    getitem = ml_collections.ConfigDict.__getitem__

    def recording_getitem(cd, key):
      value = getitem(cd, key)
      entry = rec._paths.get(id(cd))
      if not rec._off and entry is not None and entry[0] is cd and isinstance(key, str) and "." not in key:
        rec.read.add(entry[1] + key)
      return value

    to_dict = ml_collections.ConfigDict.to_dict

    def silent_to_dict(cd, *args, **kwargs):
      with rec.off():
        return to_dict(cd, *args, **kwargs)

    self._patch(ml_collections.ConfigDict, "__getitem__", recording_getitem)
    self._patch(ml_collections.ConfigDict, "to_dict", silent_to_dict)
    for module, name in VALIDATORS:
      mod = importlib.import_module(module)
      fn = getattr(mod, name)
      self._patch(mod, name, self._silent(fn))
    from jaxghpo.data.tasks import base as task_base  # a task resolves its own section of data.task_configs
    task_init = task_base.Task.__init__

    def recording_task_init(task, config):
      with rec.off():
        task_init(task, config)
      rec.register(task.task_config, f"data.task_configs.{task.name}.")

    self._patch(task_base.Task, "__init__", recording_task_init)
    for module, name, section in RESOLVERS:
      mod = importlib.import_module(module)
      fn = getattr(mod, name)
      self._patch(mod, name, self._resolver(fn, section))
    return self

  def _silent(self, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
      with self.off():
        return fn(*args, **kwargs)
    return wrapper

  def _resolver(self, fn, section: str):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
      with self.off():
        out = fn(*args, **kwargs)
      self.register(out, section + ".")
      return out
    return wrapper

  def __exit__(self, *exc):
    self._stack.close()
    return False


def unread_keys(config, read: set[str], exempt=()) -> list[str]:
  """Leaf keys of `config` that were not read and are not exempt (exempt: paths or section prefixes "x.")."""
  exempt = tuple(exempt)
  return sorted(p for p in leaf_paths(config) - set(read)
                if not any(p == e or (e.endswith(".") and p.startswith(e)) for e in exempt))
