"""One tuning job: ask -> train -> tell until the study holds its trials, resumable and shared
by parallel workers through the journal."""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from bpfree import __version__
from bpfree.algorithms import params_from_mapping
from bpfree.core.errors import BpfreeError
from bpfree.core.io import remove_stale_temporaries, write_yaml_atomic
from bpfree.core.spec import EarlyStopping, Machine, Measurement, RunSpec, Settings, Tuning
from bpfree.data import load_splits
from bpfree.engine.resolve import run_spec
from bpfree.engine.run import prepare
from bpfree.measure import Meter
from bpfree.models import ArchSpec, parse_arch
from bpfree.report.formats import hours
from bpfree.tuning.budget import cap_stage_lengths, worst_case_epochs
from bpfree.tuning.journal import ask_lock, refuse_other_file, repair_journal
from bpfree.tuning.records import trial_spec_path, trials_csv_path, write_trial_spec, write_trials_csv
from bpfree.tuning.space import SearchSpace, search_space
from bpfree.tuning.stop import TuneInterrupted, deferred
from bpfree.tuning.study import (
    OBJECTIVE,
    StudyCounts,
    check_identity,
    make_sampler,
    open_study,
    sample_params,
    study_identity,
)
from bpfree.tuning.trial import TrialOutcome, finish_trial, run_trial, trial_spec
from bpfree.tuning.workers import abandon_trial, retry_stale_trials, worker_identity

MAX_CONSECUTIVE_FAILURES = 5  # a study whose every trial raises has a bug, not bad luck


WAIT_POLL_S = 2.0  # how often a worker looks again while others finish the last trials


# -- one tuning job ---------------------------------------------------------------------------
@dataclass(frozen=True)
class TuneJob:
    algorithm: str
    dataset: str
    n_trials: int  # finished trials (complete, pruned or failed) the study holds when the job ends
    storage: Path  # the journal file
    settings: Tuning = field(default_factory=Tuning)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    arch: ArchSpec | None = None  # None: the algorithm's default
    study_name: str | None = None  # None: "{algorithm}-{dataset}-{arch}"
    machine: Machine = Machine()  # device and data root (threads are set by the caller)
    precision: str = Settings().precision  # as the runs train: a trial in fp32 would tune another model
    measurement: Measurement = Measurement()  # the meter around each trial (no idle baseline, no CodeCarbon)
    trials_csv: Path | None = None  # None: beside the journal, STUDY.trials.csv (trials_csv_path)
    checkpoint_every_s: float = Settings().checkpoint_every_s  # what a trial's kept spec re-runs with

    def policy(self) -> EarlyStopping:
        """A trial's early stopping (:meth:`bpfree.core.spec.Tuning.trial_policy`)."""
        return self.settings.trial_policy(self.early_stopping)

    def base_spec(self) -> RunSpec:
        """The run specification every trial of the study shares, before its sampled params:
        built by the resolver of ``bpfree train`` (bpfree.engine.resolve.run_spec), with the
        tuning seed and a trial's early stopping."""
        machine = self.machine
        settings = Settings(
            data_root=machine.data_root,
            device=machine.device,
            job_threads=machine.threads,
            precision=self.precision,
            checkpoint_every_s=self.checkpoint_every_s,
            early_stopping=self.policy(),
            measurement=self.measurement,
        )
        arch = str(self.arch) if self.arch is not None else None
        return run_spec(settings, algorithm=self.algorithm, dataset=self.dataset, seed=self.settings.seed, arch=arch)


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


