"""What the Snakefile plans: the config checked in one clear line, the run grid (each
configured experiment on each of its datasets, plus its BP twin on the identical
architecture, for every seed) and the tuning studies behind it.

Everything here is plain Python so that the grid can be tested without Snakemake."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from bpfree.errors import BpfreeError
from bpfree.registry import ALGORITHMS, DATASETS

# bpfree.models (parse_arch) imports torch: imported where the grid is planned, so that
# the tables and figures (which only need BASELINE and the slugs) start without it.

BASELINE = "bp"  # every BP-free method is compared with bp on its own architecture
TABLE_NAMES = ["summary", "methods", "deltas", "paper"]  # results/tables/NAME.{csv,md,tex}
# results/figures/NAME.{svg,png,html}; each is a workflow target: fig_NAME
FIGURE_NAMES = ["accuracy", "energy", "time", "pareto", "val_loss", "memory", "paper"]


@dataclass(frozen=True, order=True)
class Study:
    """One Optuna study: an algorithm tuned on one dataset and architecture."""

    dataset: str
    arch: str
    algorithm: str


@dataclass(frozen=True, order=True)
class Run:
    """One training run: a study's configuration with one seed."""

    dataset: str
    arch: str
    algorithm: str
    seed: int

    @property
    def arch_slug(self) -> str:
        return arch_to_slug(self.arch)

    @property
    def dir(self) -> str:
        return f"results/runs/{self.dataset}/{self.arch_slug}/{self.algorithm}/seed{self.seed}"

    @property
    def study(self) -> Study:
        return Study(self.dataset, self.arch, self.algorithm)


def arch_to_slug(arch: object) -> str:
    """``mlp:256,256`` (a parsed ArchSpec or its text) -> ``mlp-256-256`` (no colons or
    commas in paths)."""
    return str(arch).replace(":", "-").replace(",", "-")


def slug_to_arch(slug: str) -> str:
    kind, *widths = slug.split("-")
    return f"{kind}:{','.join(widths)}"


# -- the config, checked before any job is planned ----------------------------------------
def check_config(config: dict[str, Any], schema_path: str | Path) -> None:
    """Raise :class:`BpfreeError` with one line for the first thing wrong with ``config``:
    a key the schema does not know, a value of the wrong type, an unregistered algorithm or
    dataset, an architecture that does not parse or that the algorithm cannot train."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is not None:
        raise BpfreeError(_schema_message(error))

    import bpfree.algorithms  # noqa: F401  (registers the algorithms)
    import bpfree.data  # noqa: F401  (registers the datasets)
    from bpfree.models import parse_arch

    for i, exp in enumerate(config["experiments"]):
        where = f"experiments[{i}]"
        try:
            klass = ALGORITHMS.get(exp["algorithm"])
            arch = parse_arch(exp["arch"])
            for dataset in exp["datasets"]:
                DATASETS.get(dataset)
        except BpfreeError as err:
            raise BpfreeError(f"{where}: {err}") from None
        for name in dict.fromkeys([exp["algorithm"], BASELINE]):
            kinds = ALGORITHMS.get(name).arch_kinds
            if arch.kind not in kinds:
                raise BpfreeError(
                    f"{where}: {name} cannot train {arch} (its architectures: "
                    f"{', '.join(kinds)}; e.g. {klass.default_arch})"
                )


def _schema_message(error: jsonschema.ValidationError) -> str:
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    where = where.lstrip(".") or "top level"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        unknown = sorted(map(str, set(error.instance) - set(allowed)))  # YAML keys: any type
        return (
            f"unknown key(s) {', '.join(map(repr, unknown))} at {where}; "
            f"valid keys: {', '.join(allowed)} (see config/README.md)"
        )
    if error.validator == "required":
        return f"{where}: {error.message} (see config/README.md)"
    return f"{where}: {error.message}"


# -- the grid -----------------------------------------------------------------------------
def expand_studies(config: dict[str, Any]) -> list[Study]:
    from bpfree.models import parse_arch

    studies: set[Study] = set()
    for exp in config["experiments"]:
        arch = str(parse_arch(exp["arch"]))
        for dataset in exp["datasets"]:
            for algorithm in dict.fromkeys([exp["algorithm"], BASELINE]):
                studies.add(Study(dataset, arch, algorithm))
    return sorted(studies)


def expand_runs(config: dict[str, Any]) -> list[Run]:
    seeds = [int(s) for s in config["seeds"]]
    return sorted(Run(s.dataset, s.arch, s.algorithm, seed) for s in expand_studies(config) for seed in seeds)


def tuning_trials(config: dict[str, Any]) -> int:
    """Trials per study; 0 (no ``tuning`` section, or n_trials 0) trains with the defaults."""
    tuning = config.get("tuning") or {}
    return int(tuning.get("n_trials", 0) or 0)


def needs_download(dataset: str) -> bool:
    """torchvision datasets are fetched once (on a login node); digits ships with sklearn."""
    import bpfree.data  # noqa: F401

    return hasattr(DATASETS.get(dataset), "download")


# Keys only the Snakefile reads; jobs (bpfree train, bpfree tune) read every other section
# (early_stopping, tuning, measurement) from the config file itself.
WORKFLOW_KEYS = ("container", "data_root", "device", "experiments", "seeds", "tune_workers")


def job_config_file(configfiles: list[str | Path], overrides: dict[str, Any]) -> str:
    """The one config file jobs are given. A second --configfile, or a --config override of
    a section jobs read, would silently not reach them, so both are refused."""
    if len(configfiles) != 1:
        raise BpfreeError(
            f"give exactly one --configfile (jobs read early_stopping, tuning and measurement "
            f"from it); got {len(configfiles)}: {', '.join(map(str, configfiles))}"
        )
    unreachable = sorted(set(overrides) - set(WORKFLOW_KEYS))
    if unreachable:
        raise BpfreeError(
            f"--config can override only {', '.join(WORKFLOW_KEYS)}; put "
            f"{', '.join(unreachable)} in the config file, which the jobs read"
        )
    return str(configfiles[0])
