"""``bpfree figures NAME... --tables DIR --out DIR``: the study's figures from its tables."""

from __future__ import annotations

import argparse

from bpfree.core.errors import BpfreeError
from bpfree.core.io import remove_stale_temporaries, writable_directory
from bpfree.core.outputs import FIGURE_NAMES, figures_dir, tables_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("figures", help="draw figures (SVG, PNG, HTML) from bpfree aggregate's tables")
    p.add_argument(
        "names", nargs="*", metavar="NAME", help=f"figures to draw (default: all): {', '.join(FIGURE_NAMES)}"
    )
    p.add_argument("--tables", default=tables_dir(), help="bpfree aggregate --out-dir")
    p.add_argument("--out", default=figures_dir(), help="output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    unknown = [name for name in args.names if name not in FIGURE_NAMES]
    if unknown:
        raise BpfreeError(f"unknown figure(s) {', '.join(map(repr, unknown))}; valid: {', '.join(FIGURE_NAMES)}")
    out = writable_directory(args.out, "--out")  # before any work
    # here, not at the top: keeps altair and polars out of the CLI's start-up
    import polars as pl

    from bpfree.report.figures import draw, read_tables
    from bpfree.report.readback import check_table_set

    # the tables bpfree aggregate wrote as one set, each as it wrote it: a set half rewritten
    # (aggregate killed) or a damaged table is one line here, not a figure of mixed tables
    check_table_set(args.tables)
    try:
        tables = read_tables(args.tables)
    except pl.exceptions.PolarsError as err:
        raise BpfreeError(f"cannot read the tables in {args.tables}: {_first_line(err)}") from None
    for name in args.names or FIGURE_NAMES:
        # this figure's temporaries of an interrupted write (each figure is written by its own job)
        remove_stale_temporaries(out, of=lambda file, name=name: file.rsplit(".", 1)[0] == name)
        try:
            paths = draw(name, tables, out)
        except pl.exceptions.PolarsError as err:
            raise BpfreeError(f"cannot draw {name} from the tables in {args.tables}: {_first_line(err)}") from None
        print(f"{name}: {', '.join(map(str, paths))}")
    return 0


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0]
