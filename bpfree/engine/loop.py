"""The training loop: stages of epochs, and the small handlers that do each epoch's other work.

Plain PyTorch around the algorithm's own ``train_epoch``/``evaluate``. A stage runs its epochs
until its stopping says it is done; everything else an epoch involves is a handler that owns
its state (and, where a resumed run needs it, saves it in the checkpoint under its own key):

    StageStopping   the early stoppers of a stage: one, or one per part (CaFo's predictors)
    Selections      the weights of a stage's best epoch by the restore rule, and by each
                    reported selection rule (``test_accuracy_by_selection``)
    EpochMeasure    each epoch's measurement window (opened and closed around the epoch)
    Checkpoints     the fit's state on disk every ``every_s`` seconds
    StopSignal      a SIGTERM/SIGINT: the epoch's start kept, then written, and ``Stopped``
    Progress        a live bar on a terminal, a line per epoch in a log
    EpochCallback   the caller's ``on_epoch_end`` (a tuning trial reports to its pruner)

The stage's loop (:func:`_fit_stage`) only runs epochs and calls them in that order."""

from __future__ import annotations

import copy
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bpfree.algorithms.base import Algorithm, Evaluation, Stage
from bpfree.core.errors import BpfreeError
from bpfree.core.spec import EarlyStopping
from bpfree.data import Batches, DataSplits
from bpfree.engine.checkpoint import Checkpoint, CheckpointState, rng_state, set_rng_state
from bpfree.engine.stopping import SELECTION_RULES, Selections, StageStopping, selections_reported, stage_budget
from bpfree.measure.meter import epoch_window

if TYPE_CHECKING:
    from bpfree.measure import Meter


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


# ``bpfree train`` exits with this code when SIGTERM or SIGINT stopped it after writing its
# checkpoint: EX_TEMPFAIL ("temporary failure, try again"; docs/cluster.md says who retries)
STOPPED_EXIT_CODE = 75


# after an epoch this long or longer (and for a piece's first epoch) the state the next epoch
# starts from is kept in memory (StopSignal.before_epoch), so that a stop signal abandons that
# epoch; after a shorter one the running epoch is finished instead (about as long: SLURM's
# KillWait gives 30 s between SIGTERM and SIGKILL)
FINISH_EPOCH_S = 10.0


class StopRequest:
    """A SIGTERM or SIGINT that asked a fit to stop (``bpfree train`` arms it with
    :func:`stop_on_signals`): the fit keeps its state in a checkpoint, and :class:`Stopped`
    ends the command with :data:`STOPPED_EXIT_CODE`."""

    def __init__(self) -> None:
        self.armed = False
        self.signal: str | None = None  # the name of the signal that asked, once one did
        self.at: float | None = None  # when (time.perf_counter)

    def request(self, signum, frame=None) -> None:
        name = signal.Signals(signum).name
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: stop at once, nothing written
        if self.signal is None:
            self.signal, self.at = name, time.perf_counter()
            again = " (Ctrl-C again: at once, nothing written)" if signum == signal.SIGINT else ""
            print(f"bpfree: {name}: stopping after a checkpoint{again}", file=sys.stderr)

    @property
    def requested(self) -> bool:
        return self.armed and self.signal is not None


STOP = StopRequest()


class Stopped(Exception):
    """A fit stopped on a signal after writing its checkpoint; the same command resumes it."""

    def __init__(self, signal_name: str, epochs: int, message: str) -> None:
        super().__init__(message)
        self.signal_name, self.epochs = signal_name, epochs


class _AbandonEpoch(Exception):
    """Raised at a batch boundary of an epoch that a stop signal abandons."""


