"""``bpfree figures NAME... --tables DIR --out DIR``: the study's figures from its tables."""

from __future__ import annotations

import argparse

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
    # here, not at the top: keeps altair and polars out of the CLI's start-up
    from bpfree.report.figures import FIGURES, draw, read_tables

    tables = read_tables(args.tables)
    for name in args.names or list(FIGURES):
        paths = draw(name, tables, args.out)
        print(f"{name}: {', '.join(map(str, paths))}")
    return 0
