"""``bpfree aggregate``: every run's metrics into the study's tables."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("aggregate", help="collect runs' metrics.json into tables")
    p.add_argument("metrics", nargs="+", help="metrics.json files (history.csv beside each)")
    p.add_argument(
        "--out-dir", help="write summary, methods, deltas and paper tables (.csv, .md, .tex) and histories.csv here"
    )
    p.add_argument("--summary", help="write only the one-row-per-run CSV here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bpfree.aggregate import build_tables, read_metrics, write_tables
    from bpfree.errors import BpfreeError
    from bpfree.io import write_text_atomic

    if not (args.out_dir or args.summary):
        raise BpfreeError("say where the tables go: --out-dir DIR and/or --summary FILE")
    if args.summary:
        write_text_atomic(args.summary, read_metrics(args.metrics).write_csv())
    if args.out_dir:
        tables = build_tables(args.metrics)
        write_tables(tables, args.out_dir)
        not_ok = tables.summary.filter(tables.summary["status"] != "ok").height
        print(
            f"{tables.summary.height} runs ({not_ok} not ok), {tables.methods.height} method groups -> {args.out_dir}"
        )
    return 0
