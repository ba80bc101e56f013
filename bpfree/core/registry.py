"""One registry per kind of thing built by name (algorithms, architectures, datasets).

A new algorithm or dataset is one new module plus one ``@REGISTRY.register("name")`` line,
never an edit to a chain of if/elif (as in timm). The registries fill themselves: the first
question asked of one (``get``, ``names``, ``in``) imports :mod:`bpfree.engine.plugins` by name,
which loads the built-ins and the installed plugins (this module imports nothing above it).
``bpfree --plugin MODULE`` loads more.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bpfree.core.errors import BpfreeError

T = TypeVar("T")
FILLER = "bpfree.engine.plugins"  # imported by name, on first use: it sits above this tier
_filled = False


def _fill() -> None:
    """Load the built-ins and the installed plugins, once (before anything reads a registry)."""
    global _filled
    if not _filled:
        _filled = True  # first: a registering module that asks a registry does not recurse
        importlib.import_module(FILLER).load()


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def get(self, name: str) -> T:
        _fill()
        try:
            return self._entries[name]
        except KeyError:
            raise BpfreeError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        _fill()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        _fill()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


ALGORITHMS: Registry = Registry("algorithm")
ARCHITECTURES: Registry = Registry("architecture")
DATASETS: Registry = Registry("dataset")
