"""What the Snakefile checks and sets up: the config checked in one clear line (the torch-side
checks included), its overrides and the one config file its jobs read, the GPUs its jobs claim.
The grid itself (its studies and runs) is :mod:`bpfree.progress.grid`'s, re-exported here for
the Snakefile's rules and ``bpfree plan``.

Everything here is plain Python so that it can be tested without Snakemake."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bpfree.core.errors import BpfreeError
from bpfree.core.outputs import BASELINE, FIGURE_NAMES, TABLE_NAMES
from bpfree.core.registry import DATASETS
from bpfree.core.spec import RUN_SECTIONS, WorkflowConfig, parse
from bpfree.progress.grid import (
    ARCH_SLUG_PATTERN,
    Run,
    Study,
    arch_to_slug,
    expand_grid,
    expand_runs,
    expand_studies,
    slug_to_arch,
    study_params,
    study_trials,
    study_tuning,
)

__all__ = [
    "ARCH_SLUG_PATTERN",
    "BASELINE",
    "FIGURE_NAMES",
    "TABLE_NAMES",
    "Run",
    "Study",
    "arch_to_slug",
    "check_config",
    "expand_grid",
    "expand_runs",
    "expand_studies",
    "slug_to_arch",
    "study_params",
    "study_trials",
    "study_tuning",
]


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
    for name in checked.data_from:
        source = DATASETS.get(name)
        if not hasattr(source, "import_from"):
            raise BpfreeError(f"data_from.{name}: dataset {name!r} ships with its package; there is nothing to import")
    grid = expand_grid(checked)  # a shared twin asked for two ways, a paper study without its row or protocol
    for algorithm in sorted({s.algorithm for s in grid.studies if grid.tuned(s)}):
        search_space(algorithm, checked.tuning.search_spaces)
    return checked


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
