"""One training run end to end: data, algorithm, fit, test, and its files on disk.

A resolved :class:`~bpfree.core.spec.RunSpec` comes in (from ``spec.yaml``, the workflow, or the
CLI's flags), a :class:`RunResult` goes out, and ``DIR/spec.yaml``, ``DIR/metrics.json`` (a
:class:`~bpfree.core.record.RunRecord`) and ``DIR/history.csv`` are written atomically."""

from __future__ import annotations

import copy
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bpfree import __version__
from bpfree.algorithms import Algorithm, build_algorithm
from bpfree.core.errors import BpfreeError, is_out_of_memory
from bpfree.core.io import writable_directory, write_history_atomic, write_json_atomic, write_text_atomic
from bpfree.core.outputs import RUN_CHECKPOINT, RUN_HISTORY, RUN_METRICS, RUN_SPEC
from bpfree.core.record import RunRecord, read_record
from bpfree.core.registry import DATASETS
from bpfree.core.spec import Measurement, RunSpec, dump_yaml
from bpfree.data import DataSplits, load_splits
from bpfree.engine.analysis import analyse
from bpfree.engine.checkpoint import Checkpoint, CheckpointState, check_fits
from bpfree.engine.loop import Checkpointing, EpochRecord, FitResult, Profiling, fit
from bpfree.engine.outcome import Measured, RunResult
from bpfree.engine.precision import check_precision, precision_context, precision_flags
from bpfree.engine.resolve import resolve
from bpfree.engine.setup import resolve_device, seed_everything
from bpfree.engine.warmup import warm_up
from bpfree.measure import (
    FIT,
    TEST,
    CarbonTracker,
    IdleCache,
    Meter,
    WindowResult,
    combine_windows,
    hardware_metadata,
)
from bpfree.models import parse_arch

CHECKPOINT, SPEC, METRICS = RUN_CHECKPOINT, RUN_SPEC, RUN_METRICS  # bpfree.core.outputs names them


def environment() -> dict[str, Any]:
    """What ran the run: versions, torch's threads, the host, when it finished."""
    return {
        "bpfree_version": __version__,
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
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


def prepare(spec: RunSpec, device: torch.device | None = None) -> tuple[RunSpec, torch.device, str]:
    """The resolved spec, the device and the run's digest; every check made before any work.
    ``device``: one already resolved (a tuning job's, for each of its trials)."""
    device = resolve_device(spec.machine.device) if device is None else device
    check_precision(spec.precision, device)
    spec = resolve(spec)
    return spec, device, spec.digest(device.type)


@dataclass
class Trained:
    """A configuration trained: the algorithm after its fit, the fit, and the final model's
    accuracy on the validation split (NaN when the fit diverged)."""

    algo: Algorithm
    fit: FitResult
    val_accuracy: float


def build_configuration(spec: RunSpec, device: torch.device, info) -> Algorithm:
    """The configuration's algorithm, seeded (its initial weights follow ``spec.seed``).
    ``spec``: resolved (:func:`prepare`)."""
    seed_everything(spec.seed)
    return build_algorithm(spec.algorithm, parse_arch(spec.arch), info, spec.params, device=device, seed=spec.seed)


def train_configuration(
    spec: RunSpec,
    data: DataSplits,
    algo: Algorithm | None = None,
    *,
    device: torch.device | None = None,
    meter: Meter | None = None,
    checkpointing: Checkpointing | None = None,
    resume: CheckpointState | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    profiling: Profiling | None = None,
    progress: bool = False,
) -> Trained:
    """The one way a configuration is trained, by ``bpfree train`` (:func:`train`) and by every
    tuning trial (bpfree.tuning.trial): built (:func:`build_configuration`, unless ``algo`` is
    given already built), fitted under its precision and scored on the validation split.
    ``spec``: resolved (:func:`prepare`). ``meter``, ``checkpointing``, ``resume``,
    ``profiling``: as :func:`bpfree.engine.loop.fit` takes them (a run's; a trial has none).
    ``progress``: a bar or a line per epoch (a run's; a trial reports at its end instead)."""
    if algo is None:
        algo = build_configuration(spec, device, data.info)
    with precision_context(spec.precision, algo.device):  # training and validation alike
        result = fit(
            algo,
            data,
            spec.early_stopping,
            seed=spec.seed,
            meter=meter,
            checkpointing=checkpointing,
            resume=resume,
            on_epoch_end=on_epoch_end,
            profiling=profiling,
            progress=progress,
        )
        val_accuracy = algo.accuracy(data.val) if result.status == "ok" else float("nan")
    return Trained(algo, result, val_accuracy)


def train(spec: RunSpec, out: str | Path | None = None) -> RunResult:
    """Run ``spec`` (resolved here if it is not yet); with ``out``, write its files there and
    resume from a checkpoint left there by the same run."""
    spec, device, digest = prepare(spec)
    if out is not None:
        out = check_output_dir(out)
        text = dump_yaml(spec)
        if not (out / SPEC).is_file() or (out / SPEC).read_bytes() != text.encode():
            write_text_atomic(out / SPEC, text)
    arch = parse_arch(spec.arch)
    info = DATASETS.get(spec.dataset).info
    try:
        data = load_splits(
            spec.dataset, root=spec.machine.data_root, seed=spec.seed, device=device, download=spec.machine.download
        )
        with precision_context(spec.precision, device):
            flags = precision_flags(device)
            analysis = None
            if spec.measurement.hardware_analysis:  # on a copy, before the fit; the RNGs are restored
                analysis = analyse(
                    lambda: build_algorithm(spec.algorithm, arch, info, spec.params, device=device, seed=spec.seed),
                    data,
                    max_epochs=spec.early_stopping.max_epochs,
                )
        algo = build_configuration(spec, device, info)
        checkpoint = None
        if out is not None:  # one that does not fit this run is set aside before any restore
            checkpoint = Checkpoint(
                out / CHECKPOINT,
                spec.identity(device.type),
                check=lambda state: check_fits(state, algo, spec.early_stopping, EpochRecord, device),
            )
        trained, measured = measure_run(spec, algo, data, out=out, checkpoint=checkpoint)
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
        trained.fit,
        measured.test_accuracy,
        trained.val_accuracy,
        str(trained.algo.arch),
        str(device),
        measured,
        checkpoint.set_aside if checkpoint is not None else None,
        flags,
        analysis,
        (len(data.train), len(data.val)),
        environment(),
    )
    if out is not None:
        write_outputs(run, out)
        checkpoint.remove()  # the run is complete: nothing to resume
    return run


