"""Name -> object registries backed by an entry-point group, with run-time registrations.

Tasks (`tokbench.task_registry`) and protocol presets (`tokbench.protocol_registry`) are
both found this way: an entry point is loaded on first use, checked by the registry's
``adopt`` function (which may also register what the object declares), and remembered.
"""
from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class EntryPointRegistry(Generic[T]):
    """The ``kind`` objects of entry-point ``group``; ``adopt(name, obj)`` checks one and returns it."""

    def __init__(self, group: str, kind: str, adopt: Callable[[str, object], T]) -> None:
        self.group, self.kind, self._adopt = group, kind, adopt
        self._loaded: dict[str, T] = {}

    def register(self, name: str, obj: object) -> T:
        """Check and remember ``obj`` as ``name`` (run-time registration, or a loaded entry point)."""
        self._loaded[name] = self._adopt(name, obj)
        return self._loaded[name]

    def _entry_points(self) -> dict[str, EntryPoint]:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        """Every available name: entry points and run-time registrations."""
        return sorted(set(self._entry_points()) | set(self._loaded))

    def get(self, name: str) -> T:
        """The object registered as ``name``; ``ValueError`` naming the available ones otherwise."""
        if name not in self._loaded:
            eps = self._entry_points()
            if name not in eps:
                raise ValueError(f"unknown {self.kind} {name!r}; choose from {', '.join(self.names())}")
            self.register(name, eps[name].load())
        return self._loaded[name]
