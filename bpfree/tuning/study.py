"""Hyperparameter tuning with Optuna, as the paper did: TPE (seed 42) maximising validation
accuracy, a median pruner on the per-epoch validation accuracy, the paper's search spaces.

One study per algorithm x dataset x architecture lives in a journal file
(``JournalStorage`` + ``JournalFileBackend``): every ask, report and tell is appended under a
file lock, so a killed job resumes where it stopped and several workers (SLURM jobs) can share
one study. The study's size is counted in COMPLETE trials: pruned and failed ones do not count,
across restarts and workers alike.

    space = search_space("bp", overrides)             # the paper's, overridden by the config
    result = tune(TuneJob(...))                       # ask -> fit -> tell until N complete
    write_best_params("best_params.yaml", result)     # what ``bpfree train --params`` reads

A trial never kills the study: divergence (NaN loss) is recorded PRUNED, an exception (out of
memory included) FAIL, each with its reason in the trial's ``reason`` user attribute.

Every trial is accounted for, pruned and failed ones included: its epochs, wall time and
energy (a bpfree.measure Meter window around it, with the energy's source) are user
attributes in the journal, and after each trial the worker rewrites the study's trial table,
``STUDY.trials.csv`` beside the journal (:mod:`bpfree.report.cost` reads it into the cost table).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import psutil
import torch
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from bpfree import __version__
from bpfree.algorithms import build_algorithm, check_trainable, params_from_mapping
from bpfree.core.errors import BpfreeError, is_out_of_memory
from bpfree.core.io import write_bytes_atomic, write_failed, write_text_atomic, write_yaml_atomic
from bpfree.core.registry import ALGORITHMS, DATASETS
from bpfree.core.spec import EarlyStopping, Machine, Measurement, Settings, Tuning
from bpfree.data import load_splits
from bpfree.engine.loop import fit, resolve_device, seed_everything
from bpfree.engine.precision import check_precision, precision_context
from bpfree.measure import Meter
from bpfree.models import ArchSpec, parse_arch

OBJECTIVE = "val_accuracy"  # the final model's accuracy on the validation split, maximised
MAX_CONSECUTIVE_FAILURES = 5  # a study whose every trial raises has a bug, not bad luck
WAIT_POLL_S = 2.0  # how often a worker looks again while others finish the last trials


# -- search spaces --------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchSpace:
    """What Optuna samples (``distributions``) and what every trial fixes (``fixed``), by the
    names of the algorithm's Params fields; everything else keeps the Params default."""

    algorithm: str
    distributions: dict[str, BaseDistribution]
    fixed: dict[str, Any] = field(default_factory=dict)

    def params(self, sampled: Mapping[str, Any]) -> dict[str, Any]:
        return {**self.fixed, **sampled}

    def describe(self) -> dict[str, Any]:
        """The space in the YAML entry format it was written in."""
        entries: dict[str, Any] = dict(self.fixed)
        for name, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                entries[name] = {"type": "categorical", "choices": list(dist.choices)}
                continue
            kind = "int" if isinstance(dist, IntDistribution) else "float"
            entries[name] = {"type": kind, "low": dist.low, "high": dist.high, "log": dist.log}
            if dist.step not in (None, 1) or (kind == "float" and dist.step is not None):
                entries[name]["step"] = dist.step
        return entries


def default_search_spaces() -> dict[str, dict[str, Any]]:
    """The paper's spaces, shipped as ``bpfree/tuning/search_spaces.yaml``."""
    text = resources.files("bpfree.tuning").joinpath("search_spaces.yaml").read_text()
    return yaml.safe_load(text)


