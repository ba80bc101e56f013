"""argparse types that check a number where it is parsed: one line naming the range, never a
traceback later (every command line, bpfree's and ``python -m bpfree.bench``'s, uses them)."""

from __future__ import annotations

import argparse


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
