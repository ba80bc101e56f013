"""From what a user gives (a config file, a params file, flags) to a complete ``RunSpec``.

``run_spec`` builds the spec of one run from a config's settings; ``resolve`` fills in
everything the algorithm decides (its own architecture, every parameter's default) and checks
it, so the spec written to ``spec.yaml`` is complete and re-runs exactly. Resolving imports the
algorithms (and so torch); building and reading a spec does not."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bpfree.core.errors import BpfreeError
from bpfree.core.registry import ALGORITHMS, DATASETS
from bpfree.core.spec import Machine, RunSpec, Settings, WorkflowConfig, parse, read_yaml


def load_settings(path: str | Path | None) -> Settings:
    """The run and tuning settings of a config file (a whole workflow config, or only some of
    its sections); no file: every default. Unknown keys fail, naming the valid ones."""
    if path is None:
        return Settings()
    data = read_yaml(path) or {}
    if not isinstance(data, Mapping):
        raise BpfreeError(f"{path} must hold a mapping of config keys")
    try:
        if "experiments" in data or "seeds" in data:
            return parse(WorkflowConfig, data)
        return parse(Settings, data)
    except BpfreeError as err:
        raise BpfreeError(f"{path}: {err}") from None


def read_params_file(path: str | Path, algorithm: str) -> dict[str, Any]:
    """A params file is a flat mapping, or ``{algorithm: NAME, params: {...}}`` as written by
    ``bpfree tune``; a file tuned for another algorithm is refused."""
    content = read_yaml(path) or {}
    if not isinstance(content, dict):
        raise BpfreeError(f"params file {path} must hold a mapping of parameter names to values")
    owner = content.get("algorithm")  # in tune's output, or written by hand into a flat file
    if owner is not None and owner != algorithm:
        raise BpfreeError(f"params file {path} is for algorithm {owner!r}, not {algorithm!r}")
    if "params" in content:
        content = content["params"] or {}
        if not isinstance(content, dict):
            raise BpfreeError(f"'params' in {path} must be a mapping")
    return {key: value for key, value in content.items() if key != "algorithm"}


def run_spec(
    settings: Settings,
    *,
    algorithm: str,
    dataset: str,
    seed: int,
    arch: str | None = None,
    params: Mapping[str, Any] | None = None,
    download: bool = False,
) -> RunSpec:
    """One run under a config's settings (its device, threads and data root included)."""
    machine = Machine(
        device=settings.device, threads=settings.job_threads, data_root=settings.data_root, download=download
    )
    return parse(
        RunSpec,
        {
            "algorithm": algorithm,
            "dataset": dataset,
            "seed": seed,
            "arch": arch,
            "params": dict(params or {}),
            "early_stopping": settings.early_stopping,
            "measurement": settings.measurement,
            "precision": settings.precision,
            "checkpoint_every_s": settings.checkpoint_every_s,
            "machine": machine,
        },
    )


def resolve(spec: RunSpec) -> RunSpec:
    """``spec`` with the algorithm's own architecture and every parameter's default filled
    in, after checking that the algorithm and dataset exist, that the algorithm can train the
    architecture and that every parameter is known and in range."""
    # here, not at the top: keeps torch out of the CLI's start-up and the workflow's planning
    from bpfree.algorithms import check_trainable, params_from_mapping
    from bpfree.models import parse_arch

    klass = ALGORITHMS.get(spec.algorithm)
    DATASETS.get(spec.dataset)
    arch = parse_arch(spec.arch or klass.default_arch)
    check_trainable(spec.algorithm, arch)
    params = dataclasses.asdict(params_from_mapping(spec.algorithm, spec.params))
    return spec.replace(arch=str(arch), params=params)
