"""``python -m bpfree.bench [options]``: the same as ``bpfree bench [options]``, without the
rest of the command line (whose other commands import packages, such as jsonschema, that a
bare GPU machine may lack). Runs from a checkout that is not installed."""

from __future__ import annotations

import argparse
import sys

from bpfree.bench import cli as bench
from bpfree.core.errors import BpfreeError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bpfree.bench")
    bench.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except BpfreeError as err:
        print(f"bpfree: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