def tune(job: TuneJob, *, progress: bool | None = None) -> TuneResult:
    """Run trials until the study holds ``job.n_trials`` finished ones, pruned and failed ones
    counted as Optuna's ``study.optimize(n_trials=N)`` counts them (or until the timeout); the
    best is the best COMPLETE trial.
    Safe to run again after a kill, and in several processes at once on one journal."""
    if job.n_trials < 1:
        raise BpfreeError(f"--n-trials must be >= 1, got {job.n_trials}")
    # every check of bpfree train (names, architecture, params, precision, device) before any work
    base, device, _ = prepare(job.base_spec())
    arch = parse_arch(base.arch)
    space, capped = cap_stage_lengths(
        search_space(job.algorithm, job.settings.search_spaces),
        job.algorithm,
        arch,
        job.dataset,
        base.early_stopping.max_epochs,
    )
    for line in capped:  # a trial trains the stage lengths it samples
        print(f"bpfree tune: {line}", file=sys.stderr)
    study_name = job.study_name or f"{job.algorithm}-{job.dataset}-{arch}"
    table = job.trials_csv or trials_csv_path(job.storage)
    refuse_other_file(job.storage)  # before its locks are made beside it
    with deferred(), ask_lock(job.storage):  # no other worker of the study writes its files meanwhile
        remove_temporaries(job.storage, table)
        set_aside = repair_journal(job.storage)
    budget = None
    if job.settings.pruner == "hyperband":
        # hyperband's largest resource: the most epochs a trial can train, every stage counted
        budget = worst_case_epochs(job.algorithm, arch, job.dataset, space, base.early_stopping.max_epochs)
    study = open_study(job.storage, study_name, job.settings, max_resource=budget)
    check_identity(study, study_identity(base, device.type, space, job.settings.score), job.storage)

    start = time.perf_counter()
    # read before any trial is asked for, so a missing dataset leaves no trial RUNNING
    data = load_splits(job.dataset, root=base.machine.data_root, seed=base.seed, device=device)
    trials_run = consecutive_failures = 0
    disable = None if progress is None else not progress  # None: a bar only on a terminal
    meter = Meter.for_device(device, job.measurement)
    running = None  # the trial this worker runs and has not told: abandoned if a stop signal comes
    try:
        with meter, tqdm(total=job.n_trials, desc=f"tune {job.algorithm}", unit="trial", disable=disable) as bar:
            while job.settings.timeout is None or time.perf_counter() - start < job.settings.timeout:
                with deferred():  # the study's bookkeeping: a stop signal waits for its end
                    trial, counts, reported = _next_trial(study, job, space)
                    running = trial
                    if trial is not None:
                        spec = trial_spec(base, space, trial, device)
                        with ask_lock(job.storage):  # before it trains: `bpfree train --spec` re-runs it
                            write_trial_spec(table, trial.number, spec)
                bar.n = counts.finished
                bar.refresh()
                if trial is None:
                    if counts.finished >= job.n_trials:
                        break
                    time.sleep(WAIT_POLL_S)  # the last trials run elsewhere; one may yet be pruned
                    continue
                outcome = run_trial(trial, spec, data, device, job.settings.pruner, meter, job.settings.score, reported)
                with deferred():
                    finish_trial(study, trial, outcome)
                    running = None
                    with ask_lock(job.storage):
                        write_trials_csv(table, study, job.settings.pruner)
                trials_run += 1
                _log_trial(
                    bar, trial, outcome, StudyCounts.of(study).finished, job.n_trials, time.perf_counter() - start
                )
                consecutive_failures = consecutive_failures + 1 if outcome.state == TrialState.FAIL else 0
                if consecutive_failures >= MAX_CONSECUTIVE_FAILURES:
                    raise BpfreeError(
                        f"{consecutive_failures} trials in a row failed (last: {outcome.reason}); "
                        f"stopping study {study_name!r} in {job.storage}"
                    )
    except KeyboardInterrupt as stop:  # a stop signal (bpfree.tuning.stop) or Ctrl-C
        if running is not None:
            epochs, seconds = getattr(stop, "attempt", (0, 0.0))
            by = stop.signal_name if isinstance(stop, TuneInterrupted) else "KeyboardInterrupt"
            with deferred():
                abandon_trial(study, running, by, epochs, seconds)
                with ask_lock(job.storage):
                    write_trials_csv(table, study, job.settings.pruner)
            if isinstance(stop, TuneInterrupted):
                stop.trial, stop.epochs, stop.time_s = running.number, epochs, seconds
        raise

    with ask_lock(job.storage):  # stale trials this worker put back or failed are in it too
        write_trials_csv(table, study, job.settings.pruner)
    counts = StudyCounts.of(study)
    if counts.complete == 0:
        raise BpfreeError(
            f"study {study_name!r} has no complete trial of {counts.finished} ({counts.pruned} pruned, "
            f"{counts.failed} failed): no best params; see each trial's 'reason' in {job.storage}"
        )
    best = study.best_trial
    best_params = dataclasses.asdict(params_from_mapping(job.algorithm, space.params(best.params)))
    elapsed = time.perf_counter() - start
    return TuneResult(job, arch, study_name, space, best, best_params, counts, trials_run, elapsed, set_aside, table)


