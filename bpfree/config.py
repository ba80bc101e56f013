"""Reading the user's YAML: the workflow config's ``early_stopping`` and ``measurement``
sections, and params files.

Everything that comes in is checked here and fails with one line that says what is valid."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import yaml

from bpfree.errors import BpfreeError
from bpfree.measure import MeasurementSettings
from bpfree.precision import check_precision
from bpfree.training import EarlyStopping, check_checkpoint_every_s


def read_yaml(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise BpfreeError(f"cannot read {path}: {err.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise BpfreeError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None


def _section(name: str, klass: type, kinds: dict[str, Any], mapping: Any) -> Any:
    """``klass(**mapping)`` for the config section ``name``, after checking its keys and the
    type of each value (``kinds``); a NaN or infinity is refused as YAML's .nan/.inf."""
    fields = [f.name for f in dataclasses.fields(klass)]
    mapping = mapping or {}
    if not isinstance(mapping, dict):
        raise BpfreeError(f"{name} must be a mapping of {', '.join(fields)}")
    unknown = sorted(map(str, set(mapping) - set(fields)))  # YAML keys need not be strings
    if unknown:
        raise BpfreeError(f"unknown {name} key(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    for key, value in mapping.items():
        if isinstance(value, bool) != (kinds[key] is bool) or not isinstance(value, kinds[key]):
            raise BpfreeError(f"{name}.{key} has the wrong type: {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise BpfreeError(f"{name}.{key} must be a finite number, got {value!r}")
    return klass(**mapping)


def _config_section(path: str | Path, name: str) -> Any:
    return _top_level(path, name, None)


def _top_level(path: str | Path | None, key: str, default: Any) -> Any:
    """A top-level key of the workflow config at ``path`` (``default`` without one)."""
    if path is None:
        return default
    config = read_yaml(path) or {}
    if not isinstance(config, dict):
        raise BpfreeError(f"{path} must hold a mapping")
    return config.get(key, default)


def checkpoint_every_s_from_config(path: str | Path | None, default: float = 60.0) -> float:
    """The top-level ``checkpoint_every_s`` (seconds between a run's checkpoints; 0: every epoch)."""
    return check_checkpoint_every_s(_top_level(path, "checkpoint_every_s", default))


def precision_from_config(path: str | Path | None) -> str:
    """The top-level ``precision`` (fp32, tf32 or bf16; default fp32, the paper's)."""
    return check_precision(_top_level(path, "precision", "fp32"))


def early_stopping_from_mapping(mapping: dict[str, Any] | None) -> EarlyStopping:
    kinds = {
        "patience": int,
        "max_epochs": int,
        "min_delta": (int, float),
        "restore_best": bool,
        "monitor": str,
        "mode": str,
    }
    return _section("early_stopping", EarlyStopping, kinds, mapping)


def early_stopping_from_config(path: str | Path | None) -> EarlyStopping:
    return EarlyStopping() if path is None else early_stopping_from_mapping(_config_section(path, "early_stopping"))


def measurement_from_mapping(mapping: dict[str, Any] | None) -> MeasurementSettings:
    number = (int, float)
    kinds = {
        "idle_seconds": number,
        "poll_interval_s": number,
        "country_iso_code": str,
        "codecarbon": bool,
        "cpu_tdp_w": (*number, type(None)),
    }
    return _section("measurement", MeasurementSettings, kinds, mapping)


def measurement_from_config(path: str | Path | None) -> MeasurementSettings:
    return MeasurementSettings() if path is None else measurement_from_mapping(_config_section(path, "measurement"))


def read_params_file(path: str | Path, algorithm: str) -> dict[str, Any]:
    """A params file is a flat mapping, or ``{algorithm: NAME, params: {...}}`` as written by
    ``bpfree tune``; a file tuned for another algorithm is refused."""
    content = read_yaml(path) or {}
    if not isinstance(content, dict):
        raise BpfreeError(f"params file {path} must hold a mapping of parameter names to values")
    owner = content.get("algorithm")  # in tune's output, or written by hand into a flat file
    if owner is not None and owner != algorithm:
        raise BpfreeError(f"params file {path} is for algorithm {owner!r}, not {algorithm!r}")
    if "params" in content:
        content = content["params"] or {}
        if not isinstance(content, dict):
            raise BpfreeError(f"'params' in {path} must be a mapping")
    return {key: value for key, value in content.items() if key != "algorithm"}
