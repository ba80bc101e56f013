"""One training run end to end: data, algorithm, fit, test, and its files on disk.

``RunConfig`` comes in (from the CLI or the workflow), ``RunResult`` goes out, and
``DIR/metrics.json`` + ``DIR/history.csv`` are written atomically."""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bpfree import __version__
from bpfree.algorithms import build_algorithm
from bpfree.data import load_splits
from bpfree.errors import BpfreeError
from bpfree.io import write_csv_atomic, write_json_atomic
from bpfree.models import ArchSpec
from bpfree.registry import DATASETS
from bpfree.training import EarlyStopping, FitResult, fit, resolve_device, seed_everything

HISTORY_COLUMNS = ["epoch", "stage", "train_loss", "val_loss", "val_accuracy", "epoch_time_s"]


@dataclass
class RunConfig:
    algorithm: str
    dataset: str
    seed: int
    arch: ArchSpec | None = None  # None: the algorithm's default
    params: dict[str, Any] = field(default_factory=dict)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    device: str = "auto"
    data_root: str = "data"
    download: bool = False


@dataclass
class RunResult:
    config: RunConfig
    fit: FitResult
    test_accuracy: float
    best_val_accuracy: float
    arch: ArchSpec
    params: dict[str, Any]
    device: str

    def metrics(self) -> dict[str, Any]:
        return {
            "algorithm": self.config.algorithm,
            "arch": str(self.arch),
            "dataset": self.config.dataset,
            "seed": self.config.seed,
            "status": self.fit.status,
            "test_accuracy": self.test_accuracy,
            "best_val_accuracy": self.best_val_accuracy,
            "epochs": self.fit.epochs,
            "train_time_s": self.fit.train_time_s,
            "time_per_epoch_s": self.fit.train_time_s / max(self.fit.epochs, 1),
            "device": self.device,
            "params": self.params,
            "early_stopping": dataclasses.asdict(self.config.early_stopping),
            "bpfree_version": __version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "host": platform.node(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def check_output_dir(out: str | Path) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BpfreeError(f"cannot create output directory {out}: {err.strerror}") from None
    if not os.access(out, os.W_OK):
        raise BpfreeError(f"output directory {out} is not writable")
    return out


def train(cfg: RunConfig, out: str | Path | None = None) -> RunResult:
    device = resolve_device(cfg.device)
    if out is not None:
        out = check_output_dir(out)
    seed_everything(cfg.seed)
    # build first: bad parameters or an unfit architecture fail before any data is read
    info = DATASETS.get(cfg.dataset).info
    algo = build_algorithm(cfg.algorithm, cfg.arch, info, cfg.params, device=device, seed=cfg.seed)
    data = load_splits(cfg.dataset, root=cfg.data_root, seed=cfg.seed, device=device, download=cfg.download)
    result = fit(algo, data, cfg.early_stopping, seed=cfg.seed)
    test_acc = algo.accuracy(data.test) if result.status == "ok" else float("nan")
    val_acc = algo.accuracy(data.val) if result.status == "ok" else float("nan")
    run = RunResult(
        cfg, result, test_acc, val_acc, algo.arch, dataclasses.asdict(algo.params), str(device)
    )
    if out is not None:
        write_outputs(run, out)
    return run


def write_outputs(run: RunResult, out: Path) -> None:
    rows = [r.row() for r in run.fit.history]
    extra = [k for r in rows for k in r if k not in HISTORY_COLUMNS]
    write_csv_atomic(out / "history.csv", rows, HISTORY_COLUMNS + list(dict.fromkeys(extra)))
    write_json_atomic(out / "metrics.json", run.metrics())
