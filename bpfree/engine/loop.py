"""The training loop: stages, early stopping, restoring the best weights, divergence.

Plain PyTorch around the algorithm's own ``train_epoch``/``evaluate``; the loop owns the
epoch bookkeeping and nothing else."""

from __future__ import annotations

import copy
import math
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bpfree.algorithms.base import Algorithm, Stage
from bpfree.core.spec import EarlyStopping
from bpfree.data import Batches, DataSplits
from bpfree.engine.checkpoint import Checkpoint, CheckpointState, StopperState, rng_state, set_rng_state
from bpfree.measure.meter import epoch_window

if TYPE_CHECKING:
    from bpfree.measure import Meter, WindowResult


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


# ``bpfree train`` exits with this code when SIGTERM or SIGINT stopped it after writing its
# checkpoint: EX_TEMPFAIL ("temporary failure, try again"; docs/cluster.md says who retries)
STOPPED_EXIT_CODE = 75


# after an epoch this long or longer (and for a piece's first epoch) the state the next epoch
# starts from is kept in memory (_FitState.keep_snapshot), so that a stop signal abandons that
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

    def __init__(self, split, *, seed: int, augment: bool = False) -> None:
        super().__init__(split, seed=seed, augment=augment)
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


@dataclass
class FitResult:
    status: Literal["ok", "diverged"]
    history: list[EpochRecord]
    train_time_s: float
    measurement: WindowResult | None = None  # the FIT window (bpfree.engine.run.measured), when measured
    pieces: int = 1  # processes the fit ran in (more than 1: resumed from a checkpoint)
    pieces_measured: tuple[dict[str, Any], ...] = ()  # per piece, when a resumed run was measured
    checkpoints: int = 0  # written over all pieces
    checkpoint_time_s: float = 0.0  # spent writing them (inside train_time_s and the fit window)
    time_split: TimeSplit | None = None
    profile_trace: Path | None = None  # torch.profiler's trace of Profiling.epoch, when asked for

    @property
    def epochs(self) -> int:
        return len(self.history)


def _progress(total: int, desc: str):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # a bare cluster environment (site torch, no tqdm): no bar
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="epoch", leave=False, disable=None)


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass


@dataclass
class Checkpointing:
    """How a fit keeps its state: ``checkpoint`` is written after an epoch once ``every_s``
    seconds have passed since the last one (0: after every epoch); ``measured()`` gives what
    the meter saw so far, kept in each checkpoint so that a resumed run's energy adds up."""

    checkpoint: Checkpoint
    every_s: float = 0.0
    measured: Callable[[], dict[str, Any]] | None = None


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
) -> FitResult:
    """Train ``algo`` stage by stage. ``on_epoch_end(record)`` may add to ``record.extra``.

    ``meter`` (bpfree.measure.Meter): each epoch is measured in its own window
    (:func:`bpfree.measure.epoch_window`), and its energy goes into its record's ``extra``
    before ``on_epoch_end`` sees it. The window around the whole fit is its caller's
    (:func:`bpfree.engine.run.measured` opens and closes it).

    ``resume``: a killed run's state (its checkpoint, read once by the caller); the fit goes
    on from it and ends as the uninterrupted run would (same batches, same weights).
    ``checkpointing``: where and how often the fit keeps its state.

    ``profiling``: one epoch under torch.profiler, its trace saved (see :class:`Profiling`)."""
    run = _FitState(
        algo,
        data,
        policy,
        TimedBatches(data.train, seed=seed, augment=data.info.augment),
        meter,
        checkpointing,
        on_epoch_end,
        resume,
    )
    run.profiling = profiling
    if checkpointing is not None:  # a stop signal abandons an epoch whose start is kept
        run.batches.abandon = lambda: STOP.requested and run.snapshot is not None
    status: Literal["ok", "diverged"] = "ok"
    for index, stage in enumerate(algo.stages()):
        max_epochs = min(stage.max_epochs or policy.max_epochs, policy.max_epochs)
        if resume is not None and index < resume.stage_index:
            # done before the kill: its weights come with the checkpoint; replay its
            # begin/end so that what end_stage does (freezing) holds again
            algo.begin_stage(stage, max_epochs)
            algo.end_stage(stage)
            continue
        stage_resume = resume if resume is not None and index == resume.stage_index else None
        if not _fit_stage(run, stage, index, max_epochs, stage_resume):
            status = "diverged"
            break
    return FitResult(
        status,
        run.history,
        run.elapsed(),
        None,
        run.pieces,
        checkpoints=run.checkpoints,
        checkpoint_time_s=run.checkpoint_time_s,
        time_split=run.time_split(),
        profile_trace=run.profile_trace,
    )