def measure_run(
    spec: RunSpec, algo: Algorithm, data: DataSplits, *, out: Path | None, checkpoint: Checkpoint | None
) -> tuple[Trained, Measured]:
    """One run's fit and test under its measurement, every window opened and closed here: an
    idle baseline (IDLE, by the meter) with the data and model resident, then the FIT window
    (CodeCarbon inside it: ``Meter.window(FIT, carbon=...)``) around the fit, whose loop
    measures each epoch in its own window, then the TEST window around the test pass.

    ``checkpoint``: read once here (the state the fit resumes from), and written by the fit
    every ``spec.checkpoint_every_s`` with what was measured so far (:class:`MeasuredSoFar`).
    A run resumed from it is summed over its pieces: each checkpoint keeps what the FIT window
    and CodeCarbon measured so far (the earlier pieces' and this one's), and the FIT window
    returned covers them all, each piece up to its last checkpoint (the work of a killed epoch
    is lost, and measured again when it is redone)."""
    settings, device = spec.measurement, algo.device
    resume = checkpoint.load() if checkpoint is not None else None
    earlier = PiecesMeasured.from_checkpoint(resume)
    profile_epoch = settings.profile_epoch
    profiling = Profiling(profile_epoch, out) if profile_epoch is not None and out is not None else None
    warm_up(device)
    with precision_context(spec.precision, device), Meter.for_device(device, settings) as meter:
        # idle with the data and model resident: net energy is what the training added; on a
        # GPU, wait (up to 10 s) for the power reading to settle after the warm-up first
        # reused from an earlier job of this machine and device within measurement.idle_reuse_s
        idle = meter.measure_idle(
            settings.idle_seconds,
            settle_max_s=10.0 if device.type == "cuda" else 0.0,
            reuse=IdleCache(str(device), settings.idle_reuse_s),
        )
        carbon = carbon_tracker(settings, out, earlier.carbon_rows, gpu_ids=meter.nvml_gpu_ids)
        so_far = MeasuredSoFar(meter, earlier, str(device))
        checkpointing = Checkpointing(checkpoint, spec.checkpoint_every_s, so_far) if checkpoint is not None else None
        with meter.window(FIT, carbon=carbon) as fit_window:
            trained = train_configuration(
                spec,
                data,
                algo,
                meter=meter,
                checkpointing=checkpointing,
                resume=resume,
                profiling=profiling,
                progress=True,
            )
        whole = earlier.plus(fit_window.result, str(device))
        test_window, test_accuracy = None, float("nan")
        if trained.fit.status == "ok":
            with meter.window(TEST) as test:
                test_accuracy = algo.accuracy(data.test)
            test_window = test.result
        measured = Measured(
            settings,
            meter.primary_domain,
            meter.primary_peak,
            idle,
            combine_windows(list(whole.windows), FIT),
            whole.summary if earlier.windows else (),
            test_window,
            test_accuracy,
            fit_window.result.carbon,
            meter.describe(),
            hardware_metadata(device),
        )
    if trained.fit.status == "ok":  # outside every window: reported, not measured
        with precision_context(spec.precision, device):
            measured.by_selection = test_by_selection(algo, trained.fit, data.test)
    return trained, measured


