"""What a study leaves on disk beside its journal: its trial table, ``STUDY.trials.csv`` (every
trial's state, epochs, time and energy), and each trial's run specification. The best params
(what ``bpfree train --params`` reads) are written by :mod:`bpfree.tuning.job`, beside the
result they come from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from bpfree.core.io import write_text_atomic
from bpfree.core.outputs import TRIAL_COLUMNS
from bpfree.core.spec import RunSpec, dump_yaml
from bpfree.progress.trials import abandoned_attempts, trial_cost


def trials_csv_path(storage: str | Path) -> Path:
    """The study's trial table beside its journal: ``study.journal`` -> ``study.trials.csv``."""
    storage = Path(storage)
    return storage.with_name(f"{storage.stem}.trials.csv")


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
    """Every trial of the study with its epochs, time and energy (None: not measured), every
    attempt counted (:func:`trial_cost`)."""
    identity = study.user_attrs.get("bpfree") or {}
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.WAITING and not abandoned_attempts(trial.user_attrs):
            continue  # queued, never run
        attrs = trial.user_attrs
        epochs, time_s, energy, source = trial_cost(trial)
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
                "epochs": None if epochs is None else int(epochs),
                "time_s": time_s,
                "train_time_s": attrs.get("train_time_s"),
                "energy_j": energy,
                "energy_source": source,
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