@dataclass
class FitSession:
    """What a fit is given by the block around it (:func:`bpfree.engine.run.train_configuration`'s
    ``around_fit``): a meter for its epoch windows, its checkpointing and the state it resumes
    from, a profiler's epoch; and the fit's result, set once it has run, for the block's end."""

    meter: Meter | None = None
    checkpointing: Checkpointing | None = None
    resume: CheckpointState | None = None
    profiling: Profiling | None = None
    result: FitResult | None = None


class _FitState:
    """What a fit carries from epoch to epoch, and what its checkpoint holds."""

    def __init__(self, algo, data, policy, batches, meter, checkpointing, on_epoch_end, resume) -> None:
        self.algo, self.data, self.policy, self.batches = algo, data, policy, batches
        self.meter, self.checkpointing, self.on_epoch_end = meter, checkpointing, on_epoch_end
        self.history: list[EpochRecord] = []
        self.time_before = 0.0  # training time of the pieces before a kill
        self.pieces = 1
        self.checkpoints, self.checkpoint_time_s = 0, 0.0  # written, and the time writing took
        self.times = TimeSplit()  # of this piece (a checkpoint does not keep it)
        self.profiling: Profiling | None = None
        self.profile_trace: Path | None = None
        if resume is not None:
            self.history = [EpochRecord(**row) for row in resume.history]
            self.time_before = resume.train_time_s
            self.pieces = resume.pieces + 1
            self.checkpoints = resume.checkpoints
            self.checkpoint_time_s = resume.checkpoint_time_s
            self.times.covers = f"last of {self.pieces} pieces"
        self.checkpoint_time_before = self.checkpoint_time_s
        self.start = self.last_save = time.perf_counter()
        self.snapshot: CheckpointState | None = None  # the running epoch's start (keep_snapshot)
        self.last_epoch_s: float | None = None  # this piece's last epoch, once one ran

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

    def start_profile(self, epoch: int):
        if self.profiling is None or self.profiling.epoch != epoch:
            return None
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CPU]
        if self.algo.device.type == "cuda":
            activities.append(ProfilerActivity.CUDA)
        profiler = profile(activities=activities, record_shapes=True, with_flops=True)
        profiler.start()
        return profiler

    def finish_profile(self, profiler, epoch: int) -> None:
        profiler.stop()
        path = Path(self.profiling.out) / f"profile_epoch{epoch}.json"
        profiler.export_chrome_trace(str(path))
        self.profile_trace = path

    def elapsed(self) -> float:
        return self.time_before + time.perf_counter() - self.start

    def state(
        self, stage_index: int, stage_epochs: int, stopper: EarlyStopper, best_state, algorithm
    ) -> CheckpointState:
        """Where the fit stands now (``algorithm``: its state dict, copied or not); the totals
        are filled in when it is written (:meth:`write`)."""
        return CheckpointState(
            stage_index=stage_index,
            stage_epochs=stage_epochs,
            stopper=StopperState(stopper.best, stopper.best_epoch, stopper.bad_epochs),
            best_state=best_state,
            algorithm=algorithm,
            batches=self.batches.state_dict(),
            rng=rng_state(self.algo.device),
            history=[asdict(r) for r in self.history],
            train_time_s=0.0,
            pieces=self.pieces,
            checkpoints=0,
            checkpoint_time_s=0.0,
        )

    def write(self, state: CheckpointState, t0: float) -> None:
        """Write ``state`` with the totals up to now (``t0``: when the writing began)."""
        keeping = self.checkpointing
        self.checkpoints += 1
        state.train_time_s = self.elapsed()
        state.pieces, state.checkpoints = self.pieces, self.checkpoints
        state.checkpoint_time_s = self.checkpoint_time_s + time.perf_counter() - t0
        state.measured = keeping.measured() if keeping.measured is not None else None
        keeping.checkpoint.save(state, epoch=len(state.history))
        self.last_save = time.perf_counter()
        self.checkpoint_time_s += self.last_save - t0

    def save(self, stage_index: int, stage_epochs: int, stopper: EarlyStopper, best_state) -> None:
        """A checkpoint, if ``every_s`` have passed since the last one. Writing one costs time
        and energy inside the measured fit (about 0.4 s for a 4x2000 MLP's 109 MB of weights
        here, more with optimiser state), hence not after every epoch of a long run."""
        keeping = self.checkpointing
        t0 = time.perf_counter()
        if keeping is None or t0 - self.last_save < keeping.every_s:
            return
        self.write(self.state(stage_index, stage_epochs, stopper, best_state, self.algo.state_dict()), t0)

    def keep_snapshot(self, stage_index: int, stage_epochs: int, stopper: EarlyStopper, best_state) -> None:
        """At an epoch's start, while a stop signal is armed: keep (in memory, copied) the state
        the epoch starts from, so that a signal during the epoch can abandon it and write that
        state. Kept for a piece's first epoch and after an epoch of ``FINISH_EPOCH_S`` or more;
        after shorter ones the copy would cost more than finishing the epoch does."""
        self.snapshot = None
        if self.checkpointing is None or not STOP.armed:
            return
        if self.last_epoch_s is not None and self.last_epoch_s < FINISH_EPOCH_S:
            return
        t0 = time.perf_counter()
        weights = copy.deepcopy(self.algo.state_dict())
        self.snapshot = self.state(stage_index, stage_epochs, stopper, best_state, weights)
        self.checkpoint_time_s += time.perf_counter() - t0  # keeping state, as writing it is

    def stop(self, state: CheckpointState, abandoned_s: float | None = None):
        """Write ``state`` (the epoch's end, or the start of the ``abandoned_s`` seconds of an
        abandoned one) and raise :class:`Stopped`."""
        t0 = time.perf_counter()
        state.extra = {**state.extra, "stopped_by": STOP.signal, "abandoned_epoch_s": abandoned_s}
        self.write(state, t0)
        epochs = len(state.history)
        piece = ((state.measured or {}).get("summary") or [{}])[-1]
        energy = piece.get("energy_j")
        spent = f"{piece.get('time_s', self.elapsed() - self.time_before):.1f} s" + (
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


def _epoch_energy(meter: Meter, window: WindowResult) -> dict[str, Any]:
    energy = window.of(meter.primary_domain)
    return {"energy_j": energy.joules, "energy_source": energy.source, "net_energy_j": energy.net_joules}


def _fit_stage(run: _FitState, stage: Stage, index: int, max_epochs: int, resume: CheckpointState | None) -> bool:
    algo, policy, meter = run.algo, run.policy, run.meter
    stopper = EarlyStopper(policy)
    best_state = None
    stage_epochs = 0
    algo.begin_stage(stage, max_epochs)
    if resume is not None:
        algo.load_state_dict(resume.algorithm)
        run.batches.load_state_dict(resume.batches)
        set_rng_state(resume.rng, algo.device)
        stopper.best, stopper.best_epoch, stopper.bad_epochs = (
            resume.stopper.best,
            resume.stopper.best_epoch,
            resume.stopper.bad_epochs,
        )
        best_state, stage_epochs = resume.best_state, resume.stage_epochs
    history = run.history
    with _progress(max_epochs, f"{algo.name} {stage.name}") as bar:
        bar.update(stage_epochs)
        while stage_epochs < max_epochs and not (stage.early_stopping and stopper.should_stop):
            epoch = len(history) + 1
            run.keep_snapshot(index, stage_epochs, stopper, best_state)
            t_meter = time.perf_counter()
            # the epoch's window, opened and closed here (discarded when the epoch raises)
            with meter.window(epoch_window(epoch)) if meter is not None else nullcontext() as window:
                profiler = run.start_profile(epoch)
                t0 = time.perf_counter()
                try:
                    train_loss = algo.train_epoch(stage, run.batches)
                except _AbandonEpoch:  # a stop signal: write the epoch's start, raise Stopped
                    if profiler is not None:
                        profiler.stop()
                    run.stop(run.snapshot, abandoned_s=time.perf_counter() - t0)
                t1 = time.perf_counter()
                val = algo.evaluate(stage, run.data.val)
                t2 = time.perf_counter()
            record = EpochRecord(epoch, stage.name, train_loss, val.loss, val.accuracy, t2 - t0)
            if window is not None:
                record.extra.update(_epoch_energy(meter, window.result))
            if profiler is not None:
                run.finish_profile(profiler, epoch)
                record.extra["profiled"] = True
            t3 = time.perf_counter()
            run.times.compute_s += t1 - t0
            run.times.eval_s += t2 - t1
            run.times.measurement_s += (t0 - t_meter) + (t3 - t2)
            if run.on_epoch_end is not None:
                run.on_epoch_end(record)
            history.append(record)
            stage_epochs += 1
            bar.update(1)
            bar.set_postfix(loss=f"{train_loss:.4f}", val_acc=f"{val.accuracy:.4f}")
            if not math.isfinite(train_loss) or not math.isfinite(val.loss):
                return False
            if stage.early_stopping:
                monitored = val.loss if policy.monitor == "val_loss" else val.accuracy
                if stopper.update(monitored, record.epoch) and policy.restore_best and stage.restore_best:
                    best_state = copy.deepcopy(algo.net.state_dict())
            run.save(index, stage_epochs, stopper, best_state)
            run.snapshot, run.last_epoch_s = None, record.epoch_time_s
            if STOP.requested:  # the epoch finished: write where it ended, raise Stopped
                run.stop(run.state(index, stage_epochs, stopper, best_state, algo.state_dict()))
    if best_state is not None:
        algo.net.load_state_dict(best_state)
    algo.end_stage(stage)
    return True
