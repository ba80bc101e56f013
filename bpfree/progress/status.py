"""Where a workflow's grid stands, read from its results folder alone (``bpfree status``).

Read while the workflow runs, from any node that sees the shared filesystem: every file is
read, none is written or locked (a study's journal through bpfree.core.journal, as ``bpfree
tune`` reads it; a run's checkpoint for its epoch history without unpickling a tensor). The grid
comes from :func:`bpfree.progress.grid.expand_grid`, as the workflow plans it; a trial's cost and
its worker's liveness are the tuning workers' own (:mod:`bpfree.progress.trials`, ``.workers``).
No torch; optuna only where there is a journal to read."""

from __future__ import annotations

import csv
import glob
import io
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bpfree.core.errors import BpfreeError
from bpfree.core.io import MAX_TABLE_BYTES, decode_utf8, finite, read_limited, read_yaml
from bpfree.core.outputs import (
    BEST_PARAMS,
    DEFAULT_CONFIG,
    RUN_CHECKPOINT,
    RUN_METRICS,
    RUN_SPEC,
    STUDY_JOURNAL,
    run_dir,
    study_dir,
    train_benchmark,
    tune_benchmark,
    within,
)
from bpfree.core.readback import read_checkpoint_fields
from bpfree.core.record import read_record
from bpfree.core.spec import WorkflowConfig, parse
from bpfree.progress.grid import Grid, Study, expand_grid, grid_on_disk


# -- what is planned ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    grid: Grid
    config: str | None  # the config file read; None: what is on disk only
    stale_after: float = 1800.0
    max_epochs: int | None = None  # a run's epoch budget per stage (early_stopping.max_epochs)
    trial_max_epochs: int | None = None  # a trial's budget (core.spec.Tuning.trial_policy)


def plan_of(config_path: str | None, results: Path) -> Plan:
    """The grid the Snakefile would plan from the config (checked as the spec checks it,
    without the torch-side checks), or, without a config, the studies and runs on disk."""
    if config_path is None and Path(DEFAULT_CONFIG).is_file():
        config_path = DEFAULT_CONFIG
    if config_path is None:
        return Plan(grid_on_disk(results), None)
    if not Path(config_path).is_file():
        raise BpfreeError(f"--configfile {config_path}: no such file")
    raw = read_yaml(config_path)
    if not isinstance(raw, dict):
        raise BpfreeError(f"{config_path} is not a workflow config (not a mapping)")
    try:
        checked = parse(WorkflowConfig, dict(raw))
        grid = expand_grid(checked)
    except BpfreeError as err:
        raise BpfreeError(f"{config_path}: {err}") from None
    run_budget = checked.early_stopping.max_epochs
    trial_budget = checked.tuning.trial_policy(checked.early_stopping).max_epochs  # as the tuning job trains them
    return Plan(grid, config_path, float(checked.tuning.stale_after), run_budget, trial_budget)


# -- a study, from its journal ---------------------------------------------------------------------
@dataclass
class StudyStatus:
    study: str
    dataset: str
    arch: str
    algorithm: str
    state: str  # pending, running, waiting, stale worker, done, damaged
    complete: int = 0
    planned: int | None = None
    pruned: int = 0
    failed: int = 0
    running: int = 0
    stale: int = 0
    queued: int = 0  # WAITING: abandoned by a stop signal or a killed worker, run again next
    best: float | None = None
    epochs: float = 0.0
    time_s: float = 0.0
    energy_j: float | None = None
    energy_source: str | None = None
    s_per_epoch: float | None = None
    epochs_per_trial: float | None = None  # mean over finished trials
    benchmark_s: float | None = None  # Snakemake's benchmark of the tune job(s)
    benchmark_max_rss_mb: float | None = None
    problem: str | None = None  # what is damaged (state damaged): its journal, and where

    @property
    def finished(self) -> int:
        """Finished trials, pruned and failed ones included (Optuna's n_trials counts them)."""
        return self.complete + self.pruned + self.failed


