"""``bpfree plan``: the size of a workflow config's grid before anything runs: the studies and
runs the Snakefile would plan, their worst-case epochs per phase, and a time estimate where
earlier results measured seconds per epoch."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bpfree.commands.common import add_results_arguments, results_of
from bpfree.core.errors import BpfreeError
from bpfree.core.io import output_file, write_text_atomic
from bpfree.core.outputs import DEFAULT_CONFIG
from bpfree.core.spec import read_yaml


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="forecast a config's cost before running it: worst-case epochs per phase, time from earlier runs"
    )
    add_results_arguments(p, "as given to snakemake --configfile")
    p.add_argument(
        "--cores",
        type=int,
        default=os.cpu_count() or 1,
        help="the cores the workflow will run on (snakemake --cores), for the wall time (default: this machine's)",
    )
    p.add_argument("--csv", help="also write one row per study here")
    p.set_defaults(func=run, plugins=True)


def run(args: argparse.Namespace) -> int:
    # here, not at the top: keeps polars out of the CLI's start-up
    from bpfree.workflow.forecast import plan_rows, plan_text, wall_forecast, wall_text

    if args.cores < 1:
        raise BpfreeError(f"--cores must be >= 1, got {args.cores}")

    if args.csv is not None:
        output_file(args.csv, "--csv")
    if args.configfile is None:  # as snakemake: the default config where it is run
        if not Path(DEFAULT_CONFIG).is_file():
            raise BpfreeError(f"no --configfile given and no {DEFAULT_CONFIG} here: give the workflow config")
        args.configfile = DEFAULT_CONFIG
    args.results = results_of(args.results, args.configfile)
    config = read_yaml(args.configfile, "config")
    if not isinstance(config, dict):
        raise BpfreeError(f"{args.configfile} is not a workflow config (not a mapping)")
    try:
        rows = plan_rows(config, args.results)
        own = rows[0]["protocol"] if rows else "bpfree"
        other = "paper" if own == "bpfree" else "bpfree"
        try:  # the other tuning protocol beside it, where it applies to every study (the paper's grid)
            others = plan_rows(config, args.results, protocol=other)
        except BpfreeError:
            others = []  # it does not apply to this grid: nothing to say about it
    except BpfreeError as err:
        raise BpfreeError(f"{args.configfile}: {err}") from None
    print(plan_text(rows, args.configfile), end="")
    print(wall_text(wall_forecast(config, args.results, args.cores)), end="")
    if others:
        print()
        print(plan_text(others, f"{args.configfile} with tuning.protocol: {other}"), end="")
    if args.csv:
        import polars as pl

        write_text_atomic(args.csv, pl.DataFrame(rows).write_csv())
    return 0
