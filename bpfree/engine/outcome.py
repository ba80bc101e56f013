"""The typed results of one finished run and the record made of them: :class:`RunResult` (what
bpfree.engine.run returns) -> :func:`build_record` -> :class:`~bpfree.core.record.RunRecord`, the
``metrics.json`` that the tables read back. Each field of the record is filled here from a typed
result, never assembled by hand where the run is trained."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpfree.core.record import SELECTIONS, RunRecord
from bpfree.core.spec import Measurement, RunSpec
from bpfree.engine.analysis import Analysis, epoch_flops, run_costs
from bpfree.engine.loop import FitResult
from bpfree.measure import CarbonResult, WindowResult


@dataclass
class Measured:
    """What the meter saw of one run (:func:`measure_run`): the idle baseline, the FIT window
    over every piece of the run (``pieces``: each one's summary, when it was resumed), the
    TEST window and the test accuracy measured in it, CodeCarbon's result, the counters used
    and the machine; and, reported outside every window, the test accuracy under each
    selection rule (:func:`test_by_selection`)."""

    settings: Measurement
    primary_domain: str  # "gpu" or "cpu": the device the run computed on
    primary_peak: str  # the memory kind reported as peak_memory_mb
    idle: WindowResult | None
    fit: WindowResult
    pieces: tuple[dict[str, Any], ...]
    test: WindowResult | None
    test_accuracy: float
    carbon: CarbonResult
    sources: dict[str, Any]  # Meter.describe()
    hardware: dict[str, Any]
    by_selection: dict[str, Any] | None = None


@dataclass
class RunResult:
    """A finished run, typed: what :func:`build_record` makes metrics.json of."""

    spec: RunSpec  # resolved: every default filled in
    digest: str  # the spec's hash with the device type: the run's identity
    fit: FitResult
    test_accuracy: float
    best_val_accuracy: float
    arch: str
    device: str
    measurement: Measured | None = None  # what the meter saw (bpfree.engine.run.measure_run)
    checkpoint_set_aside: Path | None = None  # a corrupt or foreign checkpoint found at the start
    precision_flags: dict[str, Any] | None = None
    analysis: Analysis | None = None  # FLOPs and memory by part (bpfree.engine.analysis), counted before the fit
    split_sizes: tuple[int, int] = (0, 0)  # training and validation samples
    environment: dict[str, Any] = field(default_factory=dict)  # versions, threads, host, time (environment())

    def epoch_flops(self) -> list[float] | None:
        """FLOPs of each epoch of the history (training and validation), or None."""
        if self.analysis is None:
            return None
        per_epoch = epoch_flops(self.analysis, [r.stage for r in self.fit.history], *self.split_sizes)
        return [t + v for t, v in per_epoch]

    def costs(self, energy_j: float | None, energy_source: str | None) -> dict[str, Any]:
        """The hardware analysis' fields of metrics.json (FLOPs, FLOP/s, energy per FLOP, memory
        by part), given the fit's energy and its source; none without an analysis."""
        if self.analysis is None:
            return {}
        stages = [r.stage for r in self.fit.history]
        return run_costs(self.analysis, stages, *self.split_sizes, self.fit.train_time_s, energy_j, energy_source)

    def record(self) -> RunRecord:
        return build_record(self)


# -- building the record of a finished run ------------------------------------------------------
def build_record(run: RunResult) -> RunRecord:
    """The record of a finished run, field by field: what it is,
    how the fit went, what the meter saw over which windows, where time went, and the hardware
    analysis' counts (``run.costs``, already worked out by bpfree.engine.analysis)."""
    spec, fit = run.spec, run.fit
    fields: dict[str, Any] = {
        "spec_digest": run.digest,
        "algorithm": spec.algorithm,
        "arch": run.arch,
        "dataset": spec.dataset,
        "seed": spec.seed,
        "status": fit.status,
        "test_accuracy": run.test_accuracy,
        "best_val_accuracy": run.best_val_accuracy,
        "epochs": fit.epochs,
        "restored_epoch": fit.restored_epoch,
        **selection_fields(run.measurement.by_selection if run.measurement else None, fit.restored_epoch),
        "resumed": fit.pieces > 1,
        "pieces": fit.pieces,
        "checkpoint_set_aside": run.checkpoint_set_aside and run.checkpoint_set_aside.name,
        "train_time_s": fit.train_time_s,
        "checkpoints": fit.checkpoints,
        "checkpoint_every_s": spec.checkpoint_every_s,
        "checkpoint_time_s": fit.checkpoint_time_s,
        "time_per_epoch_s": fit.train_time_s / max(fit.epochs, 1),
        "device": run.device,
        "params": spec.params,
        "early_stopping": spec.early_stopping.model_dump(),
        "precision": spec.precision,
        "precision_flags": run.precision_flags,
        **run.environment,
    }
    if run.measurement is not None:
        fields |= measurement_fields(run.measurement) | pieces_fields(fit, run.measurement)
    fields |= time_split_fields(fit)
    fields |= run.costs(fields.get("energy_j"), fields.get("energy_source"))
    return RunRecord(**fields)


def selection_fields(by_selection: dict[str, Any] | None, restored_epoch: int | None) -> dict[str, Any]:
    """``test_accuracy_by_selection`` (last, min_val_loss, max_val_accuracy and the run's own
    restored_epoch) and ``epoch_by_selection``, with a flat column per rule for the tables."""
    if by_selection is None:
        return {}
    accuracy, epoch = by_selection["accuracy"], by_selection["epoch"]
    return {
        "test_accuracy_by_selection": {**accuracy, "restored_epoch": restored_epoch},
        "epoch_by_selection": dict(epoch),
        **{f"test_accuracy_{name}": accuracy.get(name) for name in SELECTIONS},
        **{f"epoch_{name}": epoch.get(name) for name in SELECTIONS},
    }