def study_status(study: Study, plan: Plan, results: Path, now: float) -> StudyStatus:
    folder = Path(study_dir(*study.where, results=results))
    planned = plan.grid.trials.get(study)
    status = StudyStatus(str(study), study.dataset, study.arch, study.algorithm, "pending", planned=planned)
    if planned == 0:
        status.state = "done"  # no study: the runs take the defaults, or the paper's values
        return status
    journal = folder / STUDY_JOURNAL
    if not journal.exists() and not journal.is_symlink():
        return status
    # here, not at the top: optuna (and psutil) only where there is a journal to read
    from optuna.trial import TrialState

    from bpfree.core.journal import read_journal
    from bpfree.progress.trials import trial_cost
    from bpfree.progress.workers import stale_reason, worker_identity

    try:
        read = read_journal(journal)  # bounded, every line checked (bpfree.core.journal): as bpfree tune reads it
    except BpfreeError as err:
        status.state, status.problem = "damaged", str(err)
        return status
    if read.damage is not None:
        status.problem = (
            f"journal {journal} is damaged at {read.damage}; what is before it is shown (the next bpfree tune "
            "sets the file aside and resumes from there)"
        )
    maximize = read.studies[0].maximize if read.studies else True
    values, energies, sources, finished_epochs = [], [], [], []
    me = None
    for trial in read.trials:
        if trial.state == TrialState.WAITING:
            status.queued += 1
            continue
        if trial.state == TrialState.RUNNING:
            me = me or worker_identity()
            stale = stale_reason(trial, plan.stale_after, now=now, me=me) is not None  # as the next worker decides
            status.stale += stale
            status.running += not stale
            continue
        state = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}[trial.state]
        setattr(status, state, getattr(status, state) + 1)
        if trial.state == TrialState.COMPLETE and finite(trial.value) is not None:
            values.append(trial.value)
        epochs, time_s, energy, source = trial_cost(trial)
        status.epochs += epochs or 0
        status.time_s += time_s or 0.0
        if epochs:
            finished_epochs.append(epochs)
        if energy is not None:
            energies.append(energy)
            sources.append(source)
    status.best = (max(values) if maximize else min(values)) if values else None
    status.energy_j = sum(energies) if energies else None
    status.energy_source = sources_of(sources)
    status.s_per_epoch = status.time_s / status.epochs if status.epochs > 0 else None
    status.epochs_per_trial = sum(finished_epochs) / len(finished_epochs) if finished_epochs else None
    status.benchmark_s, status.benchmark_max_rss_mb = _benchmarks(
        [Path(tune_benchmark(*study.where, results=results))]
        + sorted(map(Path, glob.glob(tune_benchmark(*study.where, worker="*", results=glob.escape(str(results))))))
    )
    enough = planned is not None and status.finished >= planned
    if status.problem is not None:
        status.state = "damaged"
    elif enough and (folder / BEST_PARAMS).is_file():
        status.state = "done"
    elif status.running:
        status.state = "running"
    elif status.stale:
        status.state = "stale worker"
    else:
        status.state = "waiting"
    return status


# -- a run, from its folder ---------------------------------------------------------------------------
@dataclass
class RunStatus:
    run: str
    dataset: str
    arch: str
    algorithm: str
    seed: int
    state: str  # pending, running, stopped, damaged, done (or done with the run's own status: diverged)
    epochs: int = 0
    stage: str | None = None
    max_epochs_per_stage: int | None = None
    time_s: float = 0.0
    energy_j: float | None = None
    energy_source: str | None = None
    updated_s_ago: float | None = None
    benchmark_s: float | None = None  # Snakemake's benchmark: the job's wall time
    benchmark_max_rss_mb: float | None = None
    problem: str | None = None  # what is damaged (state damaged): its metrics.json or checkpoint

    @property
    def done(self) -> bool:
        return self.state.startswith("done")


def run_status(study: Study, seed: int, plan: Plan, results: Path, now: float) -> RunStatus:
    folder = Path(run_dir(*study.where, seed, results=results))
    status = RunStatus(f"{study} seed{seed}", study.dataset, study.arch, study.algorithm, seed, "pending")
    status.max_epochs_per_stage = plan.max_epochs
    metrics = folder / RUN_METRICS
    if metrics.exists() or metrics.is_symlink():
        try:
            record = read_record(metrics)  # bounded and typed, as bpfree aggregate reads it
        except BpfreeError as err:
            status.state, status.problem = "damaged", f"{err} (bpfree train refuses to overwrite it: remove it)"
            return status
        status.state = "done" if record.status == "ok" else f"done ({record.status})"
        status.epochs = record.epochs
        status.time_s = finite(record.train_time_s) or 0.0
        status.energy_j = finite(record.energy_j)
        status.energy_source = record.energy_source
        bench = Path(train_benchmark(*study.where, seed, results=results))
        status.benchmark_s, status.benchmark_max_rss_mb = _benchmarks([bench])
        return status
    checkpoint = folder / RUN_CHECKPOINT
    if checkpoint.exists() or checkpoint.is_symlink():
        status.state = "running"
        status.max_epochs_per_stage = _spec_max_epochs(folder / RUN_SPEC) or plan.max_epochs
        try:
            status.updated_s_ago = max(0.0, now - checkpoint.stat().st_mtime)
        except OSError:
            pass
        try:
            fields = read_checkpoint_fields(checkpoint)  # bounded, nothing built from it
        except BpfreeError as err:
            status.state = "damaged"
            status.problem = f"{err} (bpfree train sets it aside and starts the run afresh)"
            return status
        status.epochs, status.stage, status.time_s = fields.epochs, fields.stage, fields.train_time_s
        if status.updated_s_ago is not None and status.updated_s_ago > plan.stale_after:
            status.state = "stopped"  # a checkpoint nobody has advanced for stale_after s
    return status


