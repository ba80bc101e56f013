"""The run grid the Snakefile expands: each configured experiment on each of its datasets,
plus its BP twin on the identical architecture, for every seed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bpfree.models import ArchSpec, parse_arch


@dataclass(frozen=True, order=True)
class Run:
    dataset: str
    arch: str
    algorithm: str
    seed: int

    @property
    def arch_slug(self) -> str:
        return arch_to_slug(parse_arch(self.arch))


def arch_to_slug(arch: ArchSpec) -> str:
    """``mlp:256,256`` -> ``mlp-256-256`` (no colons or commas in paths)."""
    return "-".join([arch.kind, *map(str, arch.widths)])


def slug_to_arch(slug: str) -> str:
    kind, *widths = slug.split("-")
    return f"{kind}:{','.join(widths)}"


def expand_runs(config: dict[str, Any]) -> list[Run]:
    runs: set[Run] = set()
    for exp in config["experiments"]:
        arch = str(parse_arch(exp["arch"]))
        for dataset in exp["datasets"]:
            for algorithm in dict.fromkeys([exp["algorithm"], "bp"]):
                runs.update(Run(dataset, arch, algorithm, int(s)) for s in config["seeds"])
    return sorted(runs)
