"""``bpfree download NAME --root DIR [--from PATH]``: fetch a torchvision dataset (network), or
import a local copy of it (``--from``: a folder of its files, gzipped or not, flat or in
torchvision's layout, or CIFAR's .tar.gz). Either way every file's content is checked
against the digest bpfree pins for it before the root is changed (bpfree/data/content.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bpfree.core.errors import BpfreeError
from bpfree.core.registry import DATASETS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download", help="download a dataset, or import a local copy with --from (digits ships with scikit-learn)"
    )
    p.add_argument("dataset")
    p.add_argument("--root", default="data", help="the data root to write it into (default: data)")
    p.add_argument(
        "--from",
        dest="source",
        metavar="PATH",
        help="import this local copy instead of downloading: a folder holding the files (gzipped or not, "
        "flat or in torchvision's layout), or CIFAR's .tar.gz; checked against pinned digests",
    )
    p.set_defaults(func=run, plugins=True)


def run(args: argparse.Namespace) -> int:
    # here, not at the top: keeps torch out of the CLI's start-up
    import bpfree.data  # noqa: F401

    source = DATASETS.get(args.dataset)
    root = Path(args.root)
    if not hasattr(source, "download"):
        if args.source:
            raise BpfreeError(f"{args.dataset} ships with its package: there is nothing to import with --from")
        print(f"{args.dataset} ships with its package; nothing to download")
        return 0
    if args.source:
        if not hasattr(source, "import_from"):
            raise BpfreeError(f"dataset {args.dataset!r} cannot import a local copy (--from); download it instead")
        source.import_from(root, Path(args.source))
        print(f"{args.dataset}: imported from {args.source}, checked, under {root}")
    else:
        source.download(root)
        print(f"{args.dataset} is under {root}")
    return 0
