"""One training run end to end: data, algorithm, fit, test, and its files on disk.

A resolved :class:`~bpfree.core.spec.RunSpec` comes in (from ``spec.yaml``, the workflow, or the
CLI's flags), a :class:`RunResult` goes out, and ``DIR/spec.yaml``, ``DIR/metrics.json`` (a
:class:`~bpfree.core.record.RunRecord`) and ``DIR/history.csv`` are written atomically."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bpfree import __version__
from bpfree.algorithms import build_algorithm
from bpfree.core.errors import BpfreeError, is_out_of_memory
from bpfree.core.io import writable_directory, write_csv_atomic, write_json_atomic, write_text_atomic
from bpfree.core.outputs import HISTORY_COLUMNS
from bpfree.core.record import RunRecord, read_record
from bpfree.core.registry import DATASETS
from bpfree.core.spec import EarlyStopping, Measurement, RunSpec, dump_yaml
from bpfree.data import DataSplits, load_splits
from bpfree.engine.analysis import Analysis, analyse, epoch_flops, run_costs
from bpfree.engine.checkpoint import Checkpoint, CheckpointState, check_fits
from bpfree.engine.loop import Checkpointing, EpochRecord, FitResult, Profiling, fit
from bpfree.engine.precision import check_precision, precision_context, precision_flags
from bpfree.engine.resolve import resolve
from bpfree.engine.setup import resolve_device, seed_everything
from bpfree.engine.warmup import warm_up
from bpfree.measure import (
    CarbonResult,
    CarbonTracker,
    EnergyResult,
    Meter,
    WindowResult,
    combine_windows,
    hardware_metadata,
)
from bpfree.models import ArchSpec, parse_arch

CHECKPOINT = "checkpoint.pt"
SPEC = "spec.yaml"
METRICS = "metrics.json"


@dataclass
class RunMeasurement:
    """What the meter saw besides the fit window (which is in ``FitResult.measurement``)."""

    settings: Measurement
    primary_domain: str  # "gpu" or "cpu": the device the run computed on
    primary_peak: str  # the memory kind reported as peak_memory_mb
    idle: WindowResult | None
    test: WindowResult | None
    carbon: CarbonResult
    sources: dict[str, Any]  # Meter.describe()
    hardware: dict[str, Any]

    def metrics(self, fit: WindowResult | None) -> dict[str, Any]:
        """The flat figures of metrics.json (aggregation keeps only flat values)."""
        empty = EnergyResult()
        device = fit.of(self.primary_domain) if fit else empty
        gpu = fit.of("gpu") if fit else empty
        cpu = fit.of("cpu") if fit else empty
        test = self.test.of(self.primary_domain) if self.test else empty
        peaks = _peaks_over([w for w in (fit, self.test) if w is not None])
        rss_kind = next((k for k in peaks if k.startswith("process-rss")), None)
        problems = [p for w in (self.idle, fit, self.test) if w is not None for p in w.problems]
        return {
            # the computing device's energy over training (validation included)
            "energy_j": device.joules,
            "energy_source": device.source,
            "energy_device": self.primary_domain,
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
            "test_time_s": self.test.time_s if self.test else None,
            "co2_kg": self.carbon.co2_kg,
            "codecarbon_energy_j": self.carbon.energy_j,  # its whole-machine estimate, training only
            "codecarbon_error": self.carbon.error,
            "peak_memory_mb": peaks.get(self.primary_peak),
            "peak_memory_kind": self.primary_peak,
            "peak_allocated_mb": peaks.get("torch-allocated"),
            "peak_reserved_mb": peaks.get("torch-reserved"),
            "peak_device_used_mb": peaks.get("nvml-device-used"),
            "peak_rss_mb": peaks.get(rss_kind) if rss_kind else None,
            "peak_rss_kind": rss_kind,
            "measurement_problems": problems,
            "measurement": {
                **self.settings.model_dump(),
                **self.sources,
                "codecarbon_csv": self.carbon.csv and Path(self.carbon.csv).name,
                "codecarbon_start_s": self.carbon.start_s,
                "codecarbon_stop_s": self.carbon.stop_s,
                "energy_j_window": "fit: every epoch's training and validation",
                "peak_window": "fit and test",
            },
            "hardware": self.hardware,
        }


def _peaks_over(windows: list[WindowResult]) -> dict[str, float | None]:
    peaks: dict[str, float | None] = {}
    for window in windows:
        for kind, mb in window.peaks_mb.items():
            seen = peaks.get(kind)
            peaks[kind] = mb if seen is None else (seen if mb is None else max(seen, mb))
    return peaks


@dataclass
class RunResult:
    spec: RunSpec  # resolved: every default filled in
    digest: str  # the spec's hash with the device type: the run's identity
    fit: FitResult
    test_accuracy: float
    best_val_accuracy: float
    arch: ArchSpec
    device: str
    measurement: RunMeasurement | None = None
    checkpoint_set_aside: Path | None = None  # a corrupt or foreign checkpoint found at the start
    precision_flags: dict[str, Any] | None = None
    analysis: Analysis | None = None  # FLOPs and memory by part (bpfree.engine.analysis), counted before the fit
    split_sizes: tuple[int, int] = (0, 0)  # training and validation samples

    def epoch_flops(self) -> list[float] | None:
        """FLOPs of each epoch of the history (training and validation), or None."""
        if self.analysis is None:
            return None
        per_epoch = epoch_flops(self.analysis, [r.stage for r in self.fit.history], *self.split_sizes)
        return [t + v for t, v in per_epoch]

    def _hardware_fields(self, energy_j: float | None, energy_source: str | None) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        split = self.fit.time_split
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
        if self.fit.profile_trace is not None:
            fields["profile_trace"] = self.fit.profile_trace.name
        if self.analysis is not None:
            stages = [r.stage for r in self.fit.history]
            fields |= run_costs(
                self.analysis, stages, *self.split_sizes, self.fit.train_time_s, energy_j, energy_source
            )
        return fields

    def record(self) -> RunRecord:
        spec, fit = self.spec, self.fit
        fields: dict[str, Any] = {
            "spec_digest": self.digest,
            "algorithm": spec.algorithm,
            "arch": str(self.arch),
            "dataset": spec.dataset,
            "seed": spec.seed,
            "status": fit.status,
            "test_accuracy": self.test_accuracy,
            "best_val_accuracy": self.best_val_accuracy,
            "epochs": fit.epochs,
            "resumed": fit.pieces > 1,
            "pieces": fit.pieces,
            "checkpoint_set_aside": self.checkpoint_set_aside and self.checkpoint_set_aside.name,
            "train_time_s": fit.train_time_s,
            "checkpoints": fit.checkpoints,
            "checkpoint_every_s": spec.checkpoint_every_s,
            "checkpoint_time_s": fit.checkpoint_time_s,
            "time_per_epoch_s": fit.train_time_s / max(fit.epochs, 1),
            "device": self.device,
            "params": spec.params,
            "early_stopping": spec.early_stopping.model_dump(),
            "precision": spec.precision,
            "precision_flags": self.precision_flags,
            "bpfree_version": __version__,
            "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "python_version": platform.python_version(),
            "host": platform.node(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if self.measurement is not None:
            fields.update(self.measurement.metrics(fit.measurement))
            fields["energy_covers"] = (
                "whole fit"
                if fit.pieces == 1
                else (
                    f"sum of {fit.pieces} pieces, each up to its last checkpoint"
                    if len(fit.pieces_measured) == fit.pieces
                    else "last piece (the checkpoint held no measurement of the earlier ones)"
                )
            )
            fields["pieces_measured"] = list(fit.pieces_measured) or None
            carbon_pieces = self.measurement.carbon.pieces
            fields["codecarbon_pieces"] = carbon_pieces
            fields["co2_covers"] = (
                None
                if self.measurement.carbon.co2_kg is None
                else "whole fit"
                if fit.pieces == 1
                else (
                    f"{carbon_pieces} of {fit.pieces} pieces, each up to its last 30 s flush"
                    + ("" if carbon_pieces == fit.pieces else " (a piece killed before its first flush has none)")
                )
            )
        fields.update(self._hardware_fields(fields.get("energy_j"), fields.get("energy_source")))
        return RunRecord(**fields)


def check_output_dir(out: str | Path) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BpfreeError(f"cannot create output directory {out}: {err.strerror}") from None
    try:
        writable_directory(out)  # os.access says yes to root on a read-only mount
    except BpfreeError:
        raise BpfreeError(f"output directory {out} is not writable") from None
    return out


def completed_record(digest: str, out: str | Path) -> RunRecord | None:
    """The metrics.json in ``out`` if it is this run's finished record (ok or diverged; same
    spec digest): a re-run command (a requeued SLURM job) then has nothing to do."""
    path = Path(out) / METRICS
    if not path.exists():
        return None
    try:
        record = read_record(path)
    except BpfreeError:
        return None  # unreadable or another bpfree's: train
    return record if record.spec_digest == digest else None


def prepare(spec: RunSpec) -> tuple[RunSpec, torch.device, str]:
    """The resolved spec, the device and the run's digest; every check made before any work."""
    device = resolve_device(spec.machine.device)
    check_precision(spec.precision, device)
    spec = resolve(spec)
    return spec, device, spec.digest(device.type)