def search_space(algorithm: str, overrides: Mapping[str, Any] | None = None) -> SearchSpace:
    """The paper's space for ``algorithm`` with the config's ``tuning.search_spaces``
    overrides applied parameter by parameter; every name is checked against the Params."""
    defaults = default_search_spaces()
    overrides = dict(overrides or {})
    known = set(defaults) | set(ALGORITHMS.names())
    unknown = sorted(map(str, set(overrides) - known))  # YAML keys need not be strings
    if unknown:
        raise BpfreeError(
            f"tuning.search_spaces names unknown algorithm(s) {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(sorted(known))}"
        )
    klass = ALGORITHMS.get(algorithm)
    own = overrides.get(algorithm) or {}
    if not isinstance(own, Mapping):
        raise BpfreeError(f"tuning.search_spaces.{algorithm} must map parameter names to entries")
    # a plugin's algorithm may bring its own space (a class attribute ``search_space``)
    entries = {**(defaults.get(algorithm) or getattr(klass, "search_space", None) or {}), **own}
    if not entries:
        raise BpfreeError(
            f"no search space for algorithm {algorithm!r}; give one under "
            f"tuning.search_spaces.{algorithm} in the config"
        )
    fields = [f.name for f in dataclasses.fields(klass.Params)]
    distributions, fixed = {}, {}
    for name, entry in entries.items():
        where = f"search space of {algorithm}"
        if name not in fields:
            raise BpfreeError(f"{where}: unknown parameter {name!r}; valid: {', '.join(fields)}")
        if isinstance(entry, Mapping):
            distributions[name] = _distribution(f"{where}, {name}", entry)
        else:
            fixed[name] = entry
    space = SearchSpace(algorithm, distributions, fixed)
    _check_values(space)
    return space


_ENTRY_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


def _distribution(where: str, entry: Mapping[str, Any]) -> BaseDistribution:
    kind = entry.get("type")
    if kind not in _ENTRY_KEYS:
        raise BpfreeError(f"{where}: type must be one of float, int, categorical, got {kind!r}")
    unknown = sorted(map(str, set(entry) - _ENTRY_KEYS[kind]))
    if unknown:
        raise BpfreeError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid for {kind}: {', '.join(sorted(_ENTRY_KEYS[kind]))}"
        )
    try:
        if kind == "categorical":
            choices = entry.get("choices")
            if not isinstance(choices, list) or not choices:
                raise BpfreeError(f"{where}: choices must be a non-empty list")
            return CategoricalDistribution(choices)
        if "low" not in entry or "high" not in entry:
            raise BpfreeError(f"{where}: a {kind} entry needs low and high")
        number = _finite_float if kind == "float" else _strict_int
        low, high = number(entry["low"]), number(entry["high"])
        log = entry.get("log", False)
        if not isinstance(log, bool):
            raise BpfreeError(f"{where}: log must be true or false, got {log!r}")
        if kind == "float":
            step = entry.get("step")
            step = None if step is None else _finite_float(step)
            return FloatDistribution(low, high, log=log, step=step)
        return IntDistribution(low, high, log=log, step=_strict_int(entry.get("step", 1)))
    except (TypeError, ValueError) as err:  # Optuna's own checks: low <= high, log needs low > 0
        raise BpfreeError(f"{where}: {err}") from None


def _finite_float(value: Any) -> float:
    try:
        number = float(value)  # a string too: YAML 1.1 reads 1e-5 as one
    except OverflowError:
        number = math.inf
    if isinstance(value, bool) or not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _strict_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _check_values(space: SearchSpace) -> None:
    """Every value the space can produce must be a valid Params value: try the bounds and
    every choice, so a float range for an int parameter fails now, not in trial 37."""
    for name, dist in space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            candidates = list(dist.choices)
        else:
            candidates = [dist.low, dist.high]
        for value in candidates:
            try:
                params_from_mapping(space.algorithm, space.params({name: value}))
            except BpfreeError as err:
                raise BpfreeError(f"search space of {space.algorithm}: {err}") from None
    try:
        params_from_mapping(space.algorithm, space.fixed)
    except BpfreeError as err:
        raise BpfreeError(f"search space of {space.algorithm}: {err}") from None


# -- one tuning job ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TuneJob:
    algorithm: str
    dataset: str
    n_trials: int  # COMPLETE trials the study must hold when the job ends
    storage: Path  # the journal file
    settings: Tuning = field(default_factory=Tuning)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    arch: ArchSpec | None = None  # None: the algorithm's default
    study_name: str | None = None  # None: "{algorithm}-{dataset}-{arch}"
    machine: Machine = Machine()  # device and data root (threads are set by the caller)
    precision: str = Settings().precision  # as the runs train: a trial in fp32 would tune another model
    measurement: Measurement = Measurement()  # the meter around each trial (no idle baseline, no CodeCarbon)
    trials_csv: Path | None = None  # None: beside the journal, STUDY.trials.csv (trials_csv_path)


