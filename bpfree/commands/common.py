"""Arguments that ``train``, ``spec`` and ``tune`` share: what is trained, and where. Their
help texts and defaults come from the run specification (bpfree/core/spec.py)."""

from __future__ import annotations

import argparse

from bpfree.core.spec import Machine, RunSpec, describe


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
