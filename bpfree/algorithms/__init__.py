"""Training algorithms, each in its own module, registered by name in ``ALGORITHMS``."""

from bpfree.algorithms.base import (
    Algorithm,
    Evaluation,
    Stage,
    build_algorithm,
    params_from_mapping,
)
from bpfree.algorithms import bp  # noqa: F401  (registers "bp")

__all__ = ["Algorithm", "Evaluation", "Stage", "build_algorithm", "params_from_mapping"]