@dataclass(frozen=True)
class StudyCounts:
    complete: int
    pruned: int
    failed: int
    running: int

    @classmethod
    def of(cls, study: optuna.Study) -> StudyCounts:
        states = [t.state for t in study.get_trials(deepcopy=False)]
        return cls(
            states.count(TrialState.COMPLETE),
            states.count(TrialState.PRUNED),
            states.count(TrialState.FAIL),
            states.count(TrialState.RUNNING),
        )


@dataclass(frozen=True)
class TuneResult:
    job: TuneJob
    arch: ArchSpec
    study_name: str
    space: SearchSpace
    best: FrozenTrial
    best_params: dict[str, Any]  # the full Params of the best trial, fixed values included
    counts: StudyCounts
    trials_run: int  # by this worker
    elapsed_s: float
    journal_set_aside: Path | None = None  # a damaged journal's copy (see repair_journal)
    trials_csv: Path | None = None  # the study's trial table (every trial's epochs, time, energy)


@dataclass(frozen=True)
class TrialOutcome:
    state: TrialState
    value: float | None
    reason: str  # "" when complete
    epochs: int
    train_time_s: float
    time_s: float | None = None  # the trial's measured window: building, fitting, validating
    energy_j: float | None = None  # the computing device's energy over that window
    energy_source: str | None = None  # nvml-counter, rapl, estimate... (never an estimate called measured)


def trials_csv_path(storage: str | Path) -> Path:
    """The study's trial table beside its journal: ``study.journal`` -> ``study.trials.csv``."""
    storage = Path(storage)
    return storage.with_name(f"{storage.stem}.trials.csv")


def tune(job: TuneJob, *, progress: bool | None = None) -> TuneResult:
    """Run trials until the study holds ``job.n_trials`` COMPLETE ones (or the timeout).
    Safe to run again after a kill, and in several processes at once on one journal."""
    if job.n_trials < 1:
        raise BpfreeError(f"--n-trials must be >= 1, got {job.n_trials}")
    klass = ALGORITHMS.get(job.algorithm)
    DATASETS.get(job.dataset)
    arch = job.arch or parse_arch(klass.default_arch)
    check_trainable(job.algorithm, arch)
    space = search_space(job.algorithm, job.settings.search_spaces)
    device = resolve_device(job.machine.device)
    check_precision(job.precision, device)
    policy = job.early_stopping
    if job.settings.max_epochs is not None:
        policy = policy.replace(max_epochs=job.settings.max_epochs)
    study_name = job.study_name or f"{job.algorithm}-{job.dataset}-{arch}"
    set_aside = repair_journal(job.storage)
    budget = None
    if job.settings.pruner == "hyperband":
        from bpfree.report.cost import worst_case_epochs

        # hyperband's largest resource: the most epochs a trial can train, every stage counted
        budget = worst_case_epochs(job.algorithm, arch, job.dataset, space, policy.max_epochs)
    study = open_study(job.storage, study_name, job.settings, max_resource=budget)
    _check_identity(study, job, arch, space, policy)
    table = job.trials_csv or trials_csv_path(job.storage)

    start = time.perf_counter()
    # read before any trial is asked for, so a missing dataset leaves no trial RUNNING
    data = load_splits(job.dataset, root=job.machine.data_root, seed=job.settings.seed, device=device)
    trials_run = consecutive_failures = 0
    disable = None if progress is None else not progress  # None: a bar only on a terminal
    meter = Meter.for_device(device, job.measurement)
    with meter, tqdm(total=job.n_trials, desc=f"tune {job.algorithm}", unit="trial", disable=disable) as bar:
        while job.settings.timeout is None or time.perf_counter() - start < job.settings.timeout:
            trial, counts = _next_trial(study, job, space)
            bar.n = counts.complete
            bar.refresh()
            if trial is None:
                if counts.complete >= job.n_trials:
                    break
                time.sleep(WAIT_POLL_S)  # the last trials run elsewhere; one may yet be pruned
                continue
            outcome = _run_trial(trial, space, job, arch, policy, data, device, meter)
            _finish(study, trial, outcome)
            write_trials_csv(table, study, job.settings.pruner)
            trials_run += 1
            _log_trial(bar, trial, outcome)
            consecutive_failures = consecutive_failures + 1 if outcome.state == TrialState.FAIL else 0
            if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                raise BpfreeError(
                    f"{consecutive_failures} trials in a row failed (last: {outcome.reason}); "
                    f"stopping study {study_name!r} in {job.storage}"
                )

    write_trials_csv(table, study, job.settings.pruner)  # stale trials this worker failed are in it too
    counts = StudyCounts.of(study)
    if counts.complete == 0:
        raise BpfreeError(
            f"study {study_name!r} has no complete trial ({counts.pruned} pruned, "
            f"{counts.failed} failed); see each trial's 'reason' in {job.storage}"
        )
    best = study.best_trial
    best_params = dataclasses.asdict(params_from_mapping(job.algorithm, space.params(best.params)))
    elapsed = time.perf_counter() - start
    return TuneResult(job, arch, study_name, space, best, best_params, counts, trials_run, elapsed, set_aside, table)


