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
from bpfree.training import EarlyStopping


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


def early_stopping_from_mapping(mapping: dict[str, Any] | None) -> EarlyStopping:
    fields = {f.name: f.type for f in dataclasses.fields(EarlyStopping)}
    mapping = mapping or {}
    if not isinstance(mapping, dict):
        raise BpfreeError(f"early_stopping must be a mapping of {', '.join(fields)}")
    unknown = sorted(map(str, set(mapping) - set(fields)))  # YAML keys need not be strings
    if unknown:
        raise BpfreeError(f"unknown early_stopping key(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    kinds = {"patience": int, "max_epochs": int, "min_delta": (int, float), "restore_best": bool,
             "monitor": str, "mode": str}
    for key, value in mapping.items():
        if isinstance(value, bool) != (kinds[key] is bool) or not isinstance(value, kinds[key]):
            raise BpfreeError(f"early_stopping.{key} has the wrong type: {value!r}")
        if isinstance(value, float) and not math.isfinite(value):  # YAML .nan, .inf
            raise BpfreeError(f"early_stopping.{key} must be a finite number, got {value!r}")
    return EarlyStopping(**mapping)


def early_stopping_from_config(path: str | Path | None) -> EarlyStopping:
    if path is None:
        return EarlyStopping()
    config = read_yaml(path) or {}
    if not isinstance(config, dict):
        raise BpfreeError(f"{path} must hold a mapping")
    return early_stopping_from_mapping(config.get("early_stopping"))


def measurement_from_mapping(mapping: dict[str, Any] | None) -> MeasurementSettings:
    fields = [f.name for f in dataclasses.fields(MeasurementSettings)]
    mapping = mapping or {}
    if not isinstance(mapping, dict):
        raise BpfreeError(f"measurement must be a mapping of {', '.join(fields)}")
    unknown = sorted(map(str, set(mapping) - set(fields)))
    if unknown:
        raise BpfreeError(f"unknown measurement key(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    number = (int, float)
    kinds = {"idle_seconds": number, "poll_interval_s": number, "country_iso_code": str,
             "codecarbon": bool, "cpu_tdp_w": (*number, type(None))}
    for key, value in mapping.items():
        if isinstance(value, bool) != (kinds[key] is bool) or not isinstance(value, kinds[key]):
            raise BpfreeError(f"measurement.{key} has the wrong type: {value!r}")
    return MeasurementSettings(**mapping)


def measurement_from_config(path: str | Path | None) -> MeasurementSettings:
    if path is None:
        return MeasurementSettings()
    config = read_yaml(path) or {}
    if not isinstance(config, dict):
        raise BpfreeError(f"{path} must hold a mapping")
    return measurement_from_mapping(config.get("measurement"))


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
