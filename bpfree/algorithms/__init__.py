"""Training algorithms, each in its own module, registered by name in ``ALGORITHMS``."""

from bpfree.algorithms.base import (
    Algorithm,
    Evaluation,
    Stage,
    build_algorithm,
    params_from_mapping,
)
from bpfree.algorithms import bp  # noqa: F401  (registers "bp")
from bpfree.algorithms import cafo  # noqa: F401  (registers "cafo-rand", "cafo-dfa")
from bpfree.algorithms import ff  # noqa: F401  (registers "ff")
from bpfree.algorithms import mf  # noqa: F401  (registers "mf")

__all__ = ["Algorithm", "Evaluation", "Stage", "build_algorithm", "params_from_mapping"]