# -- the study in its journal -------------------------------------------------------------------
def open_study(storage: str | Path, study_name: str, settings: Tuning, max_resource: int | None = None) -> optuna.Study:
    """Create the study, or load it when the journal already holds it (resume, or join).
    ``max_resource``: a trial's epoch budget, every stage counted (hyperband's)."""
    path = Path(storage)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        backend = WholeLinesJournal(str(path))
    except OSError as err:
        raise BpfreeError(f"cannot open the journal {path}: {err.strerror}") from None
    return optuna.create_study(
        storage=optuna.storages.JournalStorage(backend),
        study_name=study_name,
        direction="maximize",
        sampler=make_sampler(settings, 0),
        pruner=make_pruner(settings, max_resource),
        load_if_exists=True,
    )


NEWLINE = b"\n"  # ends every journal entry


class WholeLinesJournal(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file, whose entries are appended whole or not at all: a write that
    fails (a full disk) is cut back to the journal's length before it, under the writers'
    lock, and ends in one line naming the journal (bpfree.core.io.WriteFailed). Without this, the
    last line would be cut and every later start would find a damaged journal."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        with optuna.storages.journal._file.get_lock_file(self._lock):
            fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND)
            try:
                before = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except OSError as err:
                    os.ftruncate(fd, before)  # frees what was written: possible on a full disk too
                    raise write_failed(err, self._file_path, "the tuning journal") from None
            finally:
                os.close(fd)


def repair_journal(path: str | Path) -> Path | None:
    """Set aside a damaged journal, keeping what can be kept; the copy's path, or None.

    Optuna appends one JSON line per operation, under a lock. A worker killed mid-write (on a
    network file system), a full disk or a hand edit leaves a line that does not parse, and
    Optuna then fails on every start: a crash loop. Here the whole file is copied aside as
    ``NAME.corrupt-TIMESTAMP`` and the journal keeps its lines before the first damaged one,
    a consistent earlier state of the study (later trials are run again); if even those do
    not replay, the study starts afresh. One line on stderr says which. A file that is no
    journal at all (``--storage`` pointed at something else) is refused, not touched."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(path))  # the writers' lock
    lock.acquire()
    try:
        data = path.read_bytes()
        good = _readable_prefix(data)
        if good == len(data):
            return None
        if good == 0 and not (data.startswith(b'{"op_code"') and NEWLINE not in data):
            raise BpfreeError(
                f"{path} is not an Optuna journal (its first line is no journal entry); give another --storage"
            )
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        write_bytes_atomic(aside, data)
        write_bytes_atomic(path, data[:good])
        try:
            optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
            kept = f"kept its first {data[:good].count(NEWLINE)} entries"
        except Exception:  # noqa: BLE001  (a journal that parses but does not replay)
            write_bytes_atomic(path, b"")
            kept = "its readable part does not replay either: the study starts afresh"
        print(
            f"bpfree: journal {path} is damaged at byte {good} of {len(data)}; set aside as {aside.name}, {kept}",
            file=sys.stderr,
        )
        return aside
    finally:
        lock.release()


def _readable_prefix(data: bytes) -> int:
    """The length of the journal's leading whole lines that parse as journal entries."""
    end = 0
    while (newline := data.find(NEWLINE, end)) >= 0:
        try:
            entry = json.loads(data[end:newline])
        except ValueError:  # JSON or UTF-8
            break
        if not isinstance(entry, dict) or "op_code" not in entry:
            break
        end = newline + 1
    return end