def train(spec: RunSpec, out: str | Path | None = None) -> RunResult:
    """Run ``spec`` (resolved here if it is not yet); with ``out``, write its files there and
    resume from a checkpoint left there by the same run."""
    spec, device, digest = prepare(spec)
    if out is not None:
        out = check_output_dir(out)
        text = dump_yaml(spec)
        if not (out / SPEC).is_file() or (out / SPEC).read_bytes() != text.encode():
            write_text_atomic(out / SPEC, text)
    seed_everything(spec.seed)
    checkpoint = Checkpoint(out / CHECKPOINT, spec.identity(device.type)) if out is not None else None
    arch = parse_arch(spec.arch)
    try:
        # build first: bad parameters fail before any data is read
        info = DATASETS.get(spec.dataset).info
        algo = build_algorithm(spec.algorithm, arch, info, spec.params, device=device, seed=spec.seed)
        data = load_splits(
            spec.dataset, root=spec.machine.data_root, seed=spec.seed, device=device, download=spec.machine.download
        )
        if checkpoint is not None:  # one that does not fit this run is set aside before any restore
            checkpoint.check = lambda state: check_fits(state, algo, spec.early_stopping, EpochRecord, device)
        with precision_context(spec.precision, device):  # training, validation and test alike
            flags = precision_flags(device)
            analysis = None
            if spec.measurement.hardware_analysis:  # on a copy, before the fit; the RNGs are restored
                analysis = analyse(
                    lambda: build_algorithm(spec.algorithm, arch, info, spec.params, device=device, seed=spec.seed),
                    data,
                    max_epochs=spec.early_stopping.max_epochs,
                )
            profile_epoch = spec.measurement.profile_epoch
            result, test_acc, measurement = measured_fit(
                algo,
                data,
                spec.early_stopping,
                seed=spec.seed,
                settings=spec.measurement,
                out=out,
                checkpointing=Checkpointing(checkpoint, spec.checkpoint_every_s) if checkpoint is not None else None,
                profiling=Profiling(profile_epoch, out) if profile_epoch is not None and out is not None else None,
            )
            val_acc = algo.accuracy(data.val) if result.status == "ok" else float("nan")
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise BpfreeError(
            f"out of memory on {device} training {spec.algorithm} {arch} with batch size "
            f"{spec.params.get('batch_size', '?')} on {spec.dataset}: lower batch_size (--params) "
            "or use a smaller architecture; the last checkpoint is kept, so the same "
            "command resumes"
        ) from None
    run = RunResult(
        spec,
        digest,
        result,
        test_acc,
        val_acc,
        algo.arch,
        str(device),
        measurement,
        checkpoint.set_aside if checkpoint is not None else None,
        flags,
        analysis,
        (len(data.train), len(data.val)),
    )
    if out is not None:
        write_outputs(run, out)
        checkpoint.remove()  # the run is complete: nothing to resume
    return run


