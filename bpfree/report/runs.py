"""Reading the runs back: each run folder's metrics.json (through the typed RunRecord) and
history.csv, checked and bounded, into polars frames for the tables."""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from bpfree.core.errors import BpfreeError
from bpfree.core.io import decode_utf8, read_limited
from bpfree.core.outputs import HISTORY_COLUMNS, RUN_HISTORY
from bpfree.core.record import RunRecord, read_record

KEYS = ["algorithm", "arch", "dataset"]
# the summary table's columns, first in every runs frame
SUMMARY_COLUMNS = [
    "algorithm",
    "arch",
    "dataset",
    "seed",
    "status",
    "test_accuracy",
    "best_val_accuracy",
    "min_val_loss",
    "epochs",
    "train_time_s",
    "time_per_epoch_s",
    "energy_j",
    "energy_source",
    "co2_kg",
    "peak_memory_mb",
    "peak_memory_kind",
    "device",
]


# -- runs ---------------------------------------------------------------------------------
MAX_HISTORY_BYTES = 256 << 20


@dataclass(frozen=True)
class RunFiles:
    """One run as given to aggregate: its metrics.json, the record in it, and its history
    (None where history.csv is missing: said once, in a warning)."""

    path: Path
    record: RunRecord
    history: pl.DataFrame | None


def read_runs(paths: Iterable[str | Path], *, warn: bool = True) -> list[RunFiles]:
    """Every metrics.json and the history.csv beside it, each checked: a file given twice, or
    two runs of the same algorithm, arch, dataset and seed (they would count as two seeds),
    and a malformed history are refused in one line; a missing history is a one-line warning
    (the run's min_val_loss and epochs are left out). Paths are literal: no wildcards."""
    runs: list[RunFiles] = []
    files: dict[str, Path] = {}
    keys: dict[tuple, Path] = {}
    for path in map(Path, paths):
        real = os.path.realpath(path)
        if real in files:
            raise BpfreeError(f"{path} is given twice (also as {files[real]}): give each run once")
        files[real] = path
        record = read_record(path)
        key = (record.algorithm, record.arch, record.dataset, record.seed)
        if key in keys:
            raise BpfreeError(
                f"two runs of {record.algorithm} {record.arch} on {record.dataset} seed {record.seed}: "
                f"{keys[key]} and {path} (they would count as two seeds); give each run once"
            )
        keys[key] = path
        history_path = path.with_name(RUN_HISTORY)
        history = None
        if history_path.exists() or history_path.is_symlink():
            history = read_history(history_path)
        elif warn:
            print(
                f"bpfree: warning: {history_path} is missing: that run's min_val_loss and epoch history are left out",
                file=sys.stderr,
            )
        runs.append(RunFiles(path, record, history))
    return runs


def read_metrics(paths: Iterable[str | Path] | list[RunFiles]) -> pl.DataFrame:
    """One row per run: the scalar fields of each metrics.json, plus ``min_val_loss`` (the
    lowest validation loss of the run's last stage) from the history.csv beside it."""
    rows = []
    for run in runs_of(paths):
        row = run.record.scalars()
        row["counter_period_s"] = counter_period(run.record.measurement)
        # whose grid intensity CodeCarbon applied (offline: this country's, from its own tables)
        row["co2_country"] = (run.record.measurement or {}).get("country_iso_code")
        row["val_loss_kind"] = val_loss_kind(run.record.algorithm, run.record.params)
        if run.history is not None:
            row["min_val_loss"] = _final_stage_min_val_loss(run.history)
        rows.append(row)
    if not rows:
        raise BpfreeError("no metrics files given to aggregate")
    frame = pl.from_dicts(rows, infer_schema_length=None)
    first = [c for c in SUMMARY_COLUMNS if c in frame.columns]
    return frame.select(first + [c for c in frame.columns if c not in first]).sort(
        "dataset", "arch", "algorithm", "seed"
    )


CROSS_ENTROPY = "cross-entropy"


