"""Arguments that ``train`` and ``tune`` share: what is trained, and where."""

from __future__ import annotations

import argparse


def add_subject_arguments(p: argparse.ArgumentParser) -> None:
    """--algorithm, --dataset, --arch: what is trained."""
    p.add_argument("--algorithm", required=True, help="e.g. bp, ff, mf, cafo-rand (see: bpfree algorithms)")
    p.add_argument("--dataset", required=True, help="e.g. digits, mnist (see: bpfree datasets)")
    p.add_argument("--arch", help="mlp:W1,W2,... or cnn:C1,C2,... (default: the algorithm's native one)")


def add_machine_arguments(p: argparse.ArgumentParser) -> None:
    """--device, --threads, --data-root: where it runs and reads its data."""
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: every core)")
    p.add_argument("--data-root", default="data", help="where datasets are (default: data)")
