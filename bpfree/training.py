"""The training loop: stages, early stopping, restoring the best weights, divergence.

Plain PyTorch around the algorithm's own ``train_epoch``/``evaluate``; the loop owns the
epoch bookkeeping and nothing else."""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from bpfree.algorithms.base import Algorithm, Stage
from bpfree.data import Batches, DataSplits
from bpfree.errors import BpfreeError

if TYPE_CHECKING:
    from bpfree.measure import Meter, WindowResult


@dataclass(frozen=True)
class EarlyStopping:
    """One declared policy for every algorithm and stage (the paper's code varied it)."""

    monitor: Literal["val_loss", "val_accuracy"] = "val_loss"
    mode: Literal["min", "max"] = "min"
    patience: int = 10
    min_delta: float = 0.0
    max_epochs: int = 100
    restore_best: bool = True

    def __post_init__(self) -> None:
        if self.monitor not in ("val_loss", "val_accuracy"):
            raise BpfreeError(f"early_stopping.monitor must be val_loss or val_accuracy, got {self.monitor!r}")
        if self.mode not in ("min", "max"):
            raise BpfreeError(f"early_stopping.mode must be min or max, got {self.mode!r}")
        if self.patience < 1 or self.max_epochs < 1 or self.min_delta < 0:
            raise BpfreeError(
                "early_stopping needs patience >= 1, max_epochs >= 1 and min_delta >= 0, got "
                f"patience={self.patience}, max_epochs={self.max_epochs}, min_delta={self.min_delta}"
            )


class EarlyStopper:
    def __init__(self, policy: EarlyStopping) -> None:
        self.policy = policy
        self.best = math.inf if policy.mode == "min" else -math.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record one epoch's monitored value; True when it is a new best."""
        delta = self.policy.min_delta
        better = value < self.best - delta if self.policy.mode == "min" else value > self.best + delta
        if better:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return better

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.policy.patience


@dataclass
class EpochRecord:
    epoch: int  # counted over the whole run, from 1
    stage: str
    train_loss: float
    val_loss: float
    val_accuracy: float
    epoch_time_s: float
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. energy per epoch

    def row(self) -> dict[str, Any]:
        row = asdict(self)
        row.update(row.pop("extra"))
        return row


@dataclass
class FitResult:
    status: Literal["ok", "diverged"]
    history: list[EpochRecord]
    train_time_s: float
    measurement: WindowResult | None = None  # the meter's "fit" window, when there is a meter

    @property
    def epochs(self) -> int:
        return len(self.history)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BpfreeError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BpfreeError(f"device {device!r} asked for, but CUDA is not available here; use cpu or auto")
    return dev


def set_threads(threads: int | None) -> None:
    """torch's CPU threads for this process; None keeps torch's default (every core). Small
    models run faster on one thread, and two one-thread jobs on two cores don't contend."""
    if threads is None:
        return
    if threads < 1:
        raise BpfreeError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def _progress(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False, disable=None)


def fit(
    algo: Algorithm,
    data: DataSplits,
    policy: EarlyStopping,
    *,
    seed: int,
    on_epoch_end=None,
    meter: Meter | None = None,
) -> FitResult:
    """Train ``algo`` stage by stage. ``on_epoch_end(record)`` may add to ``record.extra``.

    ``meter`` (bpfree.measure.Meter) measures the whole fit, validation included as in the
    paper, in a window named "fit", and each epoch in "epoch N"; an epoch's energy goes into
    its record's ``extra`` before ``on_epoch_end`` sees it."""
    batches = Batches(data.train, seed=seed, augment=data.info.augment)
    history: list[EpochRecord] = []
    if meter is not None:
        meter.begin_window("fit")
    start = time.perf_counter()
    status: Literal["ok", "diverged"] = "ok"
    try:
        for stage in algo.stages():
            if not _fit_stage(algo, stage, batches, data, policy, history, on_epoch_end, meter):
                status = "diverged"
                break
    except BaseException:  # e.g. a pruned trial: leave the meter reusable
        if meter is not None:
            meter.discard_window("fit")
            meter.discard_window(f"epoch {len(history) + 1}")
        raise
    train_time_s = time.perf_counter() - start
    measurement = meter.end_window("fit") if meter is not None else None
    return FitResult(status, history, train_time_s, measurement)


def _epoch_energy(meter: Meter, window: WindowResult) -> dict[str, Any]:
    energy = window.of(meter.primary_domain)
    return {"energy_j": energy.joules, "energy_source": energy.source, "net_energy_j": energy.net_joules}


def _fit_stage(algo, stage: Stage, batches, data, policy, history, on_epoch_end, meter) -> bool:
    # the policy's max_epochs caps every stage, including limits an algorithm sets itself (MF's
    # epochs_per_layer, CaFo's dfa_epochs): a tuning trial's budget then holds for all of them
    max_epochs = min(stage.max_epochs or policy.max_epochs, policy.max_epochs)
    stopper = EarlyStopper(policy)
    best_state = None
    algo.begin_stage(stage, max_epochs)
    with _progress(max_epochs, f"{algo.name} {stage.name}") as bar:
        for _ in range(max_epochs):
            epoch = len(history) + 1
            if meter is not None:
                meter.begin_window(f"epoch {epoch}")
            t0 = time.perf_counter()
            train_loss = algo.train_epoch(stage, batches)
            val = algo.evaluate(stage, data.val)
            record = EpochRecord(epoch, stage.name, train_loss, val.loss, val.accuracy, time.perf_counter() - t0)
            if meter is not None:
                record.extra.update(_epoch_energy(meter, meter.end_window(f"epoch {epoch}")))
            if on_epoch_end is not None:
                on_epoch_end(record)
            history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}", val_acc=f"{val.accuracy:.4f}")
            if not math.isfinite(train_loss) or not math.isfinite(val.loss):
                return False
            if not stage.early_stopping:
                continue
            monitored = val.loss if policy.monitor == "val_loss" else val.accuracy
            if stopper.update(monitored, record.epoch) and policy.restore_best:
                best_state = copy.deepcopy(algo.net.state_dict())
            if stopper.should_stop:
                break
    if best_state is not None:
        algo.net.load_state_dict(best_state)
    algo.end_stage(stage)
    return True
