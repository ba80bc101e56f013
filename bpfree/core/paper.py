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
from bpfree.core.spec import EarlyStopping, Tuning, parse

FILE = "paper_params.yaml"
# datasets that take another's rows: mnist-5k is 5,000 of MNIST's images
SAME_AS = {"mnist-5k": "mnist"}


@dataclass(frozen=True)
class PaperTuning:
    """How the paper's code tuned one configuration (its tuning config, read as its code reads
    it): trial count (every finished trial counted), a trial's epoch budget (None: the stage
    lengths it samples), its trials' early stopping (None: none), the score, TPE's settings and
    the pruner."""

    n_trials: int
    max_epochs: int | None
    early_stopping: dict[str, Any] | None
    score: str
    multivariate: bool
    startup_trials: int
    pruner: str
    pruner_startup_trials: int = 5
    pruner_warmup_epochs: int = 0
    source: str = ""


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
    tuning: PaperTuning | None = None  # how its code tuned it (tuning.protocol: paper)

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
                    tuning=PaperTuning(**row["tuning"], source=str(row.get("tuning_source", "")))
                    if row.get("tuning")
                    else None,
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


def study_settings(
    tuning: Tuning, early_stopping: EarlyStopping, algorithm: str, arch: str | None, dataset: str
) -> tuple[Tuning, EarlyStopping]:
    """A study's tuning section and the early stopping its trials start from, under
    ``tuning.protocol``: bpfree's, the section as given; the paper's, the configuration's own
    protocol (its row's ``tuning``) over the section's seed and search spaces. A paper trial
    restores no weights (its code restored none), and one without early stopping trains its
    budget out."""
    if tuning.protocol == "bpfree":
        return tuning, early_stopping
    row = paper_row(algorithm, arch, dataset)
    own = row.tuning
    if own is None:
        raise BpfreeError(f"the paper's code did not tune {algorithm} {arch} on {dataset}: use tuning.protocol: bpfree")
    budget = own.max_epochs or early_stopping.max_epochs
    stopping = {"patience": budget} if own.early_stopping is None else dict(own.early_stopping)
    policy = early_stopping.replace("early_stopping", **stopping, max_epochs=budget, restore_best=False)
    settings = tuning.replace(
        "tuning",
        n_trials=own.n_trials,
        max_epochs=own.max_epochs,
        score=own.score,
        multivariate=own.multivariate,
        startup_trials=own.startup_trials,
        pruner=own.pruner,
        pruner_startup_trials=own.pruner_startup_trials,
        pruner_warmup_epochs=own.pruner_warmup_epochs,
    )
    return settings, policy
