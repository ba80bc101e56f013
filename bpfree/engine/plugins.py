"""Everything that registers into the registries, loaded once: the built-in algorithms and
datasets, then plugins: modules named under the entry-point group ``bpfree.plugins`` of an
installed package, in the environment variable ``BPFREE_PLUGINS`` (comma-separated), or
given with ``bpfree --plugin MODULE``. The CLI and the workflow call :func:`load`."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from importlib.metadata import entry_points

from bpfree.core.errors import BpfreeError

PLUGIN_GROUP = "bpfree.plugins"
PLUGIN_ENV = "BPFREE_PLUGINS"
_imported: set[str] = set()


def load(modules: Iterable[str] = ()) -> None:
    """Import the built-ins, then each plugin module not imported yet; a plugin that fails to
    import stops with one line naming it and where it was declared."""
    # here, not at the top: keeps torch out of the CLI's start-up and the workflow's planning
    import bpfree.algorithms  # noqa: F401  (the built-ins first: plugins build on them)
    import bpfree.data  # noqa: F401

    wanted: list[tuple[str, str]] = []
    for point in entry_points(group=PLUGIN_GROUP):
        source = f"entry point {point.name!r} of package {point.dist.name if point.dist else '?'}"
        wanted.append((point.value.split(":")[0], source))
    wanted += [(m.strip(), f"${PLUGIN_ENV}") for m in os.environ.get(PLUGIN_ENV, "").split(",") if m.strip()]
    wanted += [(m, "--plugin") for m in modules]
    for module, source in wanted:
        if module in _imported:
            continue
        _imported.add(module)  # first: a plugin that asks a registry does not recurse
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001  (anything a third-party import raises)
            raise BpfreeError(
                f"bpfree plugin {module!r} ({source}) failed to import: {type(err).__name__}: {err}"
            ) from None
