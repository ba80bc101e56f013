"""One registry per kind of thing built by name (algorithms, architectures, datasets).

A new algorithm or dataset is one new module plus one ``@REGISTRY.register("name")`` line,
never an edit to a chain of if/elif (as in timm). This module imports nothing that registers
into it: :mod:`bpfree.engine.catalog` loads the built-ins and the plugins (the CLI and the workflow
call it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from bpfree.core.errors import BpfreeError

T = TypeVar("T")


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
        try:
            return self._entries[name]
        except KeyError:
            raise BpfreeError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


ALGORITHMS: Registry = Registry("algorithm")
ARCHITECTURES: Registry = Registry("architecture")
DATASETS: Registry = Registry("dataset")
