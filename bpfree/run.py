"""One training run end to end: data, algorithm, fit, test, and its files on disk.

``RunConfig`` comes in (from the CLI or the workflow), ``RunResult`` goes out, and
``DIR/metrics.json`` + ``DIR/history.csv`` are written atomically."""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bpfree import __version__
from bpfree.algorithms import Algorithm, build_algorithm, params_from_mapping
from bpfree.checkpoint import Checkpoint
from bpfree.data import DataSplits, load_splits
from bpfree.errors import BpfreeError
from bpfree.io import writable_directory, write_csv_atomic, write_json_atomic
from bpfree.measure import (
    CarbonResult,
    CarbonTracker,
    EnergyResult,
    MeasurementSettings,
    Meter,
    WindowResult,
    combine_windows,
    hardware_metadata,
)
from bpfree.models import ArchSpec, parse_arch
from bpfree.precision import check_precision, precision_context
from bpfree.registry import ALGORITHMS, DATASETS
from bpfree.training import (
    EarlyStopping,
    FitResult,
    check_checkpoint_every_s,
    fit,
    resolve_device,
    seed_everything,
)

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
    measurement: MeasurementSettings = field(default_factory=MeasurementSettings)
    checkpoint_every_s: float = 60.0  # a checkpoint after an epoch once this has passed; 0: every epoch
    precision: str = "fp32"  # fp32 (the paper's), tf32 (CUDA only) or bf16 autocast: bpfree.precision

    def __post_init__(self) -> None:
        check_checkpoint_every_s(self.checkpoint_every_s)
        check_precision(self.precision)


