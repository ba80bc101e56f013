"""What a workflow config plans: each experiment on each of its datasets, plus its BP twin on
the identical architecture, for every seed (the experiment's own, else the config's), and the
tuning studies behind the runs. :func:`expand_grid` is the one expansion: the Snakefile's rules
(workflow/rules/common.smk), ``bpfree plan``, the trial count each ``bpfree tune`` job is given
and ``bpfree status`` all read it. Plain Python, no torch: testable without Snakemake."""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpfree.core.errors import BpfreeError
from bpfree.core.outputs import BASELINE, folder_name, run_dir, study_dir
from bpfree.core.paper import paper_row, study_settings
from bpfree.core.spec import ARCH_KIND, ARCH_PATTERN, EarlyStopping, Tuning, WorkflowConfig, parse

# the workflow's arch wildcard (workflow/rules/common.smk): arch_to_slug of any ARCH_PATTERN
ARCH_SLUG_PATTERN = rf"{ARCH_KIND}(-[0-9]+)+"


def canonical_arch(arch: object) -> str:
    """``mlp:064,8`` -> ``mlp:64,8``: an architecture as its runs' folders and the paper's rows
    name it (as ``str(bpfree.models.parse_arch(arch))``, without importing torch)."""
    text = str(arch).strip()
    if re.fullmatch(ARCH_PATTERN, text) is None:
        raise BpfreeError(f"malformed architecture {text!r}: expected KIND:W1,W2,... (e.g. mlp:1000,1000)")
    kind, widths = text.split(":")
    return f"{kind}:{','.join(str(int(w)) for w in widths.split(','))}"


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


@dataclass(frozen=True, order=True)
class Study:
    """One Optuna study: an algorithm tuned on one dataset and architecture (``mlp:64,64``)."""

    dataset: str
    arch: str
    algorithm: str

    @property
    def arch_slug(self) -> str:
        return arch_to_slug(self.arch)

    @property
    def where(self) -> tuple[str, str, str]:
        """(dataset, arch slug, algorithm): the study's part of its paths (bpfree.core.outputs)."""
        return self.dataset, self.arch_slug, self.algorithm

    def __str__(self) -> str:
        return f"{self.dataset} {self.arch} {self.algorithm}"


@dataclass(frozen=True, order=True)
class Run(Study):
    """One training run: a study's configuration with one seed (the one key type of a run's
    paths: ``where`` is its study's, ``dir`` its folder)."""

    seed: int

    @property
    def dir(self) -> str:
        return run_dir(self.dataset, self.arch_slug, self.algorithm, self.seed)

    @property
    def study(self) -> Study:
        return Study(self.dataset, self.arch, self.algorithm)

    def __str__(self) -> str:
        return f"{self.study} seed{self.seed}"


@dataclass(frozen=True)
class Grid:
    """What a config plans (:func:`expand_grid`), or what a results folder holds (:func:`grid_on_disk`)."""

    studies: tuple[Study, ...]  # sorted
    runs: tuple[Run, ...]  # sorted
    params: Mapping[Study, str]  # per study: tuned (its study's best, or the defaults) or paper (the paper's row)
    trials: Mapping[Study, int | None]  # per study: its trial count; 0: no study; None: not known (no config)

    def seeds(self, study: Study) -> list[int]:
        return [run.seed for run in self.runs if run.study == study]

    def tuned(self, study: Study) -> bool:
        """Whether a study runs for it: tuning on, and not the paper's values."""
        return self.trials.get(study, 0) != 0


def expand_grid(config: WorkflowConfig | Mapping[str, Any]) -> Grid:
    """The grid a workflow config plans (``config``: checked, or as read from its file): every
    experiment's studies (its BP twin's too) and their runs, one per seed (the experiment's
    ``seeds``, else the config's; a twin shared by experiments trains every seed any asks for),
    each study's params mode and trial count (the paper's per configuration under
    ``tuning.protocol: paper``). One BpfreeError line where a name cannot be a folder, a shared
    BP twin is asked for two ways, or a paper study has no row."""
    checked = config if isinstance(config, WorkflowConfig) else parse(WorkflowConfig, dict(config))
    modes: dict[Study, str] = {}
    origin: dict[Study, int] = {}
    runs: set[Run] = set()
    for i, exp in enumerate(checked.experiments):
        arch = canonical_arch(exp.arch)
        # each name becomes a folder under the results: none may lead out of it
        folder_name(exp.algorithm, f"experiments[{i}].algorithm")
        for dataset in exp.datasets:
            folder_name(dataset, f"experiments[{i}].datasets")
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
                runs.update(Run(dataset, arch, algorithm, seed) for seed in exp.seeds or checked.seeds)
    trials = {}
    for study, mode in modes.items():
        try:
            trials[study] = study_trials(checked, study) if mode == "tuned" else 0
        except BpfreeError as err:
            raise BpfreeError(f"tuning.protocol: paper: {err}") from None
    return Grid(tuple(sorted(modes)), tuple(sorted(runs)), modes, trials)


def study_tuning(checked: WorkflowConfig, study: Study) -> tuple[Tuning, EarlyStopping]:
    """The study's tuning section and its trials' early stopping, under ``tuning.protocol``
    (bpfree.core.paper.study_settings): what ``bpfree tune --config`` applies to it."""
    return study_settings(checked.tuning, checked.early_stopping, study.algorithm, study.arch, study.dataset)


def study_trials(checked: WorkflowConfig, study: Study) -> int:
    """The study's trial count (the paper's per configuration under tuning.protocol: paper)."""
    return study_tuning(checked, study)[0].n_trials if checked.tuning.n_trials > 0 else 0


def study_params(checked: WorkflowConfig) -> dict[Study, str]:
    """Where each study's runs take their parameters: ``tuned`` (the study, or the defaults
    when tuning is off) or ``paper`` (the paper's code's values: no study)."""
    return dict(expand_grid(checked).params)


def expand_studies(config: WorkflowConfig | Mapping[str, Any]) -> list[Study]:
    return list(expand_grid(config).studies)


def expand_runs(config: WorkflowConfig | Mapping[str, Any]) -> list[Run]:
    """Every run (:func:`expand_grid`)."""
    return list(expand_grid(config).runs)


def grid_on_disk(results: str | Path) -> Grid:
    """Without a config: the studies and runs a results folder holds (their trial counts unknown)."""
    seeds: dict[Study, set[int]] = {}
    root = glob.escape(str(results))  # the patterns' own * only
    for d in sorted(map(Path, glob.glob(run_dir("*", "*", "*", "*", results=root)))):
        study = Study(d.parent.parent.parent.name, slug_to_arch(d.parent.parent.name), d.parent.name)
        if d.name.removeprefix("seed").isdigit():
            seeds.setdefault(study, set()).add(int(d.name.removeprefix("seed")))
    for d in sorted(map(Path, glob.glob(study_dir("*", "*", "*", results=root)))):
        if d.is_dir():
            seeds.setdefault(Study(d.parent.parent.name, slug_to_arch(d.parent.name), d.name), set())
    runs = sorted(Run(study.dataset, study.arch, study.algorithm, s) for study, v in seeds.items() for s in v)
    return Grid(tuple(sorted(seeds)), tuple(runs), dict.fromkeys(seeds, "tuned"), dict.fromkeys(seeds))