def _spec_max_epochs(path: Path) -> int | None:
    """The run's own epoch budget per stage (its spec.yaml: the paper's values may differ
    from the config's early stopping)."""
    try:
        return int(read_yaml(path, "spec")["early_stopping"]["max_epochs"])
    except (BpfreeError, ValueError, TypeError, KeyError):
        return None


def _benchmarks(paths: list[Path]) -> tuple[float | None, float | None]:
    """Snakemake's benchmark files (``s``, ``max_rss`` in MB): the seconds summed over the
    files (a study's workers), the largest resident set."""
    seconds, rss = [], []
    for path in paths:
        for row in csv_rows(path, "\t")[-1:]:  # the last measurement (a rerun appends none; repeats would)
            if number(row.get("s")) is not None:
                seconds.append(number(row.get("s")))
            if number(row.get("max_rss")) is not None:
                rss.append(number(row.get("max_rss")))
    return (sum(seconds) if seconds else None), (max(rss) if rss else None)


def csv_rows(path: Path, delimiter: str = ",") -> list[dict[str, Any]]:
    """A CSV file's rows, read within MAX_TABLE_BYTES as UTF-8; none where it is missing or
    cannot be read (Snakemake's benchmarks and the cost table are extras here)."""
    if not path.exists():
        return []
    try:
        text = decode_utf8(read_limited(path, MAX_TABLE_BYTES), str(path))
        return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))
    except (BpfreeError, csv.Error):
        return []


def number(value: Any) -> float | None:
    """A finite number from a CSV cell, or None."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def sources_of(values: list[str | None]) -> str | None:
    """Energy sources, each named once: ``estimate+rapl``."""
    named = sorted({s for v in values if v for s in str(v).split("+")})
    return "+".join(named) if named else None


# -- the whole grid -------------------------------------------------------------------------------------
@dataclass
class Spent:
    tuning_time_s: float
    runs_time_s: float
    time_s: float
    energy_j: float | None
    energy_source: str | None
    note: str = "running runs count up to their last checkpoint; running trials are not counted"


@dataclass
class StudyLeft:
    study: str
    remaining_s: float | None  # None: not measured yet


@dataclass
class Forecast:
    """``bpfree plan``'s worst case for a study that measured nothing yet."""

    dataset: str
    arch: str
    algorithm: str
    tuning_epochs: int
    runs_epochs: int


@dataclass
class Remaining:
    time_s: float
    measured_studies: int
    unmeasured_studies: list[str]
    forecast: list[Forecast] | None  # for the unmeasured studies (bpfree status adds them: bpfree.workflow.forecast)
    per_study: list[StudyLeft]
    how: str = "trials and runs left x epochs per trial or run so far x the study's measured seconds per epoch"


@dataclass
class Counts:
    studies: dict[str, int]
    runs: dict[str, int]


@dataclass
class CostTotals:
    """The whole grid's row of the cost table (bpfree.report.cost): its time and energy totals."""

    total_time_s: float | None
    tuning_time_s: float | None
    runs_time_s: float | None
    total_energy_j: float | None
    energy_source: str | None
    file: str


@dataclass
class GridStatus:
    """``bpfree status``'s answer; ``dataclasses.asdict`` of it is ``bpfree status --json``."""

    results: str
    config: str | None
    time: float
    state: str  # pending, running, incomplete (some done, nothing running), done
    studies: list[StudyStatus]
    runs: list[RunStatus]
    counts: Counts
    spent: Spent
    remaining: Remaining
    cost_table: CostTotals | None = field(default=None)  # on a finished grid (bpfree status adds it)


