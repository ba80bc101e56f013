"""Arguments that ``train``, ``spec`` and ``tune`` share: what is trained, and where. Their
help texts and defaults come from the run specification (bpfree/core/spec.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from bpfree.core.errors import BpfreeError
from bpfree.core.io import loads_yaml
from bpfree.core.outputs import DEFAULT_CONFIG, RESULTS, results_folder
from bpfree.core.spec import Machine, RunSpec, Settings, describe, parse, read_yaml


def add_subject_arguments(p: argparse.ArgumentParser, required: bool = True) -> None:
    """--algorithm, --dataset, --arch: what is trained."""
    p.add_argument("--algorithm", required=required, help=describe(RunSpec, "algorithm"))
    p.add_argument("--dataset", required=required, help=describe(RunSpec, "dataset"))
    p.add_argument("--arch", help=describe(RunSpec, "arch"))


def add_machine_arguments(p: argparse.ArgumentParser) -> None:
    """--device, --threads, --data-root: where it runs and reads its data (None: the config's,
    else the spec's default)."""
    p.add_argument("--device", help=describe(Machine, "device"))
    p.add_argument("--threads", type=int, help=describe(Machine, "threads"))
    p.add_argument("--data-root", help=describe(Machine, "data_root"))


def machine_overrides(args: argparse.Namespace) -> dict:
    """The machine settings given on the command line (the rest stay as configured)."""
    given = {"device": args.device, "threads": args.threads, "data_root": args.data_root}
    if getattr(args, "download", False):
        given["download"] = True
    return {k: v for k, v in given.items() if v is not None}


# numbers checked where they are parsed (re-exported: the commands import them from here)
from bpfree.core.argtypes import int_in, seconds_in  # noqa: E402, F401


def add_results_arguments(p: argparse.ArgumentParser, what: str) -> None:
    """``--configfile`` and ``--results``: the workflow config, and its results folder (which
    the config names: its ``results`` key, else results/NAME of its file)."""
    p.add_argument(
        "--configfile",
        help=f"the workflow config, {what} (default: {DEFAULT_CONFIG} where it exists, the Snakefile's)",
    )
    p.add_argument(
        "--results",
        help="the workflow's results folder (default: the config's: its results key, else results/NAME, "
        "NAME the config file's name)",
    )


def results_of(results: str | None, configfile: str | None) -> Path:
    """The results folder a command reads: ``--results`` as given, else the config's (the
    default config's where none is given and it exists), else ``results``."""
    if results is not None:
        return Path(results)
    if configfile is None and Path(DEFAULT_CONFIG).is_file():
        configfile = DEFAULT_CONFIG
    if configfile is None:
        return Path(RESULTS)
    configured = None
    if not Path(configfile).is_file():
        raise BpfreeError(f"--configfile {configfile}: no such file")
    if Path(configfile).is_file():
        data = read_yaml(configfile, "config")
        configured = data.get("results") if isinstance(data, dict) else None
        if configured is not None and not isinstance(configured, str):
            raise BpfreeError(f"{configfile}: results must be a folder's path, got {configured!r}")
    return Path(results_folder(configfile, configured))


# -- run settings from the command line: named flags and --set, both derived from the model -----------
# Each named flag sets one key of the settings model (bpfree/core/spec.py): (section or None for
# a top-level key, key). Its type, choices and help come from that field; nothing is written twice.
RUN_FLAGS: dict[str, tuple[str | None, str]] = {
    "max_epochs": ("early_stopping", "max_epochs"),
    "measure_idle_s": ("measurement", "idle_seconds"),
    "measure_poll_s": ("measurement", "poll_interval_s"),
    "measure_country": ("measurement", "country_iso_code"),
    "measure_codecarbon": ("measurement", "codecarbon"),
    "profile_epoch": ("measurement", "profile_epoch"),
    "precision": (None, "precision"),
    "checkpoint_every_s": (None, "checkpoint_every_s"),
}
# bpfree tune's: its --max-epochs sets a trial's budget (tuning.max_epochs), train's a run's
TUNE_FLAGS: dict[str, tuple[str | None, str]] = {
    "max_epochs": ("tuning", "max_epochs"),  # a trial's budget (bpfree train's --max-epochs: a run's)
    "seed": ("tuning", "seed"),
    "timeout": ("tuning", "timeout"),
    "pruner": ("tuning", "pruner"),
}


def _field(section: str | None, key: str):
    owner = Settings if section is None else Settings.model_fields[section].annotation
    return owner.model_fields[key]


def add_settings_arguments(p: argparse.ArgumentParser, flags: dict[str, tuple[str | None, str]]) -> None:
    """The named flags of ``flags`` (type, choices and help from the settings model) and
    ``--set SECTION.KEY=VALUE`` for any other key of the config's settings."""
    for name, (section, key) in flags.items():
        field = _field(section, key)
        where = f"{section}.{key}" if section else key
        kwargs: dict[str, Any] = {"help": f"sets {where}: " + (field.description or key).replace("%", "%%")}
        choices = (
            [a for a in get_args(field.annotation) if not isinstance(a, type)]
            if get_origin(field.annotation) is Literal
            else None
        )
        base = {a for a in (get_args(field.annotation) or (field.annotation,)) if a is not type(None)}
        if choices:
            kwargs["choices"] = choices
        elif base == {bool}:
            kwargs["choices"] = ["on", "off"]
        elif base == {int}:
            kwargs["type"] = int
        elif base == {float}:
            kwargs["type"] = float
        p.add_argument("--" + name.replace("_", "-"), **kwargs)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="set any key of the config's settings (e.g. early_stopping.patience=20, measurement.idle_reuse_s=0); "
        "checked as the config file's would be; after --config and the named flags",
    )


def settings_overrides(args: argparse.Namespace, flags: dict[str, tuple[str | None, str]]) -> dict[str, Any]:
    """The named flags and ``--set`` entries given, as a nested mapping of settings keys."""
    changes: dict[str, Any] = {}

    def put(section: str | None, key: str, value: Any) -> None:
        if section is None:
            changes[key] = value
        else:
            changes.setdefault(section, {})[key] = value

    for name, (section, key) in flags.items():
        value = getattr(args, name, None)
        if value is not None:
            put(section, key, {"on": True, "off": False}.get(value, value) if value in ("on", "off") else value)
    for entry in getattr(args, "set", None) or []:
        path, sep, text = entry.partition("=")
        parts = path.strip().split(".")
        if not sep or not all(parts) or len(parts) > 2:
            raise BpfreeError(
                f"--set {entry!r}: expected SECTION.KEY=VALUE or KEY=VALUE (e.g. early_stopping.patience=20)"
            )
        value = loads_yaml(text, f"--set {path}") if text.strip() else None
        put(parts[0] if len(parts) == 2 else None, parts[-1], value)
    return changes


def apply_settings(settings: Settings, changes: dict[str, Any]) -> Settings:
    """``settings`` with ``changes`` (settings_overrides), checked as a config file is: an unknown
    key or a bad value is one line naming what is valid."""
    if not changes:
        return settings
    merged = settings.model_dump()
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return parse(Settings, merged, "command line")