def measurement_fields(measured: Measured) -> dict[str, Any]:
    """The meter's figures: the fit window's energy on the computing device (its source
    beside it), every GPU source side by side, the CPU's, the test window's, CodeCarbon's CO2,
    and the peaks over the fit and test windows (flat: the tables keep only flat values)."""

    fit = measured.fit

    def energy(window: WindowResult | None, domain: str) -> Any:
        return window.of(domain) if window is not None else _NO_ENERGY

    device, gpu, cpu = energy(fit, measured.primary_domain), energy(fit, "gpu"), energy(fit, "cpu")
    test = energy(measured.test, measured.primary_domain)
    peaks = _peaks_over([w for w in (fit, measured.test) if w is not None])
    rss_kind = next((k for k in peaks if k.startswith("process-rss")), None)
    problems = [p for w in (measured.idle, fit, measured.test) if w is not None for p in w.problems]
    carbon = measured.carbon
    return {
        # the computing device's energy over training (validation included)
        "energy_j": device.joules,
        "energy_source": device.source,
        "energy_device": measured.primary_domain,
        "idle_power_w": device.idle_power_w,
        "idle_age_s": measured.sources.get("idle_age_s"),
        "net_energy_j": device.net_joules,
        # the GPU board by each source, side by side (None without a GPU)
        "gpu_energy_counter_j": gpu.by_source.get("nvml-counter"),
        "gpu_energy_polled_j": gpu.by_source.get("nvml-polling"),
        "cpu_energy_j": cpu.joules,
        "cpu_energy_source": cpu.source,
        "cpu_idle_power_w": cpu.idle_power_w,
        "cpu_net_energy_j": cpu.net_joules,
        "test_energy_j": test.joules,
        "test_energy_source": test.source,
        "test_net_energy_j": test.net_joules,
        "test_time_s": measured.test.time_s if measured.test else None,
        "co2_kg": carbon.co2_kg,
        "codecarbon_energy_j": carbon.energy_j,  # its whole-machine estimate, training only
        "codecarbon_error": carbon.error,
        "peak_memory_mb": peaks.get(measured.primary_peak),
        "peak_memory_kind": measured.primary_peak,
        "peak_allocated_mb": peaks.get("torch-allocated"),
        "peak_reserved_mb": peaks.get("torch-reserved"),
        "peak_device_used_mb": peaks.get("nvml-device-used"),
        "peak_rss_mb": peaks.get(rss_kind) if rss_kind else None,
        "peak_rss_kind": rss_kind,
        "measurement_problems": problems,
        "measurement": {
            **measured.settings.model_dump(),
            **measured.sources,
            "codecarbon_csv": carbon.csv and Path(carbon.csv).name,
            "codecarbon_start_s": carbon.start_s,
            "codecarbon_stop_s": carbon.stop_s,
            "energy_j_window": "fit: every epoch's training and validation",
            "peak_window": "fit and test",
        },
        "hardware": measured.hardware,
    }


def pieces_fields(fit: FitResult, measured: Measured) -> dict[str, Any]:
    """What the energy and the CO2 cover when a run was killed and resumed: each piece up to
    its last checkpoint (energy), each piece up to CodeCarbon's last flush (CO2)."""
    if fit.pieces == 1:
        covers = "whole fit"
    elif len(measured.pieces) == fit.pieces:
        covers = f"sum of {fit.pieces} pieces, each up to its last checkpoint"
    else:
        covers = "last piece (the checkpoint held no measurement of the earlier ones)"
    carbon_pieces = measured.carbon.pieces
    if measured.carbon.co2_kg is None:
        co2_covers = None
    elif fit.pieces == 1:
        co2_covers = "whole fit"
    else:
        co2_covers = f"{carbon_pieces} of {fit.pieces} pieces, each up to its last 30 s flush" + (
            "" if carbon_pieces == fit.pieces else " (a piece killed before its first flush has none)"
        )
    return {
        "energy_covers": covers,
        "pieces_measured": list(measured.pieces) or None,
        "codecarbon_pieces": carbon_pieces,
        "co2_covers": co2_covers,
    }


def time_split_fields(fit: FitResult) -> dict[str, Any]:
    """Where the fit's wall time went, by the loop's own timers; its profiler trace's name."""
    fields: dict[str, Any] = {}
    split = fit.time_split
    if split is not None:
        fields |= {
            "time_data_s": split.data_s,
            "time_compute_s": split.compute_s,
            "time_eval_s": split.eval_s,
            "time_checkpoint_s": split.checkpoint_s,
            "time_measurement_s": split.measurement_s,
            "time_other_s": split.other_s,
            "time_split_covers": split.covers,
        }
    if fit.profile_trace is not None:
        fields["profile_trace"] = fit.profile_trace.name
    return fields


class _NoEnergy:
    """An unmeasured window's energy: every figure None."""

    joules = source = idle_power_w = net_joules = None
    by_source: dict[str, float | None] = {}


_NO_ENERGY = _NoEnergy()


def _peaks_over(windows: list[WindowResult]) -> dict[str, float | None]:
    peaks: dict[str, float | None] = {}
    for window in windows:
        for kind, mb in window.peaks_mb.items():
            seen = peaks.get(kind)
            peaks[kind] = mb if seen is None else (seen if mb is None else max(seen, mb))
    return peaks
