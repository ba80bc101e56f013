"""``bpfree download NAME --root DIR``: fetch a torchvision dataset (needs network)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("download", help="download a dataset (digits ships with scikit-learn)")
    p.add_argument("dataset")
    p.add_argument("--root", default="data")
    p.set_defaults(func=run, catalog=True)


def run(args: argparse.Namespace) -> int:
    import bpfree.data  # noqa: F401
    from bpfree.registry import DATASETS

    source = DATASETS.get(args.dataset)
    root = Path(args.root)
    if hasattr(source, "download"):
        source.download(root)
        print(f"{args.dataset} is under {root}")
    else:
        print(f"{args.dataset} ships with its package; nothing to download")
    return 0
