"""``bpfree aggregate``: every run's metrics into results tables."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("aggregate", help="collect runs' metrics.json into tables")
    p.add_argument("metrics", nargs="+", help="metrics.json files")
    p.add_argument("--summary", required=True, help="CSV with one row per run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bpfree.aggregate import read_metrics
    from bpfree.io import write_text_atomic

    frame = read_metrics(args.metrics)
    write_text_atomic(args.summary, frame.write_csv())
    print(f"{frame.height} runs -> {args.summary}")
    return 0