def make_sampler(settings: Tuning, trials_so_far: int) -> optuna.samplers.TPESampler:
    """TPE for the study's next trial, seeded with the ``trials_so_far``-th number of a stream
    seeded by the study's seed: a resumed study draws what an uninterrupted one would have,
    instead of replaying its first random draws."""
    seed = int(np.random.default_rng(settings.seed).integers(2**32, size=trials_so_far + 1)[-1])
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=settings.multivariate,
        n_startup_trials=settings.startup_trials,
        constant_liar=True,  # workers in parallel do not all sample the same point
    )


def make_pruner(settings: Tuning, max_resource: int | None = None) -> optuna.pruners.BasePruner:
    """The study's pruner. Steps are epochs counted from 1 over all stages of a trial.

    - median: a trial below the median of earlier trials at the same epoch stops
      (``pruner_startup_trials`` finish first; epochs up to ``pruner_warmup_epochs`` are safe).
    - successive-halving (ASHA): rungs at epochs w, w*r, w*r^2, ... (w = warmup + 1, r =
      ``pruner_reduction_factor``); at each rung only the top 1/r of the trials that reached it
      go on.
    - hyperband: several successive-halving brackets, from aggressive to none, with the
      resource running from w to ``max_resource`` epochs (the trial's epoch budget; Optuna
      estimates it from the first complete trial when None). A trial's bracket is fixed by
      the study name and trial number, so a resumed study keeps its brackets.
    """
    warmup = settings.pruner_warmup_epochs + 1  # the first epoch that may be pruned
    rate = settings.pruner_reduction_factor
    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    if settings.pruner == "successive-halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=warmup, reduction_factor=rate)
    if settings.pruner == "hyperband":
        top = "auto" if max_resource is None else max(int(max_resource), warmup)
        return optuna.pruners.HyperbandPruner(min_resource=warmup, max_resource=top, reduction_factor=rate)
    # Optuna's warmup protects steps < n_warmup_steps
    return optuna.pruners.MedianPruner(n_startup_trials=settings.pruner_startup_trials, n_warmup_steps=warmup)


def _check_identity(
    study: optuna.Study, job: TuneJob, arch: ArchSpec, space: SearchSpace, policy: EarlyStopping
) -> None:
    """A study resumed or joined with other settings would mix incomparable trials."""
    identity = {
        "algorithm": job.algorithm,
        "dataset": job.dataset,
        "arch": str(arch),
        "seed": job.settings.seed,
        "early_stopping": policy.model_dump(),
        "search_space": space.describe(),
        "precision": job.precision,
    }
    # YAML round trip: what was stored (JSON in the journal) compares equal to what is asked
    identity = yaml.safe_load(yaml.safe_dump(identity))
    stored = study.user_attrs.get("bpfree")
    if stored is None:
        study.set_user_attr("bpfree", identity)
        study.set_user_attr("objective", OBJECTIVE)
        return
    for key, value in identity.items():
        if stored.get(key) != value:
            raise BpfreeError(
                f"study {study.study_name!r} in {job.storage} was started with {key} "
                f"{stored.get(key)!r}, not {value!r}; use another --study-name or --storage"
            )


ASK_LOCK_GRACE_S = 30  # a lock file unchanged this long was left by a killed worker


def ask_lock(storage: str | Path) -> optuna.storages.journal.BaseJournalFileLock:
    """The workers' lock around count-and-ask: the file ``STORAGE.ask.lock``, made with
    O_EXCL. Not Optuna's symlink lock: that one breaks a stale lock by the mtime of the link's
    *target*, and this lock guards no file of its own, so a dangling link left by a worker
    SIGKILLed while holding it was never broken and every later worker waited forever."""
    return optuna.storages.journal.JournalFileOpenLock(f"{storage}.ask", grace_period=ASK_LOCK_GRACE_S)


