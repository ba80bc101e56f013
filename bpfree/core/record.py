"""The record of a finished run (``DIR/metrics.json``): typed and versioned.

``bpfree train`` writes it through :class:`RunRecord`, built by :func:`build_record` from the
run's typed results; ``bpfree aggregate`` reads it back
through the same type, so a field that is renamed or missing fails in one line naming the
file, not as a silent empty column. No torch here: the tables are built without it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bpfree.core.errors import BpfreeError
from bpfree.core.io import read_json
from bpfree.core.spec import SCHEMA_VERSION

if TYPE_CHECKING:  # annotations only: the run's typed results, built above this tier
    from bpfree.engine.loop import FitResult
    from bpfree.engine.run import RunMeasurement, RunResult
    from bpfree.measure import WindowResult

Status = Literal["ok", "diverged"]


class RunRecord(BaseModel):
    """Every field of metrics.json. Energies in joules, times in seconds, memory in MiB;
    each energy comes with its source (nvml-counter, nvml-polling, rapl, estimate, or a
    ``+``-joined list where pieces of a resumed run differed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    spec_digest: str = Field(description="hash of the resolved spec and device type: the run's identity")
    algorithm: str
    arch: str
    dataset: str
    seed: int
    status: Status
    test_accuracy: float | None
    best_val_accuracy: float | None
    epochs: int
    # killed and resumed from its checkpoint: time, energy and CO2 are summed over the
    # pieces, peaks are their max (see energy_covers, pieces_measured)
    resumed: bool
    pieces: int
    checkpoint_set_aside: str | None
    train_time_s: float
    checkpoints: int
    checkpoint_every_s: float
    checkpoint_time_s: float  # included in train_time_s and energy_j
    time_per_epoch_s: float
    device: str
    params: dict[str, Any]
    early_stopping: dict[str, Any]
    precision: str
    precision_flags: dict[str, Any] | None = None  # TF32 switches in force during the run
    bpfree_version: str
    torch_version: str
    torch_threads: int
    python_version: str
    host: str
    finished_at: str
    # -- what the meter saw (None: not measured) ----------------------------------------
    energy_j: float | None = None  # the computing device's energy over the fit (validation included)
    energy_source: str | None = None
    energy_device: str | None = None
    idle_power_w: float | None = None
    net_energy_j: float | None = None
    gpu_energy_counter_j: float | None = None  # the GPU board by each source, side by side
    gpu_energy_polled_j: float | None = None
    cpu_energy_j: float | None = None
    cpu_energy_source: str | None = None
    cpu_idle_power_w: float | None = None
    cpu_net_energy_j: float | None = None
    test_energy_j: float | None = None
    test_energy_source: str | None = None
    test_net_energy_j: float | None = None
    test_time_s: float | None = None
    co2_kg: float | None = None
    codecarbon_energy_j: float | None = None  # CodeCarbon's whole-machine estimate, training only
    codecarbon_error: str | None = None
    peak_memory_mb: float | None = None
    peak_memory_kind: str | None = None
    peak_allocated_mb: float | None = None
    peak_reserved_mb: float | None = None
    peak_device_used_mb: float | None = None
    peak_rss_mb: float | None = None
    peak_rss_kind: str | None = None
    measurement_problems: list[str] = Field(default_factory=list)
    measurement: dict[str, Any] | None = None
    hardware: dict[str, Any] | None = None
    energy_covers: str | None = None
    pieces_measured: list[dict[str, Any]] | None = None
    codecarbon_pieces: int | None = None
    co2_covers: str | None = None
    # -- where compute, memory and time went (bpfree.engine.analysis; None: not analysed) -----------
    # FLOPs: matrix products and convolutions counted by torch's FlopCounterMode on one
    # minibatch per stage, scaled to the splits; training + validation over the fit window
    train_flops_per_sample: float | None = None  # the run's training FLOPs / (training samples x epochs)
    infer_flops_per_sample: float | None = None  # one prediction (predict), per sample
    train_flops: float | None = None
    eval_flops: float | None = None
    run_flops: float | None = None  # train_flops + eval_flops
    achieved_flops_per_s: float | None = None  # run_flops / train_time_s
    energy_per_flop_j: float | None = None  # energy_j / run_flops, only where energy was measured
    energy_per_flop_source: str | None = None
    flops_by_stage: dict[str, Any] | None = None  # per stage: epochs, FLOPs, per-sample counts, memory
    # memory by part (MiB) of the stage that holds the most, from tensor sizes
    memory_breakdown_stage: str | None = None
    memory_breakdown_source: str | None = None
    memory_breakdown_total_mb: float | None = None
    memory_weights_mb: float | None = None
    memory_gradients_mb: float | None = None
    memory_optimizer_mb: float | None = None
    memory_activations_mb: float | None = None
    memory_cached_features_mb: float | None = None
    memory_data_mb: float | None = None
    hardware_analysis_s: float | None = None  # the analysis' own time, before (outside) the fit
    # the fit's wall time by the loop's timers (bpfree.engine.loop.TimeSplit)
    time_data_s: float | None = None
    time_compute_s: float | None = None
    time_eval_s: float | None = None
    time_checkpoint_s: float | None = None
    time_measurement_s: float | None = None
    time_other_s: float | None = None
    time_split_covers: str | None = None
    profile_trace: str | None = None  # torch.profiler's trace of measurement.profile_epoch

    def scalars(self) -> dict[str, Any]:
        """The flat fields (one table row per run); sections and lists left out."""
        return {k: v for k, v in self.model_dump().items() if not isinstance(v, (dict, list))}


def read_record(path: str | Path) -> RunRecord:
    """A metrics.json, checked against this bpfree's RunRecord; one line if it is not one."""
    path = Path(path)
    data = read_json(path, "run metrics")  # bounded, UTF-8, one line if it is no JSON
    if not isinstance(data, dict):
        raise BpfreeError(f"{path} is not a run's metrics (not a JSON object)")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BpfreeError(
            f"{path} has schema_version {version!r}, this bpfree reads {SCHEMA_VERSION}: "
            "it was written by another bpfree; train the run again (remove its metrics.json)"
        )
    try:
        return RunRecord.model_validate(data)
    except ValidationError as err:
        first = err.errors(include_url=False)[0]
        where = ".".join(map(str, first["loc"]))
        raise BpfreeError(f"{path}: field {where!r}: {first['msg']}") from None


# -- building the record of a finished run ------------------------------------------------------
def build_record(run: RunResult) -> RunRecord:
    """The record of a finished run (bpfree.engine.run.RunResult), field by field: what it is,
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
        fields |= measurement_fields(run.measurement, fit.measurement) | pieces_fields(fit, run.measurement)
    fields |= time_split_fields(fit)
    fields |= run.costs(fields.get("energy_j"), fields.get("energy_source"))
    return RunRecord(**fields)


def measurement_fields(measured: RunMeasurement, fit: WindowResult | None) -> dict[str, Any]:
    """The meter's figures: the fit window's energy on the computing device (its source
    beside it), every GPU source side by side, the CPU's, the test window's, CodeCarbon's CO2,
    and the peaks over the fit and test windows (flat: the tables keep only flat values)."""

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


def pieces_fields(fit: FitResult, measured: RunMeasurement) -> dict[str, Any]:
    """What the energy and the CO2 cover when a run was killed and resumed: each piece up to
    its last checkpoint (energy), each piece up to CodeCarbon's last flush (CO2)."""
    if fit.pieces == 1:
        covers = "whole fit"
    elif len(fit.pieces_measured) == fit.pieces:
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
        "pieces_measured": list(fit.pieces_measured) or None,
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
