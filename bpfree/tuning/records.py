"""What a study leaves on disk: its best params (what ``bpfree train --params`` reads) and its trial
table, ``STUDY.trials.csv`` (every trial's state, epochs, time and energy)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from bpfree import __version__
from bpfree.core.io import write_text_atomic, write_yaml_atomic
from bpfree.core.outputs import TRIAL_COLUMNS
from bpfree.core.spec import RunSpec, dump_yaml
from bpfree.tuning.study import OBJECTIVE

if TYPE_CHECKING:  # annotations only: the job imports this module
    from bpfree.tuning.job import TuneResult


def trials_csv_path(storage: str | Path) -> Path:
    """The study's trial table beside its journal: ``study.journal`` -> ``study.trials.csv``."""
    storage = Path(storage)
    return storage.with_name(f"{storage.stem}.trials.csv")


# -- the result on disk ---------------------------------------------------------------------
def best_params_document(result: TuneResult) -> dict[str, Any]:
    """What ``bpfree train --params`` reads (``algorithm`` and ``params``) and what a reader
    needs to trust it: the value, the trial, the study's size and how it was searched."""
    settings = result.job.settings
    return {
        "algorithm": result.job.algorithm,
        "dataset": result.job.dataset,
        "arch": str(result.arch),
        "params": result.best_params,
        "best_value": result.best.value,
        "objective": OBJECTIVE,
        "score": settings.score,  # final_model or best_epoch: what a trial's value is
        "protocol": settings.protocol,
        "best_trial": result.best.number,
        "trials": dataclasses.asdict(result.counts),
        "n_trials": result.job.n_trials,
        "study": result.study_name,
        "storage": str(result.job.storage),
        "seed": settings.seed,
        "sampler": {
            "name": "TPESampler",
            "multivariate": settings.multivariate,
            "startup_trials": settings.startup_trials,
            "constant_liar": True,
        },
        "pruner": {
            "name": settings.pruner,
            "startup_trials": settings.pruner_startup_trials,
            "warmup_epochs": settings.pruner_warmup_epochs,
            "reduction_factor": settings.pruner_reduction_factor,
        },
        "max_epochs": settings.max_epochs or result.job.early_stopping.max_epochs,
        "search_space": result.space.describe(),
        "bpfree_version": __version__,
        "optuna_version": optuna.__version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # a damaged journal this worker set aside (its copy) and repaired; None: none
        "journal_set_aside": str(result.journal_set_aside) if result.journal_set_aside else None,
    }


def write_best_params(path: str | Path, result: TuneResult) -> None:
    write_yaml_atomic(path, best_params_document(result))


def trial_spec_path(table: str | Path, number: int) -> Path:
    """Where trial ``number``'s run specification is kept: beside the trial table, in a folder
    named after it (``study.trials.csv`` -> ``study.trials/trial-7.yaml``)."""
    table = Path(table)
    return table.with_name(table.stem) / f"trial-{number}.yaml"


def write_trial_spec(table: str | Path, number: int, spec: RunSpec) -> Path:
    """Keep the trial's complete spec (what ``bpfree train --spec`` reads) beside its row."""
    path = trial_spec_path(table, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, dump_yaml(spec))
    return path


def trial_records(study: optuna.Study, pruner: str = "", table: str | Path | None = None) -> list[dict[str, Any]]:
    """Every trial of the study with its epochs, time and energy (None: not measured).

    A trial failed as stale (its worker died) has no recorded end: its epochs are the last
    it reported, its time runs from its start to its last heartbeat, its energy is unknown."""
    identity = study.user_attrs.get("bpfree") or {}
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        epochs = attrs.get("epochs")
        if epochs is None and trial.intermediate_values:
            epochs = max(trial.intermediate_values)
        time_s = attrs.get("time_s", attrs.get("train_time_s"))
        if time_s is None and trial.datetime_start is not None and attrs.get("heartbeat") is not None:
            time_s = round(max(0.0, attrs["heartbeat"] - trial.datetime_start.timestamp()), 3)
        rows.append(
            {
                "study": study.study_name,
                "algorithm": identity.get("algorithm"),
                "arch": identity.get("arch"),
                "dataset": identity.get("dataset"),
                "pruner": pruner,
                "number": trial.number,
                "state": "failed" if trial.state == TrialState.FAIL else trial.state.name.lower(),
                "value": trial.value if trial.state == TrialState.COMPLETE else None,
                "epochs": epochs,
                "time_s": time_s,
                "train_time_s": attrs.get("train_time_s"),
                "energy_j": attrs.get("energy_j"),
                "energy_source": attrs.get("energy_source"),
                "reason": attrs.get("reason", ""),
                "params": json.dumps(trial.params, sort_keys=True),
                "spec": _kept_spec(table, trial.number),
            }
        )
    return rows


def _kept_spec(table: str | Path | None, number: int) -> str | None:
    """The trial's kept spec, relative to the table's folder; None where none was kept (a
    worker killed before writing it, or rows listed without a table)."""
    if table is None:
        return None
    path = trial_spec_path(table, number)
    return path.relative_to(Path(table).parent).as_posix() if path.is_file() else None


def write_trials_csv(path: str | Path, study: optuna.Study, pruner: str = "") -> None:
    """The study's trial table, rewritten whole (atomically) from the journal; left alone
    when unchanged, so that a worker ending after the others does not touch its time stamp."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TRIAL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(trial_records(study, pruner, path))
    text = buffer.getvalue()
    path = Path(path)
    try:
        if path.read_text() == text:
            return
    except (OSError, ValueError):  # missing, or not text: rewritten
        pass
    write_text_atomic(path, text)