def _next_trial(study: optuna.Study, job: TuneJob, space: SearchSpace) -> tuple[optuna.Trial | None, StudyCounts]:
    """Under a lock shared by all workers: fail stale trials, count, and ask for a new trial
    only while complete + running trials are fewer than N, so N is met exactly, not overshot."""
    lock = ask_lock(job.storage)
    lock.acquire()  # blocks; a lock left by a killed worker is broken after ASK_LOCK_GRACE_S
    try:
        fail_stale_trials(study, job.settings.stale_after)
        counts = StudyCounts.of(study)
        if counts.complete + counts.running >= job.n_trials:
            return None, counts
        study.sampler = make_sampler(job.settings, len(study.get_trials(deepcopy=False)))
        trial = study.ask(space.distributions)
        trial.set_user_attr("worker", _worker())
        trial.set_user_attr("heartbeat", time.time())
        return trial, counts
    finally:
        lock.release()


def _worker() -> dict[str, Any]:
    """Who runs a trial: enough to tell later that it is gone. The process's start time
    tells a reused pid from the original; SLURM's job, task and restart count tell a
    requeued job (same job id, on any node) from the run of it that was pre-empted."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": psutil.Process().create_time(),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "slurm_task": os.environ.get("SLURM_PROCID"),
        "slurm_restart": os.environ.get("SLURM_RESTART_COUNT", "0"),
    }


def fail_stale_trials(study: optuna.Study, stale_after: float) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker is gone: on this host, a dead process; in a
    requeued SLURM job, the job's earlier run; on any host, no heartbeat (one per epoch) for
    ``stale_after`` seconds. The journal backend has no heartbeat of its own (only RDBStorage
    has), hence this. Returns the trial numbers.

    Called under the ask lock (``_next_trial``), inside which every trial is asked and given
    its "worker" attribute: a RUNNING trial without one, seen under that lock, was asked by
    a worker that died before it could name itself (CI caught a SIGKILL there, and the trial
    then waited for a heartbeat that would never come)."""
    me, now, failed = _worker(), time.time(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        beat = trial.user_attrs.get("heartbeat")
        if beat is None:
            beat = trial.datetime_start.timestamp() if trial.datetime_start else now
        if not worker:
            reason = "stale: its worker died between asking for it and naming itself"
        elif _gone(worker, me):
            where = f"pid {worker.get('pid')} on {worker.get('host')}"
            if worker.get("slurm_job"):
                where += f", SLURM job {worker['slurm_job']} run {worker.get('slurm_restart')}"
            reason = f"stale: its worker ({where}) is gone"
        elif now - beat > stale_after:
            silent = f"{now - beat:.0f} s"
            reason = f"stale: no heartbeat for {silent} from {worker or 'an unknown worker'}"
        else:
            continue
        # Study.tell only finishes a trial this process asked for; the storage can finish any
        storage = study._storage
        try:
            storage.set_trial_user_attr(trial._trial_id, "reason", reason)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile by its own worker or by another one
        failed.append(trial.number)
        print(f"trial {trial.number}: failed, {reason}", file=sys.stderr)
    return failed


def _gone(worker: Mapping[str, Any], me: Mapping[str, Any]) -> bool:
    """Known to be dead (anything unknown is left to the heartbeat)."""
    if all(worker.get(k) == me[k] for k in ("host", "pid", "started")):
        # this very process, which runs its trials one after another and asks for the next
        # only between them: a trial of its own still RUNNING lost its end (a repaired journal)
        return True
    same_slurm_task = worker.get("slurm_job") is not None and (worker.get("slurm_job"), worker.get("slurm_task")) == (
        me["slurm_job"],
        me["slurm_task"],
    )
    if same_slurm_task and worker.get("slurm_restart") != me["slurm_restart"]:
        return True  # SLURM runs a job once at a time: this is its requeued run
    if worker.get("host") == me["host"]:
        return not _alive(worker.get("pid"), worker.get("started"))
    return False


def _alive(pid: Any, started: Any = None) -> bool:
    if not isinstance(pid, int):
        return True  # unknown: leave it to the heartbeat
    try:
        process = psutil.Process(pid)
        if isinstance(started, (int, float)) and abs(process.create_time() - started) > 1.0:
            return False  # the pid was reused by a later process
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # killed, not yet reaped by its parent
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # e.g. not ours to inspect: leave it to the heartbeat
    return True


# -- one trial ------------------------------------------------------------------------------
def _run_trial(trial, space, job, arch, policy, data, device, meter: Meter | None = None) -> TrialOutcome:
    """One trial in its own measurement window ("trial": building the model, every epoch,
    the final validation), whatever its end: its time and energy are part of the study's cost."""
    if meter is None:
        return _train_trial(trial, space, job, arch, policy, data, device)
    meter.begin_window("trial")
    try:
        outcome = _train_trial(trial, space, job, arch, policy, data, device)
    finally:
        window = meter.end_window("trial")
    energy = window.of(meter.primary_domain)
    return dataclasses.replace(outcome, time_s=window.time_s, energy_j=energy.joules, energy_source=energy.source)


def _train_trial(trial, space, job, arch, policy, data, device) -> TrialOutcome:
    """Train one configuration; report validation accuracy per epoch (global epoch number as
    the step) so the pruner can stop it. Nothing raised here escapes but KeyboardInterrupt."""
    epochs, started = 0, time.perf_counter()
    pruner = job.settings.pruner

    def on_epoch_end(record) -> None:
        nonlocal epochs
        epochs = record.epoch
        if math.isfinite(record.val_accuracy):
            trial.report(record.val_accuracy, record.epoch)
        _set_attr(trial, "heartbeat", time.time())
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at epoch {record.epoch} by the {pruner} pruner: val accuracy {record.val_accuracy:.4f}"
            )

    def ended(state: TrialState, reason: str) -> TrialOutcome:
        return TrialOutcome(state, None, reason, epochs, time.perf_counter() - started)

    algo = None
    try:
        seed = job.settings.seed
        seed_everything(seed)
        params = space.params(trial.params)
        algo = build_algorithm(job.algorithm, arch, data.info, params, device=device, seed=seed)
        with precision_context(job.precision, device):
            result = fit(algo, data, policy, seed=seed, on_epoch_end=on_epoch_end)
            value = algo.accuracy(data.val) if result.status == "ok" else float("nan")
        if result.status != "ok":
            return ended(TrialState.PRUNED, f"{result.status}: non-finite loss at epoch {result.epochs}")
        if not math.isfinite(value):
            return ended(TrialState.PRUNED, f"non-finite {OBJECTIVE}")
        return TrialOutcome(TrialState.COMPLETE, value, "", result.epochs, result.train_time_s)
    except optuna.TrialPruned as pruned:
        return ended(TrialState.PRUNED, str(pruned))
    except KeyboardInterrupt:
        _finish(trial.study, trial, ended(TrialState.FAIL, "interrupted"))
        raise
    except Exception as err:  # noqa: BLE001  (any failure of one configuration is that trial's)
        if is_out_of_memory(err):
            return ended(TrialState.FAIL, f"out of memory: {_first_line(err)}")
        return ended(TrialState.FAIL, f"{type(err).__name__}: {_first_line(err)}")
    finally:
        del algo
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the next trial's model may be larger


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0]