def measured_fit(
    algo,
    data: DataSplits,
    policy: EarlyStopping,
    *,
    seed: int,
    settings: Measurement,
    out: Path | None = None,
    checkpointing: Checkpointing | None = None,
    profiling: Profiling | None = None,
) -> tuple[FitResult, float, RunMeasurement]:
    """Idle baseline, then ``fit`` (CodeCarbon around it), then test accuracy in its own
    window: (fit result, test accuracy, what was measured). CodeCarbon's CSV goes to ``out``.

    A run resumed from a checkpoint is summed over its pieces: each checkpoint keeps what
    the fit window and CodeCarbon measured so far (the earlier pieces' and this one's), and
    the fit window returned covers them all, each piece up to its last checkpoint (the work
    of a killed epoch is lost, and measured again when it is redone)."""
    resume = checkpointing.checkpoint.load() if checkpointing is not None else None
    earlier = PiecesMeasured.from_checkpoint(resume)
    warm_up(algo.device)
    with Meter.for_device(algo.device, settings) as meter:
        # idle with the data and model resident: net energy is what the training added
        # on a GPU, wait (up to 10 s) for the power reading to settle after the warm-up first
        idle = meter.measure_idle(settings.idle_seconds, settle_max_s=10.0 if algo.device.type == "cuda" else 0.0)
        carbon = _carbon_tracker(settings, out, earlier.carbon_rows, gpu_ids=meter.nvml_gpu_ids)
        if checkpointing is not None:
            checkpointing.measured = lambda: earlier.plus(meter.peek_window("fit"), carbon, str(algo.device)).to_dict()
        try:
            result = fit(algo, data, policy, seed=seed, meter=meter, checkpointing=checkpointing, profiling=profiling)
        finally:
            carbon_result = carbon.stop()
        if result.measurement is not None and earlier.windows:
            whole = earlier.plus(result.measurement, carbon, str(algo.device))
            result.measurement = combine_windows(whole.windows, "fit")
            result.pieces_measured = whole.summary
        test_window = None
        test_acc = float("nan")
        if result.status == "ok":
            meter.begin_window("test")
            test_acc = algo.accuracy(data.test)
            test_window = meter.end_window("test")
        measurement = RunMeasurement(
            settings,
            meter.primary_domain,
            meter.primary_peak,
            idle,
            test_window,
            carbon_result,
            meter.describe(),
            hardware_metadata(algo.device),
        )
    return result, test_acc, measurement


