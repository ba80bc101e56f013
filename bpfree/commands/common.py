"""Arguments that ``train``, ``spec`` and ``tune`` share: what is trained, and where. Their
help texts and defaults come from the run specification (bpfree/core/spec.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bpfree.core.errors import BpfreeError
from bpfree.core.outputs import DEFAULT_CONFIG, RESULTS, results_folder
from bpfree.core.spec import Machine, RunSpec, describe, read_yaml


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


# -- numbers checked where they are parsed: one line naming the range, never a traceback later --
def int_in(low: int, high: int):
    """An argparse type: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: from {low} to {high}")
        return value

    return parse


def seconds_in(low: float, high: float):
    """An argparse type: a finite number of seconds from ``low`` to ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
        if not low <= value <= high:  # NaN fails this too
            raise argparse.ArgumentTypeError(f"{text} is out of range: from {low:g} to {high:g} seconds")
        return value

    return parse


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
