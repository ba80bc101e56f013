"""``bpfree bench``: the benchmark's command line, defined beside the benchmark
(:mod:`bpfree.bench.cli`, which ``python -m bpfree.bench`` uses too)."""

from bpfree.bench.cli import register

__all__ = ["register"]