def _finish(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome) -> None:
    _set_attr(trial, "epochs", outcome.epochs)
    _set_attr(trial, "train_time_s", round(outcome.train_time_s, 3))
    if outcome.time_s is not None:
        _set_attr(trial, "time_s", round(outcome.time_s, 3))
    if outcome.energy_j is not None:
        _set_attr(trial, "energy_j", outcome.energy_j)
        _set_attr(trial, "energy_source", outcome.energy_source)
    if outcome.reason:
        _set_attr(trial, "reason", outcome.reason)
    values = outcome.value if outcome.state == TrialState.COMPLETE else None
    study.tell(trial, values, state=outcome.state, skip_if_finished=True)


def _set_attr(trial: optuna.Trial, key: str, value: Any) -> None:
    try:
        trial.set_user_attr(key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # another worker declared this trial stale; its record stands


def _log_trial(bar, trial: optuna.Trial, outcome: TrialOutcome) -> None:
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    if outcome.state == TrialState.COMPLETE:
        what = f"{OBJECTIVE} {outcome.value:.4f}"
    else:
        what = f"{outcome.state.name.lower()} ({outcome.reason})"
    bar.write(
        f"trial {trial.number}: {what}; {params}; {outcome.epochs} epochs, {outcome.train_time_s:.1f} s",
        file=sys.stderr,
    )


# -- the result on disk ---------------------------------------------------------------------
def best_params_document(result: TuneResult) -> dict[str, Any]:
    """What ``bpfree train --params`` reads (``algorithm`` and ``params``) and what a reader
    needs to trust it: the value, the trial, the study's size and how it was searched."""
    settings = result.job.settings
    return {
        "algorithm": result.job.algorithm,
        "dataset": result.job.dataset,
        "arch": str(result.arch),
        "params": result.best_params,
        "best_value": result.best.value,
        "objective": OBJECTIVE,
        "best_trial": result.best.number,
        "trials": dataclasses.asdict(result.counts),
        "n_trials": result.job.n_trials,
        "study": result.study_name,
        "storage": str(result.job.storage),
        "seed": settings.seed,
        "sampler": {
            "name": "TPESampler",
            "multivariate": settings.multivariate,
            "startup_trials": settings.startup_trials,
            "constant_liar": True,
        },
        "pruner": {
            "name": settings.pruner,
            "startup_trials": settings.pruner_startup_trials,
            "warmup_epochs": settings.pruner_warmup_epochs,
            "reduction_factor": settings.pruner_reduction_factor,
        },
        "max_epochs": settings.max_epochs or result.job.early_stopping.max_epochs,
        "search_space": result.space.describe(),
        "bpfree_version": __version__,
        "optuna_version": optuna.__version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # a damaged journal this worker set aside (its copy) and repaired; None: none
        "journal_set_aside": str(result.journal_set_aside) if result.journal_set_aside else None,
    }


def write_best_params(path: str | Path, result: TuneResult) -> None:
    write_yaml_atomic(path, best_params_document(result))


# one row per trial, every state: what the study cost (bpfree.report.cost reads it)
TRIAL_COLUMNS = [
    "study",
    "algorithm",
    "arch",
    "dataset",
    "pruner",
    "number",
    "state",
    "value",
    "epochs",
    "time_s",
    "train_time_s",
    "energy_j",
    "energy_source",
    "reason",
    "params",
]


def trial_records(study: optuna.Study, pruner: str = "") -> list[dict[str, Any]]:
    """Every trial of the study with its epochs, time and energy (None: not measured).

    A trial failed as stale (its worker died) has no recorded end: its epochs are the last
    it reported, its time runs from its start to its last heartbeat, its energy is unknown."""
    identity = study.user_attrs.get("bpfree") or {}
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        epochs = attrs.get("epochs")
        if epochs is None and trial.intermediate_values:
            epochs = max(trial.intermediate_values)
        time_s = attrs.get("time_s", attrs.get("train_time_s"))
        if time_s is None and trial.datetime_start is not None and attrs.get("heartbeat") is not None:
            time_s = round(max(0.0, attrs["heartbeat"] - trial.datetime_start.timestamp()), 3)
        rows.append(
            {
                "study": study.study_name,
                "algorithm": identity.get("algorithm"),
                "arch": identity.get("arch"),
                "dataset": identity.get("dataset"),
                "pruner": pruner,
                "number": trial.number,
                "state": "failed" if trial.state == TrialState.FAIL else trial.state.name.lower(),
                "value": trial.value if trial.state == TrialState.COMPLETE else None,
                "epochs": epochs,
                "time_s": time_s,
                "train_time_s": attrs.get("train_time_s"),
                "energy_j": attrs.get("energy_j"),
                "energy_source": attrs.get("energy_source"),
                "reason": attrs.get("reason", ""),
                "params": json.dumps(trial.params, sort_keys=True),
            }
        )
    return rows


def write_trials_csv(path: str | Path, study: optuna.Study, pruner: str = "") -> None:
    """The study's trial table, rewritten whole (atomically) from the journal; left alone
    when unchanged, so that a worker ending after the others does not touch its time stamp."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TRIAL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(trial_records(study, pruner))
    text = buffer.getvalue()
    path = Path(path)
    try:
        if path.read_text() == text:
            return
    except (OSError, ValueError):  # missing, or not text: rewritten
        pass
    write_text_atomic(path, text)
