"""What the Snakefile plans: the config checked in one clear line, the run grid (each
configured experiment on each of its datasets, plus its BP twin on the identical
architecture, for every seed) and the tuning studies behind it.

Everything here is plain Python so that the grid can be tested without Snakemake."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpfree.core.errors import BpfreeError
from bpfree.core.outputs import BASELINE, FIGURE_NAMES, TABLE_NAMES, run_dir
from bpfree.core.registry import DATASETS
from bpfree.core.paper import paper_row, study_settings
from bpfree.core.spec import RUN_SECTIONS, ARCH_KIND, EarlyStopping, Tuning, WorkflowConfig, parse

__all__ = ["BASELINE", "FIGURE_NAMES", "TABLE_NAMES", "Run", "Study", "check_config", "expand_runs"]


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
        return run_dir(self.dataset, self.arch_slug, self.algorithm, self.seed)

    @property
    def study(self) -> Study:
        return Study(self.dataset, self.arch, self.algorithm)


# the workflow's arch wildcard (workflow/rules/common.smk): arch_to_slug of any ARCH_PATTERN
ARCH_SLUG_PATTERN = rf"{ARCH_KIND}(-[0-9]+)+"


def arch_to_slug(arch: object) -> str:
    """``mlp:256,256`` (a parsed ArchSpec or its text) -> ``mlp-256-256`` (no colons or
    commas in paths)."""
    return str(arch).replace(":", "-").replace(",", "-")


def slug_to_arch(slug: str) -> str:
    """``mlp-256-256`` -> ``mlp:256,256``; a kind may hold ``-`` itself (``my-net-8`` -> ``my-net:8``)."""
    match = re.fullmatch(r"(.+?)((?:-[0-9]+)+)", slug)
    if match is None:  # no widths: as before, the kind alone
        return f"{slug}:"
    kind, widths = match.groups()
    return f"{kind}:{widths[1:].replace('-', ',')}"


# -- the config, checked before any job is planned ----------------------------------------
def check_config(config: dict[str, Any]) -> WorkflowConfig:
    """The config as a checked :class:`WorkflowConfig` (every default filled in), or a
    :class:`BpfreeError` with one line for the first thing wrong: a key the spec does not
    know, a value of the wrong type or out of range, an unregistered algorithm or dataset,
    an architecture that the algorithm or its BP twin cannot train, a bad search space."""
    checked = parse(WorkflowConfig, config)

    # here, not at the top: keeps optuna and torch out of the CLI's start-up and the workflow's planning
    from bpfree.algorithms import check_trainable
    from bpfree.models import parse_arch
    from bpfree.tuning.space import search_space

    for i, exp in enumerate(checked.experiments):
        try:
            arch = parse_arch(exp.arch)
            for dataset in exp.datasets:
                DATASETS.get(dataset)
            for name in dict.fromkeys([exp.algorithm, BASELINE]):
                check_trainable(name, arch)
        except BpfreeError as err:
            raise BpfreeError(f"experiments[{i}]: {err}") from None
    modes = study_params(checked)
    for name in checked.data_from:
        source = DATASETS.get(name)
        if not hasattr(source, "import_from"):
            raise BpfreeError(f"data_from.{name}: dataset {name!r} ships with its package; there is nothing to import")
    if checked.tuning.n_trials > 0:
        for algorithm in sorted({s.algorithm for s, mode in modes.items() if mode == "tuned"}):
            search_space(algorithm, checked.tuning.search_spaces)
        for study, mode in modes.items():  # tuning.protocol paper: every tuned study has its own
            if mode == "tuned":
                try:
                    study_tuning(checked, study)
                except BpfreeError as err:
                    raise BpfreeError(f"tuning.protocol: paper: {err}") from None
    return checked


def study_tuning(checked: WorkflowConfig, study: Study) -> tuple[Tuning, EarlyStopping]:
    """The study's tuning section and its trials' early stopping, under ``tuning.protocol``
    (bpfree.core.paper.study_settings): what ``bpfree tune --config`` applies to it."""
    return study_settings(checked.tuning, checked.early_stopping, study.algorithm, study.arch, study.dataset)


def study_trials(checked: WorkflowConfig, study: Study) -> int:
    """The study's trial count (the paper's per configuration under tuning.protocol: paper)."""
    return study_tuning(checked, study)[0].n_trials if checked.tuning.n_trials > 0 else 0


def study_params(checked: WorkflowConfig) -> dict[Study, str]:
    """Where each study's runs take their parameters: ``tuned`` (the study, or the defaults
    when tuning is off) or ``paper`` (the paper's code's values: no study). A BP twin shared by
    two experiments must be asked for one way; a paper study must have its row."""
    # here, not at the top: keeps torch out of the CLI's start-up and the workflow's planning
    from bpfree.models import parse_arch

    modes: dict[Study, str] = {}
    origin: dict[Study, int] = {}
    for i, exp in enumerate(checked.experiments):
        arch = str(parse_arch(exp.arch))
        for dataset in exp.datasets:
            for algorithm in dict.fromkeys([exp.algorithm, BASELINE]):
                study = Study(dataset, arch, algorithm)
                if modes.get(study, exp.params) != exp.params:
                    raise BpfreeError(
                        f"experiments[{i}] asks for params: {exp.params} for {algorithm} {arch} on {dataset}, "
                        f"experiments[{origin[study]}] for params: {modes[study]}; the BP twin is shared by "
                        "experiments on one architecture and dataset: give them the same params"
                    )
                if exp.params == "paper":
                    try:
                        paper_row(algorithm, arch, dataset)
                    except BpfreeError as err:
                        raise BpfreeError(f"experiments[{i}] (params: paper): {err}") from None
                modes[study] = exp.params
                origin.setdefault(study, i)
    return modes


# -- the grid -----------------------------------------------------------------------------
def expand_studies(config: dict[str, Any]) -> list[Study]:
    # here, not at the top: keeps torch out of the CLI's start-up and the workflow's planning
    from bpfree.models import parse_arch

    studies: set[Study] = set()
    for exp in config["experiments"]:
        arch = str(parse_arch(exp["arch"]))
        for dataset in exp["datasets"]:
            for algorithm in dict.fromkeys([exp["algorithm"], BASELINE]):
                studies.add(Study(dataset, arch, algorithm))
    return sorted(studies)


def expand_runs(config: dict[str, Any]) -> list[Run]:
    """Every run: each experiment's studies (its BP twin's too) for each of its seeds (its own
    ``seeds``, or the config's); a twin shared by experiments trains every seed any asks for."""
    # here, not at the top: keeps torch out of the CLI's start-up and the workflow's planning
    from bpfree.models import parse_arch

    runs: set[Run] = set()
    for exp in config["experiments"]:
        arch = str(parse_arch(exp["arch"]))
        seeds = [int(s) for s in (exp.get("seeds") or config["seeds"])]
        for dataset in exp["datasets"]:
            for algorithm in dict.fromkeys([exp["algorithm"], BASELINE]):
                runs.update(Run(dataset, arch, algorithm, seed) for seed in seeds)
    return sorted(runs)


def needs_download(dataset: str) -> bool:
    """torchvision datasets are fetched once (on a login node); digits ships with sklearn."""
    # here, not at the top: keeps torch out of the CLI's start-up and the workflow's planning
    import bpfree.data  # noqa: F401

    return hasattr(DATASETS.get(dataset), "download")


# the config sections a run's spec is made of: a change to one rewrites its spec.yaml
RUN_SECTIONS_KEYS = RUN_SECTIONS  # bpfree.core.spec defines them (kept for older imports)


def visible_gpus() -> int:
    """GPUs this machine shows (NVML, honouring CUDA_VISIBLE_DEVICES); 0 without a driver."""
    import os

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001  (no driver, no library: no GPU)
        return 0


def gpus_per_job(device: str) -> int:
    """1 where a measured job computes on a GPU (device cuda, or auto on a machine with one)."""
    if device == "cpu":
        return 0
    return 1 if device.startswith("cuda") or visible_gpus() > 0 else 0


def register_gpus(workflow: Any, device: str) -> None:
    """Unless the user gave ``--resources gpu=N``: as many GPU jobs at once as this machine
    has GPUs; each claims a board of its own (bpfree.engine.gpus). A fixed ``cuda:N`` device puts
    every job on that one board, so then one at a time. On SLURM the scheduler decides."""
    if gpus_per_job(device) and "gpu" not in workflow.global_resources:
        workflow.register_resource("gpu", max(visible_gpus(), 1) if device in ("auto", "cuda") else 1)


# Keys only the Snakefile reads; jobs (bpfree train, bpfree tune) read every other section
# (early_stopping, tuning, measurement) from the config file itself.
WORKFLOW_KEYS = ("container", "data_root", "device", "experiments", "seeds", "tune_workers")


def coerce_overrides(config: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with each ``--config KEY=VALUE`` override (``overrides``: Snakemake's
    ``config_settings.config``) coerced to its key's type. Snakemake parses a value as an
    integer, a float, a boolean, else with YAML's base loader, which makes every scalar inside
    a list or mapping a string: ``seeds=[1,2]`` arrives as ``['1', '2']``, which the strict
    config refuses ("Input should be a valid integer, got '1'"). Here the value is read again
    as its key's type would read text (``'1'`` an integer for a seed, ``2024`` a string for
    ``data_root``); one that does not fit is left as given, for :func:`check_config` to refuse
    in one line. Only the keys ``--config`` may override (WORKFLOW_KEYS) are touched."""
    from pydantic import ValidationError, create_model

    coerced = dict(config)
    for key, value in overrides.items():
        field = WorkflowConfig.model_fields.get(key)
        if key not in WORKFLOW_KEYS or field is None:
            continue  # refused by job_config_file
        model = create_model("Override", **{key: (field.annotation, field)})
        try:
            checked = model.model_validate({key: _as_text(value)}, strict=False)
        except ValidationError:
            continue
        coerced[key] = checked.model_dump(mode="json")[key]
    return coerced


def _as_text(value: Any) -> Any:
    """Every scalar of ``value`` as the text it was given as (Snakemake parsed some)."""
    if isinstance(value, Mapping):
        return {k: _as_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_as_text(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


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