@dataclass
class RunMeasurement:
    """What the meter saw besides the fit window (which is in ``FitResult.measurement``)."""

    settings: MeasurementSettings
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
                **dataclasses.asdict(self.settings),
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
    config: RunConfig
    fit: FitResult
    test_accuracy: float
    best_val_accuracy: float
    arch: ArchSpec
    params: dict[str, Any]
    device: str
    measurement: RunMeasurement | None = None
    checkpoint_set_aside: Path | None = None  # a corrupt or foreign checkpoint found at the start

    def metrics(self) -> dict[str, Any]:
        metrics = {
            "algorithm": self.config.algorithm,
            "arch": str(self.arch),
            "dataset": self.config.dataset,
            "seed": self.config.seed,
            "status": self.fit.status,
            "test_accuracy": self.test_accuracy,
            "best_val_accuracy": self.best_val_accuracy,
            "epochs": self.fit.epochs,
            # killed and resumed from its checkpoint: time, energy and CO2 are summed over
            # the pieces, peaks are their max (see energy_covers, pieces_measured)
            "resumed": self.fit.pieces > 1,
            "pieces": self.fit.pieces,
            "checkpoint_set_aside": self.checkpoint_set_aside and self.checkpoint_set_aside.name,
            "train_time_s": self.fit.train_time_s,
            "checkpoints": self.fit.checkpoints,
            "checkpoint_every_s": self.config.checkpoint_every_s,
            "checkpoint_time_s": self.fit.checkpoint_time_s,  # included in train_time_s and energy_j
            "time_per_epoch_s": self.fit.train_time_s / max(self.fit.epochs, 1),
            "device": self.device,
            "params": self.params,
            "early_stopping": dataclasses.asdict(self.config.early_stopping),
            "precision": self.config.precision,
            "bpfree_version": __version__,
            "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "python_version": platform.python_version(),
            "host": platform.node(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if self.measurement is not None:
            metrics.update(self.measurement.metrics(self.fit.measurement))
            metrics["energy_covers"] = (
                "whole fit"
                if self.fit.pieces == 1
                else (
                    f"sum of {self.fit.pieces} pieces, each up to its last checkpoint"
                    if len(self.fit.pieces_measured) == self.fit.pieces
                    else "last piece (the checkpoint held no measurement of the earlier ones)"
                )
            )
            metrics["pieces_measured"] = list(self.fit.pieces_measured) or None
            carbon_pieces = self.measurement.carbon.pieces
            metrics["codecarbon_pieces"] = carbon_pieces
            metrics["co2_covers"] = (
                None
                if self.measurement.carbon.co2_kg is None
                else "whole fit"
                if self.fit.pieces == 1
                else (
                    f"{carbon_pieces} of {self.fit.pieces} pieces, each up to its last 30 s flush"
                    + ("" if carbon_pieces == self.fit.pieces else " (a piece killed before its first flush has none)")
                )
            )
        return metrics


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


CHECKPOINT = "checkpoint.pt"
IDENTITY_KEYS = ("algorithm", "arch", "dataset", "seed", "params", "early_stopping", "precision")


def run_identity(cfg: RunConfig) -> dict[str, Any]:
    """What makes a run this run, as metrics.json states it: a checkpoint or a metrics.json
    with another identity in the same directory belongs to another configuration."""
    klass = ALGORITHMS.get(cfg.algorithm)
    arch = cfg.arch or parse_arch(klass.default_arch)
    params = dataclasses.asdict(params_from_mapping(cfg.algorithm, cfg.params))
    identity = {
        "algorithm": cfg.algorithm,
        "arch": str(arch),
        "dataset": cfg.dataset,
        "seed": cfg.seed,
        "params": params,
        "early_stopping": dataclasses.asdict(cfg.early_stopping),
        "precision": cfg.precision,
    }
    return json.loads(json.dumps(identity))  # as it reads back from metrics.json


def completed_metrics(cfg: RunConfig, out: str | Path) -> dict[str, Any] | None:
    """The metrics.json in ``out`` if it is this configuration's finished run (ok or
    diverged): a re-run command (a requeued SLURM job) then has nothing to do."""
    try:
        metrics = json.loads((Path(out) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None  # none yet, or unreadable: train
    if not isinstance(metrics, dict) or metrics.get("status") not in ("ok", "diverged"):
        return None
    return metrics if {k: metrics.get(k) for k in IDENTITY_KEYS} == run_identity(cfg) else None


def _is_out_of_memory(err: BaseException) -> bool:
    # the CPU allocator raises a plain RuntimeError, CUDA's a torch.OutOfMemoryError
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err)
    )


def train(cfg: RunConfig, out: str | Path | None = None) -> RunResult:
    device = resolve_device(cfg.device)
    check_precision(cfg.precision, device)  # before any work
    if out is not None:
        out = check_output_dir(out)
    seed_everything(cfg.seed)
    identity = run_identity(cfg)  # checks the params before anything is built
    checkpoint = Checkpoint(out / CHECKPOINT, identity) if out is not None else None
    try:
        # build first: bad parameters or an unfit architecture fail before any data is read
        info = DATASETS.get(cfg.dataset).info
        algo = build_algorithm(cfg.algorithm, cfg.arch, info, cfg.params, device=device, seed=cfg.seed)
        data = load_splits(cfg.dataset, root=cfg.data_root, seed=cfg.seed, device=device, download=cfg.download)
        with precision_context(cfg.precision, device):  # training, validation and test alike
            result, test_acc, measurement = measured_fit(
                algo,
                data,
                cfg.early_stopping,
                seed=cfg.seed,
                settings=cfg.measurement,
                out=out,
                checkpoint=checkpoint,
                checkpoint_every_s=cfg.checkpoint_every_s,
            )
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not _is_out_of_memory(err):
            raise
        raise BpfreeError(
            f"out of memory on {device} training {cfg.algorithm} {identity['arch']} with batch size "
            f"{identity['params'].get('batch_size', '?')} on {cfg.dataset}: lower batch_size (--params) "
            "or use a smaller architecture; the last checkpoint is kept, so the same "
            "command resumes"
        ) from None
    with precision_context(cfg.precision, device):
        val_acc = algo.accuracy(data.val) if result.status == "ok" else float("nan")
    run = RunResult(
        cfg,
        result,
        test_acc,
        val_acc,
        algo.arch,
        dataclasses.asdict(algo.params),
        str(device),
        measurement,
        checkpoint.set_aside if checkpoint is not None else None,
    )
    if out is not None:
        write_outputs(run, out)
        checkpoint.remove()  # the run is complete: nothing to resume
    return run


def measured_fit(
    algo: Algorithm,
    data: DataSplits,
    policy: EarlyStopping,
    *,
    seed: int,
    settings: MeasurementSettings,
    out: Path | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_every_s: float = 0.0,
) -> tuple[FitResult, float, RunMeasurement]:
    """Idle baseline, then ``fit`` (CodeCarbon around it), then test accuracy in its own
    window: (fit result, test accuracy, what was measured). CodeCarbon's CSV goes to ``out``.

    A run resumed from ``checkpoint`` is summed over its pieces: each checkpoint keeps what
    the fit window and CodeCarbon measured so far (the earlier pieces' and this one's), and
    the fit window returned covers them all, each piece up to its last checkpoint (the work
    of a killed epoch is lost, and measured again when it is redone)."""
    resume = checkpoint.load() if checkpoint is not None else None
    earlier = PiecesMeasured.from_checkpoint(resume)
    warm_up(algo.device)
    with Meter.for_device(algo.device, settings) as meter:
        # idle with the data and model resident: net energy is what the training added
        idle = meter.measure_idle(settings.idle_seconds)
        carbon = _carbon_tracker(settings, out, earlier.carbon_rows)

        def so_far() -> dict[str, Any]:
            return earlier.plus(meter.peek_window("fit"), carbon, str(algo.device)).to_dict()

        try:
            result = fit(
                algo,
                data,
                policy,
                seed=seed,
                meter=meter,
                checkpoint=checkpoint,
                checkpoint_extra=so_far,
                checkpoint_every_s=checkpoint_every_s,
            )
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
    def from_checkpoint(cls, state: dict[str, Any] | None) -> PiecesMeasured:
        extra = (state or {}).get("extra") or {}
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


def warm_up(device: torch.device) -> None:
    """Pay torch's one-time lazy costs before anything is measured: the first optimiser
    built imports torch._dynamo (1-2 s of CPU here), which on a small run was most of what
    the fit window measured; on a GPU, the first matmul creates the cuBLAS handle."""
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
    if device.type == "cuda":
        ones = torch.ones(8, 8, device=device)
        (ones @ ones).sum().item()


class _NoCarbon:
    def __init__(self, reason: str) -> None:
        self.reason = reason

    def rows_so_far(self) -> list[dict[str, Any]]:
        return []

    def stop(self) -> CarbonResult:
        return CarbonResult(error=self.reason)


def _carbon_tracker(
    settings: MeasurementSettings, out: Path | None, earlier: tuple[dict[str, Any], ...] = ()
) -> CarbonTracker | _NoCarbon:
    """Started here, outside every window: its start costs about a second."""
    if not settings.codecarbon:
        return _NoCarbon("off (measurement.codecarbon: false)")
    if out is None:
        return _NoCarbon("off (no run directory for its CSV)")
    tracker = CarbonTracker(out, settings.country_iso_code, earlier=earlier)
    tracker.start()
    return tracker


def write_outputs(run: RunResult, out: Path) -> None:
    rows = [r.row() for r in run.fit.history]
    extra = [k for r in rows for k in r if k not in HISTORY_COLUMNS]
    write_csv_atomic(out / "history.csv", rows, HISTORY_COLUMNS + list(dict.fromkeys(extra)))
    write_json_atomic(out / "metrics.json", run.metrics())