class MeasuredSoFar:
    """What a run's measurement holds at a checkpoint: the earlier pieces' FIT windows and
    CodeCarbon rows, and this piece's up to now (the FIT window peeked, left open). The loop's
    checkpoints keep it (``Checkpointing.measured``), so that a resumed run's energy adds up."""

    def __init__(self, meter: Meter, earlier: PiecesMeasured, device: str) -> None:
        self.meter, self.earlier, self.device = meter, earlier, device

    def so_far(self) -> dict[str, Any]:
        return self.earlier.plus(self.meter.peek_window(FIT), self.device).to_dict()


def test_by_selection(algo: Algorithm, result: FitResult, test) -> dict[str, Any] | None:
    """The test accuracy of the weights each selection rule chose (the last epoch's, the
    lowest validation loss's, the highest validation accuracy's; ``FitResult.chosen``), from the
    one fit with no extra training, and the epoch the run's own weights are from. The model
    ends with its own weights again. None for a fit that reports no selections (several
    stages, or parts that stop on their own: bpfree.engine.stopping.selections_reported)."""
    if not result.chosen:
        return None
    own = copy.deepcopy(algo.net.state_dict())
    accuracies: dict[str, Any] = {}
    for name, chosen in result.chosen.items():
        algo.net.load_state_dict(chosen.weights)
        accuracies[name] = algo.accuracy(test)
    algo.net.load_state_dict(own)
    return {
        "accuracy": accuracies,
        "epoch": {name: chosen.epoch for name, chosen in result.chosen.items()},
    }


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

    def plus(self, window: WindowResult, device: str) -> PiecesMeasured:
        """These pieces and the current one (its FIT window, peeked or ended: its CodeCarbon
        rows so far, or its result's)."""
        energy = window.of("gpu" if device.startswith("cuda") else "cpu")
        piece = {
            "piece": len(self.windows) + 1,
            "host": platform.node(),
            "device": device,
            "time_s": window.time_s,
            "energy_j": energy.joules,
            "energy_source": energy.source,
        }
        return PiecesMeasured(self.windows + (window,), self.carbon_rows + window.carbon_rows, self.summary + (piece,))

    def to_dict(self) -> dict[str, Any]:
        return {
            "windows": [w.to_dict() for w in self.windows],
            "carbon_rows": list(self.carbon_rows),
            "summary": list(self.summary),
        }


def carbon_tracker(
    settings: Measurement,
    out: Path | None,
    earlier: tuple[dict[str, Any], ...] = (),
    gpu_ids: list[int] | None = None,
) -> CarbonTracker:
    """The run's CodeCarbon tracker, for its FIT window (started and stopped by it), or one
    that is off and says why. ``gpu_ids``: the run's own GPU (NVML index), so that CodeCarbon
    does not count every visible board."""
    if not settings.codecarbon:
        return CarbonTracker.off("off (measurement.codecarbon: false)")
    if out is None:
        return CarbonTracker.off("off (no run directory for its CSV)")
    return CarbonTracker(out, settings.country_iso_code, earlier=earlier, gpu_ids=gpu_ids)


def write_outputs(run: RunResult, out: Path) -> None:
    rows = [r.row() for r in run.fit.history]
    flops = run.epoch_flops()
    if flops is not None:  # each epoch's training and validation FLOPs (bpfree.engine.analysis)
        rows = [row | {"flops": f} for row, f in zip(rows, flops)]
    write_history_atomic(out / RUN_HISTORY, rows)
    write_json_atomic(out / METRICS, run.record().model_dump())
