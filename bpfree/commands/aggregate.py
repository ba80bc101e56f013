"""``bpfree aggregate``: every run's metrics into the study's tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from bpfree.core.errors import BpfreeError
from bpfree.core.io import output_file, remove_stale_temporaries, writable_directory, write_text_atomic
from bpfree.core.outputs import TARGET_FRACTION


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("aggregate", help="collect runs' metrics.json into tables")
    p.add_argument("metrics", nargs="+", help="metrics.json files (history.csv beside each)")
    p.add_argument(
        "--out-dir", help="write summary, methods, deltas and paper tables (.csv, .md, .tex) and histories.csv here"
    )
    p.add_argument("--summary", help="write only the one-row-per-run CSV here")
    p.add_argument(
        "--trials", nargs="*", default=[], help="the tuning studies' trial tables (STUDY.trials.csv) for the cost table"
    )
    p.add_argument(
        "--target-fraction",
        type=float,
        default=TARGET_FRACTION,
        help="to_target table: the target is this fraction of the BP twin's best validation accuracy "
        f"(default {TARGET_FRACTION})",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # here, not at the top: keeps polars out of the CLI's start-up
    from bpfree.report.readback import write_table_set
    from bpfree.report.runs import read_metrics, read_runs
    from bpfree.report.tables import build_tables

    if args.out_dir is None and args.summary is None:
        raise BpfreeError("say where the tables go: --out-dir DIR and/or --summary FILE")
    if not 0 < args.target_fraction <= 1:
        raise BpfreeError(f"--target-fraction must be in (0, 1], got {args.target_fraction}")
    # where they go, checked before any run is read
    if args.summary is not None:
        output_file(args.summary, "--summary")
    if args.out_dir is not None:
        writable_directory(args.out_dir, "--out-dir")
    runs = read_runs(args.metrics)  # each checked once: a run given twice, a broken history
    if args.summary is not None:
        summary = Path(args.summary)  # its temporary of a write a kill interrupted, if any
        remove_stale_temporaries(summary.parent, of=lambda name: name == summary.name)
        write_text_atomic(summary, read_metrics(runs).write_csv(), "the summary table")
    if args.out_dir is not None:
        tables = build_tables(runs, args.trials, target_fraction=args.target_fraction)
        # written as one set: its record last, so that a kill midway leaves no set bpfree figures takes
        write_table_set(tables, args.out_dir)
        not_ok = tables.summary.filter(tables.summary["status"] != "ok").height
        print(
            f"{tables.summary.height} runs ({not_ok} not ok), {tables.methods.height} method groups -> {args.out_dir}"
        )
    return 0