@dataclass(frozen=True)
class PiecesMeasured:
    """What the earlier pieces of a resumed run measured, as its checkpoint keeps it: each
    piece's fit window up to its last checkpoint, CodeCarbon's rows, and a summary per piece
    (host, device, time, energy and its source) for metrics.json."""

    windows: tuple[WindowResult, ...] = ()
    carbon_rows: tuple[dict[str, Any], ...] = ()
    summary: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_checkpoint(cls, state: CheckpointState | None) -> PiecesMeasured:
        extra = (state.measured if state is not None else None) or {}
        return cls(
            tuple(WindowResult.from_dict(w) for w in extra.get("windows", ())),
            tuple(extra.get("carbon_rows", ())),
            tuple(extra.get("summary", ())),
        )

    def plus(self, window: WindowResult, carbon: CarbonTracker | _NoCarbon, device: str) -> PiecesMeasured:
        """These pieces and the current one, measured up to now."""
        energy = window.of("gpu" if device.startswith("cuda") else "cpu")
        piece = {
            "piece": len(self.windows) + 1,
            "host": platform.node(),
            "device": device,
            "time_s": window.time_s,
            "energy_j": energy.joules,
            "energy_source": energy.source,
        }
        return PiecesMeasured(self.windows + (window,), tuple(carbon.rows_so_far()), self.summary + (piece,))

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": [w.to_dict() for w in self.windows],
            "carbon_rows": list(self.carbon_rows),
            "summary": list(self.summary),
        }


class _NoCarbon:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    def rows_so_far(self) -> list[dict[str, Any]]:
        return []

    def stop(self) -> CarbonResult:
        return CarbonResult(error=self.reason)


def _carbon_tracker(
    settings: Measurement,
    out: Path | None,
    earlier: tuple[dict[str, Any], ...] = (),
    gpu_ids: list[int] | None = None,
) -> CarbonTracker | _NoCarbon:
    """Started here, outside every window: its start costs about a second. ``gpu_ids``: the
    run's own GPU (NVML index), so that CodeCarbon does not count every visible board."""
    if not settings.codecarbon:
        return _NoCarbon("off (measurement.codecarbon: false)")
    if out is None:
        return _NoCarbon("off (no run directory for its CSV)")
    tracker = CarbonTracker(out, settings.country_iso_code, earlier=earlier, gpu_ids=gpu_ids)
    tracker.start()
    return tracker


def write_outputs(run: RunResult, out: Path) -> None:
    rows = [r.row() for r in run.fit.history]
    flops = run.epoch_flops()
    if flops is not None:  # each epoch's training and validation FLOPs (bpfree.engine.analysis)
        rows = [row | {"flops": f} for row, f in zip(rows, flops)]
    extra = [k for r in rows for k in r if k not in HISTORY_COLUMNS]
    write_csv_atomic(out / "history.csv", rows, HISTORY_COLUMNS + list(dict.fromkeys(extra)))
    write_json_atomic(out / METRICS, run.record().model_dump())
