"""``bpfree algorithms`` and ``bpfree datasets``: what can be built by name."""

from __future__ import annotations

import argparse

from bpfree.core.registry import DATASETS


def register(sub: argparse._SubParsersAction) -> None:
    sub.add_parser("algorithms", help="list the registered algorithms").set_defaults(func=algorithms, plugins=True)
    sub.add_parser("datasets", help="list the registered datasets").set_defaults(func=datasets, plugins=True)


def algorithms(args: argparse.Namespace) -> int:
    # here, not at the top: keeps torch out of the CLI's start-up
    from bpfree.algorithms.base import ALGORITHMS

    for name in ALGORITHMS.names():
        klass = ALGORITHMS.get(name)
        print(f"{name:12s} archs: {'/'.join(klass.arch_kinds):8s} default: {klass.default_arch}")
    return 0


def datasets(args: argparse.Namespace) -> int:
    # here, not at the top: keeps torch out of the CLI's start-up
    import bpfree.data  # noqa: F401  (registers the datasets)

    for name in DATASETS.names():
        info = DATASETS.get(name).info
        shape = "x".join(map(str, info.input_shape))
        print(f"{name:14s} classes: {info.num_classes:<4d} input: {shape}")
    return 0