def grid_status(config_path: str | None, results: str | Path) -> GridStatus:
    """Every planned study and run as its files say now, what was spent and what remains."""
    results = Path(results)
    if not results.is_dir():
        raise BpfreeError(f"no results folder at {results} (--results: the workflow's results folder)")
    plan = plan_of(config_path, results)
    for study in plan.grid.studies:  # every path read below stays in the results folder
        if not within(results, study_dir(*study.where, results=results)):
            raise BpfreeError(f"study {study} would be read from outside {results}; check its names")
    now = time.time()
    studies = [study_status(s, plan, results, now) for s in plan.grid.studies]
    runs = [run_status(r.study, r.seed, plan, results, now) for r in plan.grid.runs]

    # spent so far: finished trials, done runs, and what running runs' checkpoints hold
    time_tuning = sum(s.time_s for s in studies)
    time_runs = sum(r.time_s for r in runs)
    energies = [x.energy_j for x in [*studies, *runs] if x.energy_j is not None]
    spent = Spent(
        time_tuning,
        time_runs,
        time_tuning + time_runs,
        sum(energies) if energies else None,
        sources_of([x.energy_source for x in [*studies, *runs]]),
    )

    n_done = sum(r.done for r in runs)
    finished = bool(runs) and n_done == len(runs) and all(s.state == "done" for s in studies)
    if finished:
        state = "done"
    elif any(r.state == "running" for r in runs) or any(s.state in ("running", "stale worker") for s in studies):
        state = "running"
    elif not n_done and all(s.state in ("pending", "done") for s in studies) and not any(s.complete for s in studies):
        state = "pending"
    else:
        state = "incomplete"  # some done, nothing running now
    return GridStatus(
        str(results),
        plan.config,
        now,
        state,
        studies,
        runs,
        Counts(_count(s.state for s in studies), _count(r.state.split(" ")[0] for r in runs)),
        spent,
        _remaining(plan, studies, runs),
    )


def _remaining(plan: Plan, studies: list[StudyStatus], runs: list[RunStatus]) -> Remaining:
    """What remains, per study: trials left x epochs per trial, runs left x epochs per run,
    each at the study's measured seconds per epoch (runs' rate for runs, trials' for trials)."""
    remaining_s, unmeasured, per_study = 0.0, [], []
    for s in studies:
        mine = [r for r in runs if (r.dataset, r.arch, r.algorithm) == (s.dataset, s.arch, s.algorithm)]
        done = [r for r in mine if r.done]
        run_rate = _rate(sum(r.time_s for r in done), sum(r.epochs for r in done))
        epochs_per_run = sum(r.epochs for r in done) / len(done) if done else None
        trials_left = max(0, (s.planned or 0) - s.finished - s.running - s.stale) if s.state != "done" else 0
        trial_epochs_left = trials_left * (s.epochs_per_trial or epochs_per_run or 0)
        if s.running or s.stale:  # trials in flight: half their epochs on average
            trial_epochs_left += (s.running + s.stale) * (s.epochs_per_trial or epochs_per_run or 0) / 2
        # a run's epochs: as the study's done runs took, else as its trials took, scaled by
        # how much larger a run's epoch budget is than a trial's
        budget = epochs_per_run
        if budget is None and s.epochs_per_trial and plan.max_epochs and plan.trial_max_epochs:
            budget = s.epochs_per_trial * plan.max_epochs / plan.trial_max_epochs
        run_epochs_left = 0.0
        for r in mine:
            if r.done:
                continue
            if r.state in ("running", "stopped"):
                run_epochs_left += max(1.0, (budget or 0) - r.epochs)  # at least the epoch under way
            else:
                run_epochs_left += budget or 0
        trial_rate = s.s_per_epoch or run_rate
        rate_runs = run_rate or s.s_per_epoch
        left = None
        if s.state == "done" and all(r.done for r in mine):
            left = 0.0
        elif trial_rate is not None and budget is not None:
            left = trial_epochs_left * (trial_rate or 0) + run_epochs_left * (rate_runs or 0)
        if left is None:
            unmeasured.append(s.study)
        else:
            remaining_s += left
        per_study.append(StudyLeft(s.study, left))
    return Remaining(remaining_s, len(studies) - len(unmeasured), unmeasured, None, per_study)


def cost_totals(path: Path, row_name: str) -> CostTotals | None:
    """The cost table's row ``row_name`` (the whole grid's: bpfree.report.cost.ALL), or None."""
    rows = [r for r in csv_rows(path) if r.get("algorithm") == row_name]
    if not rows:
        return None
    row = rows[0]
    return CostTotals(
        number(row.get("total_time_s")),
        number(row.get("tuning_time_s")),
        number(row.get("runs_time_s")),
        number(row.get("total_energy_j")),
        sources_of([row.get("tuning_energy_source"), row.get("runs_energy_source")]),
        str(path),
    )


def _rate(seconds: float, epochs: float) -> float | None:
    return seconds / epochs if epochs > 0 and seconds > 0 else None


def _count(states) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in states:
        out[s] = out.get(s, 0) + 1
    return out