def val_loss_kind(algorithm: str, params: dict[str, Any]) -> str:
    """What a run's validation loss (history.csv's ``val_loss`` of its last stage, the
    summary's ``min_val_loss``) is, as its algorithm's ``evaluate`` computes it with these
    params: :data:`CROSS_ENTROPY` where it is the cross-entropy of the class scores the
    delivered model predicts with (BP's; comparable across methods), else what it is (FF's
    goodness BCE, CaFo's sum over its blocks). tests/test_val_loss_kind.py holds this to the
    algorithms' own code. Kept here so that aggregating imports no torch."""
    if algorithm == "bp":
        return CROSS_ENTROPY
    if algorithm == "mf":
        if params.get("training", "layerwise") == "simultaneous" or params.get("prediction", "last") == "last":
            return CROSS_ENTROPY  # the last layer's projection, which is what predicts
        return "cross-entropy of the last layer alone, not of the summed prediction"
    if algorithm == "ff":
        if params.get("prediction", "goodness") == "softmax":
            return CROSS_ENTROPY  # its linear classifier's, which is what predicts
        return "FF goodness BCE, not a cross-entropy"
    if algorithm in ("cafo-rand", "cafo-dfa"):
        loss = {"ce": "cross-entropies", "mse": "squared errors", "sl": "sparsemax losses"}
        kind = params.get("predictor_loss", "ce")
        return f"sum of the blocks' {loss.get(kind, kind)}, not one cross-entropy"
    return f"{algorithm}'s own validation loss"


def counter_period(measurement: dict | None) -> float | None:
    """The longest update period of the run's energy counters as its meter measured them
    (``measurement.counter_update_periods``), or None where none was measured: the to_target
    table then assumes the source's usual period."""
    periods = (measurement or {}).get("counter_update_periods") or {}
    measured = [
        float(v["update_period_s"])
        for v in periods.values()
        if isinstance(v, dict) and v.get("measured") and isinstance(v.get("update_period_s"), (int, float))
    ]
    return max(measured) if measured else None


def runs_of(paths: Iterable[str | Path] | list[RunFiles], warn: bool = True) -> list[RunFiles]:
    paths = list(paths)
    if paths and all(isinstance(p, RunFiles) for p in paths):
        return paths
    return read_runs(paths, warn=warn)


# a diverged run's history holds "nan" and "inf", which polars infers as text unless told
HISTORY_FLOATS = ["train_loss", "val_loss", "val_accuracy", "epoch_time_s", "energy_j", "net_energy_j"]


def read_history(path: Path) -> pl.DataFrame:
    """A run's history.csv, checked row by row (read here, not by a path polars would expand
    as a wildcard): UTF-8, the columns bpfree writes first, every row whole, epochs counted
    from 1, numbers where numbers belong. One line naming the file and row otherwise."""

    data = read_limited(path, MAX_HISTORY_BYTES, f"run history {path}")
    text = decode_utf8(data, f"run history {path}")
    rows = list(csv.reader(io.StringIO(text)))

    def refuse(what: str) -> BpfreeError:
        return BpfreeError(f"run history {path} {what}: it is not a history bpfree wrote; train the run again")

    if not rows or rows[0][: len(HISTORY_COLUMNS)] != HISTORY_COLUMNS:
        header = ",".join(rows[0])[:60] if rows else ""
        raise refuse(f"does not begin with the columns {','.join(HISTORY_COLUMNS)} (it has {header!r})")
    header = rows[0]
    floats = [i for i, name in enumerate(header) if name in HISTORY_FLOATS]
    for number, row in enumerate(rows[1:], start=1):
        if len(row) != len(header):
            raise refuse(f"row {number} has {len(row)} of {len(header)} fields (cut short?)")
        if row[0] != str(number):
            raise refuse(f"row {number} is epoch {row[0][:20]!r}, not {number}")
        for i in floats:
            try:
                if row[i] != "":
                    float(row[i])
            except ValueError:
                raise refuse(f"row {number}: {header[i]} is {row[i][:20]!r}, not a number") from None
    try:
        return pl.read_csv(data, schema_overrides={c: pl.Float64 for c in HISTORY_FLOATS if c in header})
    except pl.exceptions.PolarsError as err:
        raise BpfreeError(f"cannot read run history {path}: {str(err).splitlines()[0]}") from None


def _final_stage_min_val_loss(history: pl.DataFrame) -> float | None:
    if history.is_empty() or "val_loss" not in history.columns:
        return None
    last = history.filter(pl.col("stage") == history["stage"][-1])["val_loss"]
    finite = last.filter(last.is_finite())
    return None if finite.is_empty() else float(finite.min())


def read_histories(paths: Iterable[str | Path] | list[RunFiles]) -> pl.DataFrame:
    """Every run's history.csv (beside its metrics.json), one row per epoch, with the run's
    algorithm, arch, dataset and seed in front."""
    frames = []
    for run in runs_of(paths, warn=False):
        if run.history is None:
            continue
        values = {k: getattr(run.record, k) for k in (*KEYS, "seed")}
        frames.append(run.history.with_columns(**{k: pl.lit(v) for k, v in values.items()}))
    if not frames:
        return pl.DataFrame(schema={k: pl.String for k in KEYS} | {"seed": pl.Int64})
    frame = pl.concat(frames, how="diagonal_relaxed")
    return frame.select([*KEYS, "seed", pl.exclude(*KEYS, "seed")])
