"""``bpfree rebuild RESULTS``: every table and figure of a results folder, from the run records
(and trial tables) it holds, with no training: what ``bpfree aggregate`` and ``bpfree figures``
do in the workflow, in one command. docs/evidence/ is rebuilt this way."""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

from bpfree.core.errors import BpfreeError
from bpfree.core.outputs import (
    RUN_METRICS,
    STUDY_TRIALS,
    TARGET_FRACTION,
    figures_dir,
    run_file,
    study_file,
    tables_dir,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rebuild", help="every table and figure of a results folder from the run records it holds (no training)"
    )
    p.add_argument("results", help="the results folder (RESULTS/runs/DATASET/ARCH/ALGORITHM/seedN/metrics.json)")
    p.add_argument(
        "--target-fraction",
        type=float,
        default=TARGET_FRACTION,
        help=f"the to_target table's target (default {TARGET_FRACTION}, the config's default)",
    )
    p.add_argument("--tables-only", action="store_true", help="the tables, not the figures (seconds instead of tens)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bpfree.commands import aggregate, figures  # the same code as the workflow's two rules

    results = Path(args.results)
    if not results.is_dir():
        raise BpfreeError(f"no results folder at {results}")
    where = glob.escape(str(results))
    metrics = sorted(glob.glob(run_file(RUN_METRICS, "*", "*", "*", "*", results=where)))
    if not metrics:
        raise BpfreeError(
            f"no run record under {results}/runs (RESULTS/runs/DATASET/ARCH/ALGORITHM/seedN/metrics.json)"
        )
    trials = sorted(glob.glob(study_file(STUDY_TRIALS, "*", "*", "*", results=where)))
    aggregate.run(
        argparse.Namespace(
            metrics=metrics,
            out_dir=tables_dir(results),
            summary=None,
            trials=trials,
            target_fraction=args.target_fraction,
        )
    )
    if args.tables_only:
        return 0
    return figures.run(argparse.Namespace(names=[], tables=tables_dir(results), out=figures_dir(results)))