def _next_trial(
    study: optuna.Study, job: TuneJob, space: SearchSpace
) -> tuple[optuna.Trial | None, StudyCounts, set[int]]:
    """Under a lock shared by all workers: put back the trials of dead workers, count, and,
    while finished + running trials are fewer than N (so N is met exactly, not overshot), run
    the first trial waiting in the queue (one abandoned by a stop signal or a killed worker,
    with its params) or else a new one. A new trial's params are drawn first (``sample_params``)
    and the trial is added whole, in one journal line, then taken from the queue; each trial
    number's draws come from its own seed, so a resumed study draws as an uninterrupted one.
    Returns the trial, the counts, and the epochs an abandoned attempt of it reported."""
    with ask_lock(job.storage):  # blocks while another worker holds it; dies with its holder
        retry_stale_trials(study, job.settings.stale_after)
        counts = StudyCounts.of(study)
        if counts.finished + counts.running >= job.n_trials:
            return None, counts, set()
        trials = study.get_trials(deepcopy=False)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        if waiting:
            number = waiting[0].number
        else:
            number = len(trials)
            params = sample_params(study, job.settings, space, number)
            template = optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=params,
                distributions=space.distributions,
                user_attrs={"worker": worker_identity()},
            )
            study.add_trial(template)
        study.sampler = make_sampler(job.settings, number)  # a queued trial's params not yet drawn
        trial = study.ask(space.distributions)  # the first waiting trial, RUNNING now
        trial.set_user_attr("worker", worker_identity())
        trial.set_user_attr("heartbeat", time.time())
        reported = set(study.get_trials(deepcopy=False)[trial.number].intermediate_values)
        return trial, counts, reported


def remove_temporaries(storage: Path, table: Path) -> None:
    """The temporary files of writes that a kill interrupted, beside the journal (its repair),
    the trial table and the trial specs; called under the ask lock, under which every worker
    of the study writes them."""
    table_name = Path(table).name
    removed = remove_stale_temporaries(Path(storage).parent, of=lambda name: name.startswith(Path(storage).name))
    removed += remove_stale_temporaries(Path(table).parent, of=lambda name: name == table_name)
    removed += remove_stale_temporaries(trial_spec_path(table, 0).parent, of=lambda name: name.startswith("trial-"))
    if removed:
        names = ", ".join(p.name for p in removed)
        print(f"bpfree tune: removed {len(removed)} temporary file(s) of interrupted writes: {names}", file=sys.stderr)


def _log_trial(bar, trial: optuna.Trial, outcome: TrialOutcome, finished: int, n_trials: int, elapsed: float) -> None:
    """One line per trial's end in the job's log (and above the bar on a terminal): its result,
    params and epochs, the study's finished count of N, this worker's elapsed time and an ETA
    at this worker's pace (other workers shorten it)."""
    params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    if outcome.state == TrialState.COMPLETE:
        what = f"{OBJECTIVE} {outcome.value:.4f}"
    else:
        what = f"{outcome.state.name.lower()} ({outcome.reason})"
    left = max(n_trials - finished, 0)
    eta = elapsed / max(finished, 1) * left
    bar.write(
        f"trial {trial.number} ({finished} of {n_trials} finished): {what}; {params}; {outcome.epochs} epochs, "
        f"{outcome.train_time_s:.1f} s; elapsed {hours(elapsed)}, eta {hours(eta)}",
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
        "score": settings.score,  # final_model or best_epoch: what a trial's value is
        "protocol": settings.protocol,
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
        "max_epochs": result.job.policy().max_epochs,
        "search_space": result.space.describe(),
        "bpfree_version": __version__,
        "optuna_version": optuna.__version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # a damaged journal this worker set aside (its copy) and repaired; None: none
        "journal_set_aside": str(result.journal_set_aside) if result.journal_set_aside else None,
    }


def write_best_params(path: str | Path, result: TuneResult) -> None:
    with ask_lock(result.job.storage):  # its temporary file is removed under this lock (remove_temporaries)
        remove_stale_temporaries(Path(path).parent, of=lambda name: name == Path(path).name)
        write_yaml_atomic(path, best_params_document(result))
