"""Named registries: the one way a config name reaches code (advantage estimators, loss aggregations, KL
estimators, curriculum modes, reward kinds, tasks).

    ADVANTAGES = Registry("rl.advantage_estimator")

    @ADVANTAGES.register("grpo")
    def grpo(rewards_BxG, eps): ...

    ADVANTAGES.get(config.rl.advantage_estimator)   # unknown name: a KeyError that lists the known ones

A new entry is one decorated function (and its test); nothing else names it. The registry's `key` is the
config key that chooses from it, so the error names the key at fault and the choices.
"""
from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
  """name -> entry, filled by `register`; `get` names the config key and the known names on a miss."""

  def __init__(self, key: str):
    self.key = key  # the config key whose value is looked up here (in error messages)
    self._entries: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    """Decorator: registers the decorated object under `name` (a second entry of one name is an error)."""

    def add(entry: T) -> T:
      if name in self._entries:
        raise ValueError(f"{self.key}: {name!r} is registered twice")
      self._entries[name] = entry
      return entry

    return add

  def unregister(self, name: str) -> T:
    """Removes `name` and returns its entry (tests that register a temporary entry clean up with it)."""
    if name not in self._entries:
      raise KeyError(f"{self.key}={name!r} is not registered; known: {sorted(self._entries)}")
    return self._entries.pop(name)

  def get(self, name: str) -> T:
    if name not in self._entries:
      raise KeyError(f"{self.key}={name!r} is not registered; known: {sorted(self._entries)}")
    return self._entries[name]

  def names(self) -> tuple[str, ...]:
    return tuple(self._entries)

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)
