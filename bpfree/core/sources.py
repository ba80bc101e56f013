"""Energy sources by name, and the one rule that labels energy summed over several (no torch:
the meter, the tables and ``bpfree status`` all use it)."""

from __future__ import annotations

# Every energy source, best first: the order a domain's counters are tried in (the meter's
# preference) and the one order a combined label names them in.
SOURCE_ORDER = ("nvml-counter", "nvml-polling-instant", "nvml-polling", "rapl", "estimate")


def combine_sources(values) -> str | None:
    """One label for energy measured by several sources (pieces of a resumed run, the runs of a
    study, a whole grid): each source once, best first (:data:`SOURCE_ORDER`; unknown ones after,
    by name), joined by ``+`` (``nvml-counter+estimate``), so that a sum with an estimate in it
    never reads as measured; None when none is named. Labels already combined are split first."""
    named = {part for value in values if value for part in str(value).split("+") if part}
    rank = {s: i for i, s in enumerate(SOURCE_ORDER)}
    ordered = sorted(named, key=lambda s: (rank.get(s, len(rank)), s))
    return "+".join(ordered) or None
