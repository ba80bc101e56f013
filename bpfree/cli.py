"""``bpfree`` command line. Each subcommand lives in ``bpfree/commands/<name>.py`` with
``register(subparsers)``; a new one is a new module plus one line in ``COMMANDS``.

User errors (:class:`BpfreeError`) print one line naming what is valid and exit 2; so does an
OSError that no command turned into one (the disk, the file system)."""

from __future__ import annotations

import argparse
import importlib
import sys

from bpfree.core.errors import BpfreeError
from bpfree.engine import plugins

COMMANDS = [
    "bpfree.commands.train",
    "bpfree.commands.spec",
    "bpfree.commands.tune",
    "bpfree.commands.catalogue",
    "bpfree.commands.download",
    "bpfree.commands.aggregate",
    "bpfree.commands.figures",
    "bpfree.commands.rebuild",
    "bpfree.commands.bench",
    "bpfree.commands.schema",
    "bpfree.commands.plan",
    "bpfree.commands.status",
    "bpfree.commands.dashboard",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _get_values(self, action, arg_strings):
        # argparse drops a value of "--" (--out=--) and hands an option of one value an empty list
        if action.nargs is None and action.option_strings and arg_strings == ["--"]:
            self.error(f"{'/'.join(action.option_strings)}: '--' is not a value")
        return super()._get_values(action, arg_strings)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bpfree", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE first: it registers algorithms or datasets (also: $BPFREE_PLUGINS, comma-separated)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "plugins", False):  # commands that build things by name: --plugin modules too
            plugins.load(args.plugin)
        return int(args.func(args) or 0)
    except BpfreeError as err:
        print(f"bpfree: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # the machine's, not ours (a write of a library's, a device): one line
        where = f": {err.filename}" if err.filename else ""
        print(f"bpfree: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bpfree: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
