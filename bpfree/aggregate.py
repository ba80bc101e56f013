"""Collect every run's metrics.json into tables with polars."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from bpfree.errors import BpfreeError

SUMMARY_COLUMNS = [
    "algorithm", "arch", "dataset", "seed", "status", "test_accuracy", "best_val_accuracy",
    "epochs", "train_time_s", "time_per_epoch_s", "device",
]


def read_metrics(paths: Iterable[str | Path]) -> pl.DataFrame:
    rows = []
    for path in paths:
        try:
            metrics = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise BpfreeError(f"cannot read run metrics {path}: {err}") from None
        rows.append({k: v for k, v in metrics.items() if not isinstance(v, (dict, list))})
    if not rows:
        raise BpfreeError("no metrics files given to aggregate")
    frame = pl.from_dicts(rows, infer_schema_length=None)
    first = [c for c in SUMMARY_COLUMNS if c in frame.columns]
    return frame.select(first + [c for c in frame.columns if c not in first]).sort(
        "dataset", "arch", "algorithm", "seed"
    )
