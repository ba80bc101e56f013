"""``bpfree bench``: our training loops against the paper-style ones, same math, one machine."""

from bpfree.bench.runner import CASES, REGIMES, BenchConfig, format_table, run_bench

__all__ = ["CASES", "REGIMES", "BenchConfig", "format_table", "run_bench"]
