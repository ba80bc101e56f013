"""The paper's own hyperparameters: the final values of the configs in the paper's code
(github Przemyslaw11/BeyondBackpropagation, ``configs/{mf,ff,cafo,bp_baselines}/*.yaml``),
mapped onto bpfree's parameter names, one row per algorithm x architecture x dataset of its
grid (``bpfree/core/paper_params.yaml``, package data; docs/paper-code.md says how each was mapped
and what has no equivalent).

A run can take a row instead of a study's result: ``bpfree train --paper-params``, or
``params: paper`` on an experiment of a workflow config (its runs and its BP twin's skip
tuning). A row gives the algorithm's parameters and the early-stopping policy of that config;
everything else comes from the run's settings as usual. Reading a row imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from bpfree.core.errors import BpfreeError
from bpfree.core.io import loads_yaml
from bpfree.core.spec import EarlyStopping, parse

FILE = "paper_params.yaml"
# datasets that take another's rows: mnist-5k is 5,000 of MNIST's images
SAME_AS = {"mnist-5k": "mnist"}


@dataclass(frozen=True)
class PaperRow:
    """One configuration of the paper's code, in bpfree's terms."""

    algorithm: str
    arch: str
    dataset: str
    source: str  # the config file in the paper's repository
    params: dict[str, Any]
    early_stopping: EarlyStopping
    notes: tuple[str, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.algorithm, self.arch, self.dataset)


@cache
def rows() -> tuple[PaperRow, ...]:
    """Every row of the shipped table, checked once (a malformed row is a packaging bug)."""
    text = resources.files("bpfree.core").joinpath(FILE).read_text(encoding="utf-8")
    data = loads_yaml(text, FILE) or {}
    out: list[PaperRow] = []
    for i, row in enumerate(data.get("rows") or []):
        where = f"{FILE} rows[{i}]"
        try:
            out.append(
                PaperRow(
                    algorithm=str(row["algorithm"]),
                    arch=str(row["arch"]),
                    dataset=str(row["dataset"]),
                    source=str(row["source"]),
                    params=dict(row.get("params") or {}),
                    early_stopping=parse(EarlyStopping, row["early_stopping"], f"{where}.early_stopping"),
                    notes=tuple(str(n) for n in row.get("notes") or ()),
                )
            )
        except (KeyError, TypeError) as err:
            raise BpfreeError(f"{where} is malformed: {err}") from None
    return tuple(out)


def paper_row(algorithm: str, arch: str | None, dataset: str) -> PaperRow:
    """The row for one run, or one line saying which rows the paper has for that algorithm."""
    if arch is None:
        raise BpfreeError("the paper's hyperparameters are per architecture: give the arch (e.g. --arch mlp:1000,1000)")
    key = (algorithm, arch.replace(" ", ""), SAME_AS.get(dataset, dataset))
    for row in rows():
        if row.key == key:
            return row
    known = sorted(f"{r.arch} on {r.dataset}" for r in rows() if r.algorithm == algorithm)
    have = f"it has {algorithm} {'; '.join(known)}" if known else f"it has no row for {algorithm}"
    raise BpfreeError(
        f"the paper's code has no configuration for {algorithm} {arch} on {dataset} ({have}); "
        "tune it instead (params: tuned) or give --params"
    )
