"""docs/results.md's tables, filled from the tables ``bpfree rebuild docs/evidence`` writes:

    python scripts/results_doc.py [--tables docs/evidence/tables] [--doc docs/results.md] [--check]

Each block of the document between ``<!-- table: NAME -->`` and ``<!-- /table -->`` is replaced
by TABLES/NAME.md (the readable table ``bpfree aggregate`` writes, with its notes), so that no
number in those tables is written by hand. ``--check`` changes nothing and exits 1 when a block
differs from its table (tests/test_results_doc.py runs it against freshly rebuilt tables)."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

BLOCK = re.compile(r"(<!-- table: (?P<name>[a-z_]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def filled(doc: str, tables: Path) -> str:
    """``doc`` with every table block holding its table."""

    def table(match: re.Match) -> str:
        path = tables / f"{match['name']}.md"
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run bpfree rebuild on the evidence folder first")
        return match[1] + path.read_text(encoding="utf-8").rstrip("\n") + "\n" + match[4]

    return BLOCK.sub(table, doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", default="docs/evidence/tables", help="bpfree rebuild's tables")
    parser.add_argument("--doc", default="docs/results.md")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 where a block differs")
    args = parser.parse_args(argv)
    doc = Path(args.doc).read_text(encoding="utf-8")
    blocks = [m["name"] for m in BLOCK.finditer(doc)]
    if not blocks:
        print(f"{args.doc} has no table block", file=sys.stderr)
        return 1
    new = filled(doc, Path(args.tables))
    if args.check:
        if new != doc:
            print(f"{args.doc}: its tables differ from {args.tables} (python scripts/results_doc.py)", file=sys.stderr)
            return 1
        print(f"{args.doc}: {len(blocks)} tables as {args.tables} holds them ({', '.join(blocks)})")
        return 0
    Path(args.doc).write_text(new, encoding="utf-8")
    print(f"{args.doc}: {len(blocks)} tables filled from {args.tables}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
