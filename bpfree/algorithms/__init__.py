"""Tier 2, what is trained: training algorithms, each in its own module reading like its
equations, registered by name in ``ALGORITHMS``; the interface they share (``base``). Imports
core, data and models."""

import importlib as _importlib
import pkgutil as _pkgutil

from bpfree.algorithms.base import (
    Algorithm,
    Evaluation,
    Stage,
    build_algorithm,
    check_trainable,
    params_from_mapping,
)

# every module of this package, so that a new algorithm is one new file: bp ("bp"), cafo
# ("cafo-rand", "cafo-dfa"), ff ("ff"), mf ("mf"), and helpers that register nothing
for _module in sorted(m.name for m in _pkgutil.iter_modules(__path__)):
    _importlib.import_module(f"{__name__}.{_module}")

__all__ = ["Algorithm", "Evaluation", "Stage", "build_algorithm", "check_trainable", "params_from_mapping"]