class stop_on_signals:  # noqa: N801  (used as ``with stop_on_signals():``)
    """SIGTERM and SIGINT set :data:`STOP` while the block runs (the previous handlers come
    back after it), so that a fit inside writes its checkpoint and raises :class:`Stopped`."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self) -> StopRequest:
        self.previous = {s: signal.signal(s, STOP.request) for s in self.SIGNALS}
        STOP.armed, STOP.signal, STOP.at = True, None, None
        return STOP

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        STOP.armed = False


class TimedBatches(Batches):
    """Batches that keep the time spent cutting them (``data_s``: index selection and
    augmentation inside ``epoch``, not the algorithm's work on each batch). On a GPU it is the
    host's time to launch that work: kernels run asynchronously. ``abandon()``, when set, is
    asked before each batch: True abandons the epoch (a stop signal, see :class:`StopRequest`)."""

    def __init__(self, split, *, seed: int, augment: bool = False, drop_last: bool = False) -> None:
        super().__init__(split, seed=seed, augment=augment, drop_last=drop_last)
        self.data_s = 0.0
        self.abandon: Callable[[], bool] | None = None

    def epoch(self, batch_size: int, *, shuffle: bool = True):
        inner = super().epoch(batch_size, shuffle=shuffle)
        while True:
            if self.abandon is not None and self.abandon():
                raise _AbandonEpoch
            t0 = time.perf_counter()
            try:
                item = next(inner)
            except StopIteration:
                self.data_s += time.perf_counter() - t0
                return
            self.data_s += time.perf_counter() - t0
            yield item


@dataclass
class TimeSplit:
    """Where a fit's wall time went, from the loop's own timers (seconds): ``data`` cutting
    batches, ``compute`` the rest of ``train_epoch`` (forward, backward, step), ``eval`` the
    validation passes, ``checkpoint`` writing checkpoints, ``measurement`` opening and closing
    the meter's windows and the profiler, ``other`` the loop's bookkeeping (copying the best
    weights, the progress bar)."""

    data_s: float = 0.0
    compute_s: float = 0.0
    eval_s: float = 0.0
    checkpoint_s: float = 0.0
    measurement_s: float = 0.0
    other_s: float = 0.0
    covers: str = "whole fit"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Profiling:
    """Profile epoch ``epoch`` (counted over all stages, from 1) with torch.profiler and save
    its trace as ``out/profile_epoch<N>.json`` (chrome://tracing, Perfetto). The profiler slows
    that epoch; its time and energy stay in the run's totals, and its history row says so."""

    epoch: int
    out: Path


@dataclass(frozen=True)
class Chosen:
    """The weights one selection rule chose at the end of a single-stage fit, and their epoch."""

    epoch: int
    weights: dict[str, Any]


@dataclass
class FitResult:
    status: Literal["ok", "diverged"]
    history: list[EpochRecord]
    train_time_s: float
    pieces: int = 1  # processes the fit ran in (more than 1: resumed from a checkpoint)
    checkpoints: int = 0  # written over all pieces
    checkpoint_time_s: float = 0.0  # spent writing them (inside train_time_s and the fit window)
    time_split: TimeSplit | None = None
    profile_trace: Path | None = None  # torch.profiler's trace of Profiling.epoch, when asked for
    # the epoch whose weights the model ends with (its last stage's; the last epoch without a restore)
    restored_epoch: int | None = None
    # single-stage fits (selections_reported): the weights of the last epoch and of each rule's
    # best (SELECTION_RULES), for their test accuracies; empty otherwise
    chosen: dict[str, Chosen] = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return len(self.history)


class SoFar(Protocol):
    """What a run's measurement holds so far (bpfree.engine.run.MeasuredSoFar)."""

    def so_far(self) -> dict[str, Any]: ...


@dataclass
class Checkpointing:
    """How a fit keeps its state: ``checkpoint`` is written after an epoch once ``every_s``
    seconds have passed since the last one (0: after every epoch); ``measured.so_far()``
    gives what the meter saw so far, kept in each checkpoint so that a resumed run's energy
    adds up."""

    checkpoint: Checkpoint
    every_s: float = 0.0
    measured: SoFar | None = None


# -- the fit's running totals ---------------------------------------------------------------------
class FitState:
    """What a fit carries over all its stages: the history, its time and checkpoint totals
    over the pieces it ran in, and where this piece's time went."""

    def __init__(self, algo: Algorithm, data: DataSplits, policy: EarlyStopping, batches: TimedBatches, resume):
        self.algo, self.data, self.policy, self.batches = algo, data, policy, batches
        self.history: list[EpochRecord] = []
        self.time_before = 0.0  # training time of the pieces before a kill
        self.pieces = 1
        self.checkpoints, self.checkpoint_time_s = 0, 0.0  # written, and the time writing took
        self.times = TimeSplit()  # of this piece (a checkpoint does not keep it)
        if resume is not None:
            self.history = [EpochRecord(**row) for row in resume.history]
            self.time_before = resume.train_time_s
            self.pieces = resume.pieces + 1
            self.checkpoints = resume.checkpoints
            self.checkpoint_time_s = resume.checkpoint_time_s
            self.times.covers = f"last of {self.pieces} pieces"
        self.checkpoint_time_before = self.checkpoint_time_s
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return self.time_before + time.perf_counter() - self.start

    def time_split(self) -> TimeSplit:
        """This piece's split; ``other`` is what the timers did not see."""
        split = replace(
            self.times,
            data_s=self.batches.data_s,
            compute_s=self.times.compute_s - self.batches.data_s,  # train_epoch's time, less cutting batches
            checkpoint_s=self.checkpoint_time_s - self.checkpoint_time_before,
        )
        seen = split.data_s + split.compute_s + split.eval_s + split.checkpoint_s + split.measurement_s
        split.other_s = max(time.perf_counter() - self.start - seen, 0.0)
        return split


@dataclass
class StageRun:
    """One stage as it runs: its index, budget and epochs so far, and the handlers that keep
    state for it (stopping, selections), whose states the checkpoint holds."""

    stage: Stage
    index: int
    budget: int
    stopping: StageStopping
    selections: Selections
    epochs: int = 0

    def handler_states(self) -> dict[str, Any]:
        return {"stopping": self.stopping.state_dict(), "selections": self.selections.state_dict()}

    def state(self, fit: FitState, algorithm: dict[str, Any]) -> CheckpointState:
        """Where the fit stands now (``algorithm``: its state dict, copied or not); the totals
        are filled in when it is written (:meth:`Checkpoints.write`)."""
        return CheckpointState(
            stage_index=self.index,
            stage_epochs=self.epochs,
            handlers=self.handler_states(),
            algorithm=algorithm,
            batches=fit.batches.state_dict(),
            rng=rng_state(fit.algo.device),
            history=[asdict(r) for r in fit.history],
            train_time_s=0.0,
            pieces=fit.pieces,
            checkpoints=0,
            checkpoint_time_s=0.0,
        )


# -- the handlers ------------------------------------------------------------------------------
class EpochMeasure:
    """Each epoch's measurement window, opened and closed around the epoch (discarded when
    the epoch raises); its energy goes into the epoch's record."""

    def __init__(self, meter: Meter | None) -> None:
        self.meter = meter

        self.last: dict[str, Any] = {}  # the last closed window's energy

    @contextmanager
    def around(self, epoch: int) -> Iterator[None]:
        if self.meter is None:
            yield
            return
        with self.meter.window(epoch_window(epoch)) as window:
            yield
        energy = window.result.of(self.meter.primary_domain)
        self.last = {"energy_j": energy.joules, "energy_source": energy.source, "net_energy_j": energy.net_joules}

    def fill(self, record: EpochRecord) -> None:
        """The closed window's energy into the epoch's record."""
        record.extra.update(self.last)


class Checkpoints:
    """The fit's state on disk: after an epoch once ``every_s`` have passed since the last one.
    Writing one costs time and energy inside the measured fit (about 0.4 s for a 4x2000 MLP's
    109 MB of weights here, more with optimiser state), hence not after every epoch of a long run."""

    def __init__(self, keeping: Checkpointing | None, fit: FitState) -> None:
        self.keeping, self.fit = keeping, fit
        self.last_save = time.perf_counter()

    def write(self, state: CheckpointState, t0: float) -> None:
        """Write ``state`` with the totals up to now (``t0``: when the writing began)."""
        fit, keeping = self.fit, self.keeping
        fit.checkpoints += 1
        state.train_time_s = fit.elapsed()
        state.pieces, state.checkpoints = fit.pieces, fit.checkpoints
        state.checkpoint_time_s = fit.checkpoint_time_s + time.perf_counter() - t0
        state.measured = keeping.measured.so_far() if keeping.measured is not None else None
        keeping.checkpoint.save(state, epoch=len(state.history))
        self.last_save = time.perf_counter()
        fit.checkpoint_time_s += self.last_save - t0

    def after_epoch(self, run: StageRun) -> None:
        t0 = time.perf_counter()
        if self.keeping is None or t0 - self.last_save < self.keeping.every_s:
            return
        self.write(run.state(self.fit, self.fit.algo.state_dict()), t0)


class StopSignal:
    """A stop signal (:data:`STOP`) during a fit that keeps checkpoints: an epoch still short
    is finished and its end written; a long one is abandoned at a batch boundary and the state
    it started from (kept in memory at its start) is written. Either way :class:`Stopped`."""

    def __init__(self, checkpoints: Checkpoints) -> None:
        self.checkpoints, self.fit = checkpoints, checkpoints.fit
        self.snapshot: CheckpointState | None = None  # the running epoch's start
        self.last_epoch_s: float | None = None  # this piece's last epoch, once one ran
        if checkpoints.keeping is not None:
            self.fit.batches.abandon = lambda: STOP.requested and self.snapshot is not None

    def before_epoch(self, run: StageRun) -> None:
        """Keep (copied) the state the epoch starts from, for a piece's first epoch and after
        an epoch of ``FINISH_EPOCH_S`` or more; after shorter ones the copy would cost more
        than finishing the epoch does."""
        self.snapshot = None
        if self.checkpoints.keeping is None or not STOP.armed:
            return
        if self.last_epoch_s is not None and self.last_epoch_s < FINISH_EPOCH_S:
            return
        t0 = time.perf_counter()
        weights = copy.deepcopy(self.fit.algo.state_dict())
        self.snapshot = run.state(self.fit, weights)
        self.fit.checkpoint_time_s += time.perf_counter() - t0  # keeping state, as writing it is

    def abandon(self, abandoned_s: float):
        self.stop(self.snapshot, abandoned_s)

    def after_epoch(self, run: StageRun, record: EpochRecord) -> None:
        self.snapshot, self.last_epoch_s = None, record.epoch_time_s
        if STOP.requested:  # the epoch finished: write where it ended, raise Stopped
            self.stop(run.state(self.fit, self.fit.algo.state_dict()))

    def stop(self, state: CheckpointState, abandoned_s: float | None = None):
        """Write ``state`` (the epoch's end, or the start of the ``abandoned_s`` seconds of an
        abandoned one) and raise :class:`Stopped`."""
        t0 = time.perf_counter()
        state.extra = {**state.extra, "stopped_by": STOP.signal, "abandoned_epoch_s": abandoned_s}
        self.checkpoints.write(state, t0)
        fit = self.fit
        epochs = len(state.history)
        piece = ((state.measured or {}).get("summary") or [{}])[-1]
        energy = piece.get("energy_j")
        spent = f"{piece.get('time_s', fit.elapsed() - fit.time_before):.1f} s" + (
            f", {energy:.1f} J ({piece.get('energy_source')})" if energy is not None else ""
        )
        how = (
            f"epoch {epochs + 1} abandoned after {abandoned_s:.1f} s"
            if abandoned_s is not None
            else "at an epoch's end"
        )
        after = time.perf_counter() - (STOP.at if STOP.at is not None else t0)
        raise Stopped(
            STOP.signal or "stop",
            epochs,
            f"{STOP.signal}: checkpoint written after epoch {epochs} ({how}; {after:.1f} s after the signal); "
            f"this piece: {spent}; the same command resumes (exit {STOPPED_EXIT_CODE})",
        )


# how a run shows its progress (environment variable BPFREE_PROGRESS): auto (a bar on a
# terminal, a line per epoch elsewhere), bar, lines, or off
PROGRESS_MODES = ("auto", "bar", "lines", "off")


def progress_mode() -> str:
    mode = os.environ.get("BPFREE_PROGRESS", "auto").strip().lower() or "auto"
    if mode not in PROGRESS_MODES:
        raise BpfreeError(f"BPFREE_PROGRESS is {mode!r}; valid: {', '.join(PROGRESS_MODES)}")
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    return mode


class Progress:
    """A live bar (tqdm) on a terminal; elsewhere (a job's log) one line per epoch on stderr:
    stage, epoch n of its budget, losses, validation accuracy, elapsed time and the stage's
    ETA at its budget (early stopping may end it sooner). ``BPFREE_PROGRESS`` chooses
    (:func:`progress_mode`)."""

    def __init__(self, name: str, enabled: bool = True) -> None:
        self.name = name
        self.mode = progress_mode() if enabled else "off"
        self.enabled = self.mode != "off"
        self.bar = None

    @contextmanager
    def stage(self, run: StageRun) -> Iterator[None]:
        self.started, self.done_before = time.perf_counter(), run.epochs
        if self.mode == "bar":
            self.bar = _bar(run.budget, f"{self.name} {run.stage.name}")
        try:
            if self.bar is not None:
                self.bar.update(run.epochs)
            yield
        finally:
            if self.bar is not None:
                self.bar.close()
            self.bar = None

    def after_epoch(self, run: StageRun, record: EpochRecord, elapsed_s: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record.train_loss:.4f}", val_acc=f"{record.val_accuracy:.4f}")
            return
        done = run.epochs - self.done_before
        per_epoch = (time.perf_counter() - self.started) / max(done, 1)
        eta = per_epoch * (run.budget - run.epochs)
        print(
            f"bpfree: {self.name} {run.stage.name} epoch {run.epochs}/{run.budget} "
            f"train_loss {record.train_loss:.4f} val_loss {record.val_loss:.4f} "
            f"val_acc {record.val_accuracy:.4f} elapsed {_clock(elapsed_s)} eta<= {_clock(eta)}",
            file=sys.stderr,
            flush=True,
        )


def _clock(seconds: float) -> str:
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _bar(total: int, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # a bare cluster environment (site torch, no tqdm): no bar
        return None
    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


class Profiler:
    """torch.profiler around one epoch (:class:`Profiling`), its trace saved."""

    def __init__(self, profiling: Profiling | None, algo: Algorithm) -> None:
        self.profiling, self.algo = profiling, algo
        self.trace: Path | None = None

    def start(self, epoch: int):
        if self.profiling is None or self.profiling.epoch != epoch:
            return None
        from torch.profiler import ProfilerActivity, profile  # here: only a profiled run pays for it

        activities = [ProfilerActivity.CPU]
        if self.algo.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        profiler = profile(activities=activities, record_shapes=True, with_flops=True)
        profiler.start()
        return profiler

    def finish(self, profiler, epoch: int, record: EpochRecord) -> None:
        profiler.stop()
        path = Path(self.profiling.out) / f"profile_epoch{epoch}.json"
        profiler.export_chrome_trace(str(path))
        self.trace = path
        record.extra["profiled"] = True


@dataclass
class Handlers:
    """A fit's handlers besides a stage's own (stopping, selections)."""

    measure: EpochMeasure
    checkpoints: Checkpoints
    stop: StopSignal
    progress: Progress
    profiler: Profiler
    on_epoch_end: Callable[[EpochRecord], None] | None = None


# -- the fit ----------------------------------------------------------------------------------------
def fit(
    algo: Algorithm,
    data: DataSplits,
    policy: EarlyStopping,
    *,
    seed: int,
    meter: Meter | None = None,
    checkpointing: Checkpointing | None = None,
    resume: CheckpointState | None = None,
    on_epoch_end: Callable[[EpochRecord], None] | None = None,
    profiling: Profiling | None = None,
    progress: bool = False,
) -> FitResult:
    """Train ``algo`` stage by stage. ``on_epoch_end(record)`` may add to ``record.extra``.

    ``meter`` (bpfree.measure.Meter): each epoch is measured in its own window
    (:func:`bpfree.measure.epoch_window`), and its energy goes into its record's ``extra``
    before ``on_epoch_end`` sees it. The window around the whole fit is its caller's
    (:func:`bpfree.engine.run.measure_run` opens and closes it).

    ``resume``: a killed run's state (its checkpoint, read once by the caller); the fit goes
    on from it and ends as the uninterrupted run would (same batches, same weights, the same
    stopping epochs and selected weights). ``checkpointing``: where and how often the fit
    keeps its state. ``profiling``: one epoch under torch.profiler, its trace saved.
    ``progress``: a bar or a line per epoch (:class:`Progress`): a run's, not a tuning trial's."""
    batches = TimedBatches(data.train, seed=seed, augment=data.info.augment, drop_last=algo.drop_last)
    state = FitState(algo, data, policy, batches, resume)
    checkpoints = Checkpoints(checkpointing, state)
    handlers = Handlers(
        EpochMeasure(meter),
        checkpoints,
        StopSignal(checkpoints),
        Progress(algo.name, enabled=progress),
        Profiler(profiling, algo),
        on_epoch_end,
    )
    stages = algo.stages()
    report = selections_reported(stages)
    status: Literal["ok", "diverged"] = "ok"
    restored_epoch: int | None = None
    chosen: dict[str, Chosen] = {}
    for index, stage in enumerate(stages):
        budget = stage_budget(stage, policy)
        if resume is not None and index < resume.stage_index:
            # done before the kill: its weights come with the checkpoint; replay its
            # begin/end so that what end_stage does (freezing) holds again
            algo.begin_stage(stage, budget)
            algo.end_stage(stage)
            continue
        run = StageRun(stage, index, budget, StageStopping(stage, policy), Selections(stage, policy, report))
        stage_resume = resume if resume is not None and index == resume.stage_index else None
        ok = _fit_stage(state, run, handlers, stage_resume)
        if not ok:
            status = "diverged"
            break
        restored = run.selections.restored
        restored_epoch = (
            restored.epoch if restored is not None else (state.history[-1].epoch if state.history else None)
        )
        if report:
            chosen = _chosen(run, state, algo)
        if restored is not None:
            algo.net.load_state_dict(restored.weights)
        algo.end_stage(stage)
    return FitResult(
        status,
        state.history,
        state.elapsed(),
        state.pieces,
        checkpoints=state.checkpoints,
        checkpoint_time_s=state.checkpoint_time_s,
        time_split=state.time_split(),
        profile_trace=handlers.profiler.trace,
        restored_epoch=restored_epoch if status == "ok" else None,
        chosen=chosen if status == "ok" else {},
    )


def _chosen(run: StageRun, state: FitState, algo: Algorithm) -> dict[str, Chosen]:
    """The last epoch's weights (copied before any restore) and each reported rule's best."""
    chosen = {"last": Chosen(state.history[-1].epoch, copy.deepcopy(algo.net.state_dict()))}
    for name in SELECTION_RULES:
        selection = run.selections.kept[name]
        if selection.weights is not None:
            chosen[name] = Chosen(selection.epoch, selection.weights)
    return chosen


def _fit_stage(state: FitState, run: StageRun, handlers: Handlers, resume: CheckpointState | None) -> bool:
    """Run one stage's epochs until its stopping is done or its budget spent; False if the
    fit diverged (a loss that is not finite)."""
    algo = state.algo
    algo.begin_stage(run.stage, run.budget)
    if resume is not None:
        algo.load_state_dict(resume.algorithm)
        state.batches.load_state_dict(resume.batches)
        set_rng_state(resume.rng, algo.device)
        run.stopping.load_state_dict(resume.handlers["stopping"], algo)
        run.selections.load_state_dict(resume.handlers["selections"])
        run.epochs = resume.stage_epochs
    with handlers.progress.stage(run):
        while run.epochs < run.budget and not run.stopping.done:
            handlers.stop.before_epoch(run)
            record, evaluation = _epoch(state, run, handlers)
            if handlers.on_epoch_end is not None:
                handlers.on_epoch_end(record)
            state.history.append(record)
            run.epochs += 1
            handlers.progress.after_epoch(run, record, state.elapsed())
            if not math.isfinite(record.train_loss) or not math.isfinite(record.val_loss):
                return False
            run.stopping.after_epoch(algo, evaluation, record.epoch)
            run.selections.after_epoch(algo, evaluation, record.epoch)  # copies: in time_split's other
            record.extra.update(run.stopping.describe())
            handlers.checkpoints.after_epoch(run)
            handlers.stop.after_epoch(run, record)
    return True


def _epoch(state: FitState, run: StageRun, handlers: Handlers) -> tuple[EpochRecord, Evaluation]:
    """One epoch inside its measurement window: train, then evaluate on the validation split."""
    algo, epoch = state.algo, len(state.history) + 1
    t_meter = time.perf_counter()
    with handlers.measure.around(epoch):
        profiler = handlers.profiler.start(epoch)
        t0 = time.perf_counter()
        try:
            train_loss = algo.train_epoch(run.stage, state.batches)
        except _AbandonEpoch:  # a stop signal: write the epoch's start, raise Stopped
            if profiler is not None:
                profiler.stop()
            handlers.stop.abandon(time.perf_counter() - t0)
        t1 = time.perf_counter()
        evaluation = algo.evaluate(run.stage, state.data.val)
        t2 = time.perf_counter()
    record = EpochRecord(epoch, run.stage.name, train_loss, evaluation.loss, evaluation.accuracy, t2 - t0)
    handlers.measure.fill(record)
    if profiler is not None:
        handlers.profiler.finish(profiler, epoch, record)
    t3 = time.perf_counter()
    state.times.compute_s += t1 - t0
    state.times.eval_s += t2 - t1
    state.times.measurement_s += (t0 - t_meter) + (t3 - t2)
    return record, evaluation
