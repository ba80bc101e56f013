"""Epoch budgets: how many epochs one trial or run may train at most, every stage counted (MF
trains one stage per layer, cafo-dfa a DFA stage before its predictors; each stage is capped
by the early-stopping budget and by its own limit). ``bpfree plan`` multiplies them out before
anything runs; hyperband takes a trial's budget as its largest resource."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from typing import Any

from bpfree.core.registry import DATASETS
from bpfree.core.spec import EarlyStopping


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

    arch = parse_arch(arch) if isinstance(arch, str) else arch
    small = ArchSpec(arch.kind, tuple(min(w, 4) for w in arch.widths))
    info = DATASETS.get(dataset).info
    algo = build_algorithm(algorithm, small, info, dict(params or {}), device="cpu")
    policy = EarlyStopping(max_epochs=max_epochs)
    return [policy.stage_budget(stage.max_epochs) for stage in algo.stages()]


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


def stage_length_params(algorithm: str, arch: Any, dataset: str, space: Any) -> list[str]:
    """The space's integer parameters that set how long a stage trains (MF's
    ``epochs_per_layer``, cafo-dfa's ``dfa_epochs``), found by asking the algorithm for its
    stages at the parameter's two ends, nothing else capping them."""
    from optuna.distributions import IntDistribution

    unbounded = 1 << 30
    base = _candidates(space)[0]
    found = []
    for name, dist in space.distributions.items():
        if not isinstance(dist, IntDistribution) or dist.low == dist.high:
            continue
        low = stage_budgets(algorithm, arch, dataset, {**base, name: dist.low}, unbounded)
        high = stage_budgets(algorithm, arch, dataset, {**base, name: dist.high}, unbounded)
        if low != high and dist.high in high:
            found.append(name)
    return found


def cap_stage_lengths(space: Any, algorithm: str, arch: Any, dataset: str, budget: int) -> tuple[Any, list[str]]:
    """The space with every stage length sampled within a trial's epoch budget, so that a trial
    trains the length it samples (a longer one would be cut to the budget inside the trial and
    not in the final run: the study could not see what it tunes); and a line per cap."""
    from optuna.distributions import IntDistribution

    capped, said = dict(space.distributions), []
    for name in stage_length_params(algorithm, arch, dataset, space):
        dist = capped[name]
        if dist.high <= budget:
            continue
        capped[name] = IntDistribution(min(dist.low, budget), budget, log=dist.log, step=dist.step)
        said.append(
            f"{algorithm}'s {name} sampled in [{capped[name].low}, {budget}], not [{dist.low}, {dist.high}]: "
            f"a trial trains at most {budget} epochs per stage (its epoch budget)"
        )
    return dataclasses.replace(space, distributions=capped), said
