"""Tier: the faces. ``bpfree bench``: our training loops against the paper-style ones, same math,
one machine (:mod:`bpfree.bench.runner`, :mod:`bpfree.bench.reference`), and the benchmark's
command line (:mod:`bpfree.bench.cli`, which ``bpfree bench`` and ``python -m bpfree.bench``
both use). Imports torch only when a benchmark runs."""
