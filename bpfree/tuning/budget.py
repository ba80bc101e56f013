"""Epoch budgets: how many epochs one trial or run may train at most, every stage counted (MF
trains one stage per layer, cafo-dfa a DFA stage before its predictors; each stage is capped
by the early-stopping budget and by its own limit). ``bpfree plan`` multiplies them out before
anything runs; hyperband takes a trial's budget as its largest resource."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from bpfree.core.registry import DATASETS
from bpfree.engine import catalog


# -- epoch budgets --------------------------------------------------------------------------
def stage_budgets(
    algorithm: str, arch: Any, dataset: str, params: Mapping[str, Any] | None, max_epochs: int
) -> list[int]:
    """The most epochs each stage of one trial or run may train: the stage's own limit
    capped by the early-stopping budget, as ``bpfree.engine.loop.fit`` caps it. The stages
    follow the architecture's depth, not its widths, so a tiny model of the same depth is
    built to ask for them (nothing is trained, no data is read)."""
    # here, not at the top: keeps torch out of the workflow's planning (bpfree plan)
    from bpfree.algorithms import build_algorithm
    from bpfree.models import ArchSpec, parse_arch

    catalog.load()
    arch = parse_arch(arch) if isinstance(arch, str) else arch
    small = ArchSpec(arch.kind, tuple(min(w, 4) for w in arch.widths))
    info = DATASETS.get(dataset).info
    algo = build_algorithm(algorithm, small, info, dict(params or {}), device="cpu")
    return [min(stage.max_epochs or max_epochs, max_epochs) for stage in algo.stages()]


def _candidates(space: Any) -> list[dict[str, Any]]:
    """Parameter sets that bound a trial's epochs from above: every integer at its high end
    (an epoch count is one), every combination of categorical choices (at most 64 of them),
    floats at their low end (a learning rate changes no budget)."""
    if space is None:
        return [{}]
    from optuna.distributions import CategoricalDistribution, IntDistribution

    base, choices = dict(space.fixed), {}
    for name, dist in space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            choices[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution):
            base[name] = dist.high
        else:
            base[name] = dist.low
    combos = list(itertools.islice(itertools.product(*choices.values()), 64))
    return [{**base, **dict(zip(choices, combo, strict=True))} for combo in combos]


def worst_case_epochs(algorithm: str, arch: Any, dataset: str, space: Any, max_epochs: int) -> int:
    """The most epochs one trial (``space``: a tuning.SearchSpace) or one run (``space``
    None: the algorithm's defaults) may train, every stage counted."""
    return max(sum(stage_budgets(algorithm, arch, dataset, params, max_epochs)) for params in _candidates(space))
