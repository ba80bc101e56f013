"""One registry per kind of thing built by name (algorithms, architectures, datasets).

A new algorithm or dataset is one new module plus one ``@REGISTRY.register("name")`` line,
never an edit to a chain of if/elif (as in timm). In bpfree's tree, a module dropped into
``bpfree/algorithms/`` is found on its own; from another package, name the module under the
entry-point group ``bpfree.plugins`` and it is imported the first time a registry is asked
(README, "Adding an algorithm or a dataset").
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from bpfree.errors import BpfreeError

T = TypeVar("T")
PLUGIN_GROUP = "bpfree.plugins"
_plugins_loaded = False


def load_plugins() -> None:
    """Import every module named under the ``bpfree.plugins`` entry-point group, once; each
    registers what it adds. A plugin that fails to import is one line naming it."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True  # first: a plugin that asks a registry does not recurse
    import bpfree.algorithms  # noqa: F401  (the built-ins first: plugins build on them)
    import bpfree.data  # noqa: F401

    for point in entry_points(group=PLUGIN_GROUP):
        try:
            importlib.import_module(point.value.split(":")[0])
        except Exception as err:  # noqa: BLE001  (anything a third-party import raises)
            raise BpfreeError(
                f"bpfree plugin {point.name!r} ({point.value}, from package "
                f"{point.dist.name if point.dist else '?'}) failed to import: {type(err).__name__}: {err}"
            ) from None


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
        load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            raise BpfreeError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        load_plugins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


ALGORITHMS: Registry = Registry("algorithm")
ARCHITECTURES: Registry = Registry("architecture")
DATASETS: Registry = Registry("dataset")
