"""The paper's search spaces (``search_spaces.yaml`` beside this file), overridden per parameter by
the config's ``tuning.search_spaces``, as Optuna distributions checked against each algorithm's Params."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from bpfree.algorithms import params_from_mapping
from bpfree.core.errors import BpfreeError
from bpfree.core.registry import ALGORITHMS


# -- search spaces --------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchSpace:
    """What Optuna samples (``distributions``) and what every trial fixes (``fixed``), by the
    names of the algorithm's Params fields; everything else keeps the Params default."""

    algorithm: str
    distributions: dict[str, BaseDistribution]
    fixed: dict[str, Any] = field(default_factory=dict)

    def params(self, sampled: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.fixed, **sampled}

    def describe(self) -> dict[str, Any]:
        """The space in the YAML entry format it was written in."""
        entries: dict[str, Any] = dict(self.fixed)
        for name, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                entries[name] = {"type": "categorical", "choices": list(dist.choices)}
                continue
            kind = "int" if isinstance(dist, IntDistribution) else "float"
            entries[name] = {"type": kind, "low": dist.low, "high": dist.high, "log": dist.log}
            if dist.step not in (None, 1) or (kind == "float" and dist.step is not None):
                entries[name]["step"] = dist.step
        return entries


def default_search_spaces() -> dict[str, dict[str, Any]]:
    """The paper's spaces, shipped as ``bpfree/tuning/search_spaces.yaml``."""
    text = resources.files("bpfree.tuning").joinpath("search_spaces.yaml").read_text()
    return yaml.safe_load(text)


def search_space(algorithm: str, overrides: Mapping[str, Any] | None = None) -> SearchSpace:
    """The paper's space for ``algorithm`` with the config's ``tuning.search_spaces``
    overrides applied parameter by parameter; every name is checked against the Params."""
    defaults = default_search_spaces()
    overrides = dict(overrides or {})
    known = set(defaults) | set(ALGORITHMS.names())
    unknown = sorted(map(str, set(overrides) - known))  # YAML keys need not be strings
    if unknown:
        raise BpfreeError(
            f"tuning.search_spaces names unknown algorithm(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(sorted(known))}"
        )
    klass = ALGORITHMS.get(algorithm)
    own = overrides.get(algorithm) or {}
    if not isinstance(own, Mapping):
        raise BpfreeError(f"tuning.search_spaces.{algorithm} must map parameter names to entries")
    # a plugin's algorithm may bring its own space (a class attribute ``search_space``)
    entries = {**(defaults.get(algorithm) or getattr(klass, "search_space", None) or {}), **own}
    if not entries:
        raise BpfreeError(
            f"no search space for algorithm {algorithm!r}; give one under "
            f"tuning.search_spaces.{algorithm} in the config"
        )
    fields = [f.name for f in dataclasses.fields(klass.Params)]
    distributions, fixed = {}, {}
    for name, entry in entries.items():
        where = f"search space of {algorithm}"
        if name not in fields:
            raise BpfreeError(f"{where}: unknown parameter {name!r}; valid: {', '.join(fields)}")
        if isinstance(entry, Mapping):
            distributions[name] = _distribution(f"{where}, {name}", entry)
        else:
            fixed[name] = entry
    space = SearchSpace(algorithm, distributions, fixed)
    _check_values(space)
    return space


_ENTRY_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


def _distribution(where: str, entry: Mapping[str, Any]) -> BaseDistribution:
    kind = entry.get("type")
    if kind not in _ENTRY_KEYS:
        raise BpfreeError(f"{where}: type must be one of float, int, categorical, got {kind!r}")
    unknown = sorted(map(str, set(entry) - _ENTRY_KEYS[kind]))
    if unknown:
        raise BpfreeError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid for {kind}: {', '.join(sorted(_ENTRY_KEYS[kind]))}"
        )
    try:
        if kind == "categorical":
            choices = entry.get("choices")
            if not isinstance(choices, list) or not choices:
                raise BpfreeError(f"{where}: choices must be a non-empty list")
            return CategoricalDistribution(choices)
        if "low" not in entry or "high" not in entry:
            raise BpfreeError(f"{where}: a {kind} entry needs low and high")
        number = _finite_float if kind == "float" else _strict_int
        low, high = number(entry["low"]), number(entry["high"])
        log = entry.get("log", False)
        if not isinstance(log, bool):
            raise BpfreeError(f"{where}: log must be true or false, got {log!r}")
        if kind == "float":
            step = entry.get("step")
            step = None if step is None else _finite_float(step)
            return FloatDistribution(low, high, log=log, step=step)
        return IntDistribution(low, high, log=log, step=_strict_int(entry.get("step", 1)))
    except (TypeError, ValueError) as err:  # Optuna's own checks: low <= high, log needs low > 0
        raise BpfreeError(f"{where}: {err}") from None


def _finite_float(value: Any) -> float:
    try:
        number = float(value)  # a string too: YAML 1.1 reads 1e-5 as one
    except OverflowError:
        number = math.inf
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _strict_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _check_values(space: SearchSpace) -> None:
    """Every value the space can produce must be a valid Params value: try the bounds and
    every choice, so a float range for an int parameter fails now, not in trial 37."""
    for name, dist in space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            candidates = list(dist.choices)
        else:
            candidates = [dist.low, dist.high]
        for value in candidates:
            try:
                params_from_mapping(space.algorithm, space.params({name: value}))
            except BpfreeError as err:
                raise BpfreeError(f"search space of {space.algorithm}: {err}") from None
    try:
        params_from_mapping(space.algorithm, space.fixed)
    except BpfreeError as err:
        raise BpfreeError(f"search space of {space.algorithm}: {err}") from None
