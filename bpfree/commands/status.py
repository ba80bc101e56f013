"""``bpfree status``: where a workflow's grid stands, read from its results folder alone.

Read while the workflow runs, from any node that sees the shared filesystem: every file is
read, none is written or locked (a study's journal is parsed line by line, as Optuna's
journal backend replays it; a run's checkpoint is read for its epoch history without
unpickling a tensor). No torch import: quick on a grid of hundreds of runs.

- per study: finished / planned trials (pruned and failed ones among them, and beside), the best
  value so far and its state: pending, running, waiting (a worker between trials, or none
  running), stale worker (a RUNNING trial whose worker is gone: dead process on this host,
  or no heartbeat for ``tuning.stale_after`` seconds), done;
- per run: done (its metrics.json, with Snakemake's benchmark beside the run's own time),
  running (epoch n from its checkpoint), pending;
- the time and energy spent so far (each energy with its source) and an estimate of what
  remains from the measured seconds per epoch of finished work; where a study has measured
  nothing yet, ``bpfree plan``'s forecast (its worst-case epochs) instead;
- on a finished grid: done, with the cost table's totals (results/tables/cost.csv).
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import math
import pickle
import socket
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bpfree.core.errors import BpfreeError
from bpfree.core.io import read_json, read_yaml
from bpfree.core.outputs import (
    BASELINE,
    BEST_PARAMS,
    RUN_CHECKPOINT,
    RUN_METRICS,
    RUN_SPEC,
    STUDY_JOURNAL,
    run_dir,
    study_dir,
    table_file,
    train_benchmark,
    tune_benchmark,
)
from bpfree.core.paper import study_settings
from bpfree.core.spec import WorkflowConfig, parse
from bpfree.report.formats import energy_text, hours
from bpfree.workflow.grid import arch_to_slug, slug_to_arch

# Optuna's journal operations (optuna.storages.journal._storage.JournalOperation)
CREATE_STUDY, CREATE_TRIAL, SET_TRIAL_STATE_VALUES = 0, 4, 6
SET_TRIAL_INTERMEDIATE_VALUE, SET_TRIAL_USER_ATTR = 7, 8
TRIAL_STATES = {0: "running", 1: "complete", 2: "pruned", 3: "failed", 4: "waiting"}
MAXIMIZE = 2  # optuna.study.StudyDirection.MAXIMIZE
DEFAULT_CONFIG = "config/config.yaml"  # the Snakefile's, when --configfile is not given


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="where a running (or finished) grid stands: studies, runs, time and energy so far, what remains",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "--configfile",
        help=f"the workflow config, for what is planned (default: {DEFAULT_CONFIG} where it exists; "
        "without one, what the results folder holds)",
    )
    p.add_argument("--results", default="results", help="the workflow's results folder (default: results)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    p.add_argument(
        "--no-forecast",
        action="store_true",
        help="skip bpfree plan's forecast for studies that measured nothing yet (it imports torch: seconds)",
    )
    p.set_defaults(func=run)


# -- what is planned ----------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Key:
    dataset: str
    arch: str  # mlp:64,64
    algorithm: str

    @property
    def where(self) -> tuple[str, str, str]:
        """(dataset, arch slug, algorithm): the study's part of its paths (bpfree.core.outputs)."""

        return self.dataset, arch_to_slug(self.arch), self.algorithm

    def __str__(self) -> str:
        return f"{self.dataset} {self.arch} {self.algorithm}"


@dataclass
class Plan:
    studies: list[Key]
    seeds: dict[Key, list[int]]
    n_trials: int | None  # None: no config (what is on disk only)
    stale_after: float
    max_epochs: int | None  # a run's epoch budget per stage (early_stopping.max_epochs)
    trial_max_epochs: int | None = None  # a trial's (tuning.max_epochs, at most the run's)
    config: dict[str, Any] | None = None
    untuned: set[Key] = field(default_factory=set)  # params: paper: the paper's values, no study
    study_trials: dict[Key, int] = field(default_factory=dict)  # per study (tuning.protocol: paper)


def plan_of(config_path: str | None, results: Path) -> Plan:
    """The grid the Snakefile would plan from the config (checked as the spec checks it,
    without the torch-side checks), or, without a config, the studies and runs on disk."""

    if config_path is None and Path(DEFAULT_CONFIG).is_file():
        config_path = DEFAULT_CONFIG
    if config_path is None:
        return _plan_on_disk(results)
    if not Path(config_path).is_file():
        raise BpfreeError(f"--configfile {config_path}: no such file")
    raw = read_yaml(config_path)
    if not isinstance(raw, dict):
        raise BpfreeError(f"{config_path} is not a workflow config (not a mapping)")
    try:
        checked = parse(WorkflowConfig, dict(raw))
    except BpfreeError as err:
        raise BpfreeError(f"{config_path}: {err}") from None
    studies, untuned = set(), set()
    seeds: dict[Key, set[int]] = {}
    for exp in checked.experiments:
        arch = "".join(str(exp.arch).split())
        for dataset in exp.datasets:
            for algorithm in dict.fromkeys([exp.algorithm, BASELINE]):
                studies.add(Key(dataset, arch, algorithm))
                seeds.setdefault(Key(dataset, arch, algorithm), set()).update(exp.seeds or checked.seeds)
                if exp.params == "paper":
                    untuned.add(Key(dataset, arch, algorithm))
    tuning = checked.tuning
    per_study = {}
    if tuning.protocol == "paper" and tuning.n_trials > 0:  # each study's own count
        for key in studies - untuned:
            settings, _ = study_settings(tuning, checked.early_stopping, key.algorithm, key.arch, key.dataset)
            per_study[key] = settings.n_trials
    return Plan(
        sorted(studies),
        {k: sorted(seeds[k]) for k in studies},
        tuning.n_trials,
        float(tuning.stale_after),
        checked.early_stopping.max_epochs,
        min(tuning.max_epochs or checked.early_stopping.max_epochs, checked.early_stopping.max_epochs),
        dict(raw),
        untuned,
        per_study,
    )


def _plan_on_disk(results: Path) -> Plan:
    seeds: dict[Key, set[int]] = {}
    root = glob.escape(str(results))  # the patterns' own * only
    for d in sorted(map(Path, glob.glob(run_dir("*", "*", "*", "*", results=root)))):
        key = Key(d.parent.parent.parent.name, slug_to_arch(d.parent.parent.name), d.parent.name)
        if d.name.removeprefix("seed").isdigit():
            seeds.setdefault(key, set()).add(int(d.name.removeprefix("seed")))
    for d in sorted(map(Path, glob.glob(study_dir("*", "*", "*", results=root)))):
        if d.is_dir():
            seeds.setdefault(Key(d.parent.parent.name, slug_to_arch(d.parent.name), d.name), set())
    return Plan(sorted(seeds), {k: sorted(v) for k, v in seeds.items()}, None, 1800.0, None)


# -- a study, from its journal ---------------------------------------------------------------------
@dataclass
class Trial:
    state: str
    value: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    steps: int = 0  # intermediate values reported (epochs so far)
    start: float | None = None  # epoch seconds


def read_journal(path: Path) -> tuple[list[Trial], bool]:
    """The study's trials, replayed from Optuna's journal as its backend replays it (updates
    to a finished trial are ignored); a half-written last line (a worker appending) is
    skipped. Returns (trials, maximize)."""
    from datetime import datetime

    trials: list[Trial] = []
    maximize = True
    with open(path, "rb") as f:
        for raw in f:
            try:
                log = json.loads(raw)
            except ValueError:
                continue  # the line a worker is writing
            op = log.get("op_code")
            if op == CREATE_STUDY:
                maximize = MAXIMIZE in (log.get("directions") or [MAXIMIZE])
            elif op == CREATE_TRIAL:
                start = log.get("datetime_start")
                trials.append(
                    Trial(
                        TRIAL_STATES.get(log.get("state", 0), "running"),
                        log.get("value"),
                        dict(log.get("user_attrs") or {}),
                        start=datetime.fromisoformat(start).timestamp() if start else None,
                    )
                )
            elif op in (SET_TRIAL_STATE_VALUES, SET_TRIAL_INTERMEDIATE_VALUE, SET_TRIAL_USER_ATTR):
                tid = log.get("trial_id")
                if not isinstance(tid, int) or not 0 <= tid < len(trials):
                    continue
                trial = trials[tid]
                if trial.state in ("complete", "pruned", "failed"):
                    continue
                if op == SET_TRIAL_STATE_VALUES:
                    trial.state = TRIAL_STATES.get(log.get("state"), trial.state)
                    if log.get("values"):
                        trial.value = log["values"][0]
                    if log.get("datetime_start") and trial.start is None:
                        trial.start = datetime.fromisoformat(log["datetime_start"]).timestamp()
                elif op == SET_TRIAL_INTERMEDIATE_VALUE:
                    trial.steps += 1
                else:
                    trial.attrs.update(log.get("user_attr") or {})
    return trials, maximize


def _worker_gone(worker: Any) -> bool:
    """A RUNNING trial's worker known to be dead: a process on this host that is no more."""
    if not isinstance(worker, dict) or worker.get("host") != socket.gethostname():
        return False
    pid = worker.get("pid")
    if not isinstance(pid, int):
        return False
    try:
        import psutil

        process = psutil.Process(pid)
        started = worker.get("started")
        return started is not None and abs(process.create_time() - float(started)) > 1.0
    except Exception as err:  # noqa: BLE001 - psutil.NoSuchProcess and its kin
        return type(err).__name__ == "NoSuchProcess"


def trial_cost(trial: Trial) -> tuple[float | None, float | None, str | None, float | None]:
    """(epochs, time_s, energy_j, source) as bpfree.tuning.records.trial_records counts them."""
    attrs = trial.attrs
    epochs = attrs.get("epochs", trial.steps or None)
    time_s = attrs.get("time_s", attrs.get("train_time_s"))
    if time_s is None and trial.start is not None and attrs.get("heartbeat") is not None:
        time_s = max(0.0, float(attrs["heartbeat"]) - trial.start)
    return epochs, time_s, attrs.get("energy_j"), attrs.get("energy_source")


@dataclass
class StudyStatus:
    study: str
    dataset: str
    arch: str
    algorithm: str
    state: str  # pending, running, waiting, stale worker, done
    complete: int = 0
    planned: int | None = None
    pruned: int = 0
    failed: int = 0
    running: int = 0
    stale: int = 0
    best: float | None = None
    epochs: float = 0.0
    time_s: float = 0.0
    energy_j: float | None = None
    energy_source: str | None = None
    s_per_epoch: float | None = None
    epochs_per_trial: float | None = None  # mean over finished trials
    benchmark_s: float | None = None  # Snakemake's benchmark of the tune job(s)
    benchmark_max_rss_mb: float | None = None


def study_status(key: Key, plan: Plan, results: Path, now: float) -> StudyStatus:
    folder = Path(study_dir(*key.where, results=results))
    planned = plan.study_trials.get(key, plan.n_trials)
    status = StudyStatus(str(key), key.dataset, key.arch, key.algorithm, "pending", planned=planned)
    journal = folder / STUDY_JOURNAL
    if plan.n_trials == 0 or key in plan.untuned:
        status.state = "done"  # no study: the runs take the defaults, or the paper's values
        status.planned = 0
        return status
    if not journal.is_file():
        return status
    trials, maximize = read_journal(journal)
    values, energies, sources, finished_epochs = [], [], [], []
    for trial in trials:
        if trial.state == "running":
            stale = _worker_gone(trial.attrs.get("worker")) or (
                trial.attrs.get("heartbeat") is not None and now - float(trial.attrs["heartbeat"]) > plan.stale_after
            )
            status.stale += stale
            status.running += not stale
            continue
        if trial.state not in ("complete", "pruned", "failed"):
            continue
        setattr(status, trial.state, getattr(status, trial.state) + 1)
        if trial.state == "complete" and trial.value is not None and math.isfinite(trial.value):
            values.append(trial.value)
        epochs, time_s, energy, source = trial_cost(trial)
        status.epochs += float(epochs or 0)
        status.time_s += float(time_s or 0.0)
        if epochs:
            finished_epochs.append(float(epochs))
        if energy is not None:
            energies.append(float(energy))
            sources.append(source)
    status.best = (max(values) if maximize else min(values)) if values else None
    status.energy_j = sum(energies) if energies else None
    status.energy_source = _sources(sources)
    status.s_per_epoch = status.time_s / status.epochs if status.epochs > 0 else None
    status.epochs_per_trial = sum(finished_epochs) / len(finished_epochs) if finished_epochs else None
    status.benchmark_s, status.benchmark_max_rss_mb = _benchmarks(
        [Path(tune_benchmark(*key.where, results=results))]
        + sorted(map(Path, glob.glob(tune_benchmark(*key.where, worker="*", results=glob.escape(str(results))))))
    )
    # n_trials counts finished trials, pruned and failed ones included (Optuna's meaning)
    enough = planned is not None and status.complete + status.pruned + status.failed >= planned
    if enough and (folder / BEST_PARAMS).is_file():
        status.state = "done"
    elif status.running:
        status.state = "running"
    elif status.stale:
        status.state = "stale worker"
    else:
        status.state = "waiting"
    return status


# -- a run, from its folder ---------------------------------------------------------------------------
class _Skeleton(pickle.Unpickler):
    """Unpickles a torch checkpoint's plain data without torch: every tensor (and anything
    but builtins) becomes None; nothing is constructed that the file names."""

    SAFE = {("collections", "OrderedDict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.SAFE:
            return super().find_class(module, name)
        return _nothing

    def persistent_load(self, pid: Any) -> None:
        return None


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def read_checkpoint(path: Path) -> dict[str, Any] | None:
    """The plain fields of a run's checkpoint (``torch.save``'s zip: its ``data.pkl``), or
    None where it cannot be read (being replaced, another format)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            data = _Skeleton(archive.open(name)).load()
    except (OSError, StopIteration, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, ValueError, TypeError):
        return None
    return data if isinstance(data, dict) else None


@dataclass
class RunStatus:
    run: str
    dataset: str
    arch: str
    algorithm: str
    seed: int
    state: str  # pending, running, done (or the run's own status: diverged, failed, ...)
    epochs: int = 0
    stage: str | None = None
    max_epochs_per_stage: int | None = None
    time_s: float = 0.0
    energy_j: float | None = None
    energy_source: str | None = None
    updated_s_ago: float | None = None
    benchmark_s: float | None = None  # Snakemake's benchmark: the job's wall time
    benchmark_max_rss_mb: float | None = None


def run_status(key: Key, seed: int, plan: Plan, results: Path, now: float) -> RunStatus:
    folder = Path(run_dir(*key.where, seed, results=results))
    status = RunStatus(f"{key} seed{seed}", key.dataset, key.arch, key.algorithm, seed, "pending")
    status.max_epochs_per_stage = plan.max_epochs
    metrics = folder / RUN_METRICS
    if metrics.is_file():
        try:
            record = read_json(metrics, "run metrics")  # bounded, as every reader of metrics.json
        except BpfreeError:
            record = None
        if isinstance(record, dict):
            status.state = "done" if record.get("status", "ok") == "ok" else f"done ({record.get('status')})"
            status.epochs = int(record.get("epochs") or 0)
            status.time_s = float(record.get("train_time_s") or 0.0)
            status.energy_j = record.get("energy_j")
            status.energy_source = record.get("energy_source")
            bench = Path(train_benchmark(*key.where, seed, results=results))
            status.benchmark_s, status.benchmark_max_rss_mb = _benchmarks([bench])
            return status
    checkpoint = folder / RUN_CHECKPOINT
    if checkpoint.is_file():
        status.state = "running"
        status.max_epochs_per_stage = _spec_max_epochs(folder / RUN_SPEC) or plan.max_epochs
        try:
            status.updated_s_ago = max(0.0, now - checkpoint.stat().st_mtime)
        except OSError:
            pass
        data = read_checkpoint(checkpoint)
        if data is not None:
            history = [h for h in data.get("history") or [] if isinstance(h, dict)]
            status.epochs = len(history)
            status.stage = history[-1].get("stage") if history else None
            status.time_s = float(data.get("train_time_s") or 0.0)
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
        try:
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f, delimiter="\t"))
        except OSError:
            continue
        for row in rows[-1:]:  # the last measurement (a rerun appends none; repeats would)
            try:
                seconds.append(float(row["s"]))
                if row.get("max_rss") not in (None, "", "NA", "-"):
                    rss.append(float(row["max_rss"]))
            except (KeyError, ValueError):
                continue
    return (sum(seconds) if seconds else None), (max(rss) if rss else None)


def _sources(values: list[str | None]) -> str | None:
    named = sorted({s for v in values if v for s in str(v).split("+")})
    return "+".join(named) if named else None


# -- the whole grid -------------------------------------------------------------------------------------
def grid_status(config_path: str | None, results: str | Path, forecast: bool = True) -> dict[str, Any]:
    results = Path(results)
    if not results.is_dir():
        raise BpfreeError(f"no results folder at {results} (--results: the workflow's results folder)")
    plan = plan_of(config_path, results)
    now = time.time()
    studies = [study_status(k, plan, results, now) for k in plan.studies]
    runs = [run_status(k, s, plan, results, now) for k in plan.studies for s in plan.seeds.get(k, [])]

    # spent so far: finished trials, done runs, and what running runs' checkpoints hold
    time_tuning = sum(s.time_s for s in studies)
    time_runs = sum(r.time_s for r in runs)
    energies = [s.energy_j for s in studies if s.energy_j is not None] + [
        r.energy_j for r in runs if r.energy_j is not None
    ]
    spent = {
        "tuning_time_s": time_tuning,
        "runs_time_s": time_runs,
        "time_s": time_tuning + time_runs,
        "energy_j": sum(energies) if energies else None,
        "energy_source": _sources([s.energy_source for s in studies] + [r.energy_source for r in runs]),
        "note": "running runs count up to their last checkpoint; running trials are not counted",
    }

    # what remains, per study: trials left x epochs per trial, runs left x epochs per run,
    # each at the study's measured seconds per epoch (runs' rate for runs, trials' for trials)
    remaining_s, unmeasured = 0.0, []
    per_study = []
    for s in studies:
        key = (s.dataset, s.arch, s.algorithm)
        mine = [r for r in runs if (r.dataset, r.arch, r.algorithm) == key]
        done = [r for r in mine if r.state.startswith("done")]
        run_rate = _rate(sum(r.time_s for r in done), sum(r.epochs for r in done))
        epochs_per_run = sum(r.epochs for r in done) / len(done) if done else None
        trials_left = (
            max(0, (s.planned or 0) - s.complete - s.pruned - s.failed - s.running - s.stale)
            if s.state != "done"
            else 0
        )
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
            if r.state.startswith("done"):
                continue
            if r.state in ("running", "stopped"):
                run_epochs_left += max(1.0, (budget or 0) - r.epochs)  # at least the epoch under way
            else:
                run_epochs_left += budget or 0
        trial_rate = s.s_per_epoch or run_rate
        rate_runs = run_rate or s.s_per_epoch
        measured = trial_rate is not None and budget is not None
        left = None
        nothing_left = s.state == "done" and all(r.state.startswith("done") for r in mine)
        if nothing_left:
            left = 0.0
        elif measured:
            left = trial_epochs_left * (trial_rate or 0) + run_epochs_left * (rate_runs or 0)
        if left is None:
            unmeasured.append(s)
        else:
            remaining_s += left
        per_study.append({"study": s.study, "remaining_s": left})

    forecast_rows = None
    if unmeasured and forecast and plan.config is not None:
        # here, not at the top: keeps polars out of the CLI's start-up
        from bpfree.workflow.plan import plan_rows

        wanted = {(s.dataset, s.arch, s.algorithm) for s in unmeasured}
        forecast_rows = [
            {k: row[k] for k in ("dataset", "arch", "algorithm", "tuning_epochs", "runs_epochs")}
            for row in plan_rows(plan.config, results)
            if (row["dataset"], str(row["arch"]), row["algorithm"]) in wanted
        ]
    remaining = {
        "time_s": remaining_s,
        "measured_studies": len(studies) - len(unmeasured),
        "unmeasured_studies": [s.study for s in unmeasured],
        "forecast": forecast_rows,
        "per_study": per_study,
        "how": "trials and runs left x epochs per trial or run so far x the study's measured seconds per epoch",
    }

    n_done = sum(r.state.startswith("done") for r in runs)
    finished = bool(runs) and n_done == len(runs) and all(s.state == "done" for s in studies)
    cost_totals = _cost_totals(Path(table_file("cost", "csv", results=results))) if finished else None
    if finished:
        state = "done"
    elif any(r.state == "running" for r in runs) or any(s.state in ("running", "stale worker") for s in studies):
        state = "running"
    elif not n_done and all(s.state in ("pending", "done") for s in studies) and not any(s.complete for s in studies):
        state = "pending"
    else:
        state = "incomplete"  # some done, nothing running now
    return {
        "results": str(results),
        "config": config_path or (DEFAULT_CONFIG if plan.config is not None else None),
        "time": now,
        "state": state,
        "studies": [asdict(s) for s in studies],
        "runs": [asdict(r) for r in runs],
        "counts": {
            "studies": _count(s.state for s in studies),
            "runs": _count(r.state.split(" ")[0] for r in runs),
        },
        "spent": spent,
        "remaining": remaining,
        "cost_table": cost_totals,
    }


def _rate(seconds: float, epochs: float) -> float | None:
    return seconds / epochs if epochs > 0 and seconds > 0 else None


def _count(states) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in states:
        out[s] = out.get(s, 0) + 1
    return out


def _cost_totals(path: Path) -> dict[str, Any] | None:
    """The whole grid's row of cost.csv (bpfree.report.cost): its time and energy totals."""
    # here, not at the top: keeps polars out of the CLI's start-up
    from bpfree.report.cost import ALL

    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("algorithm") == ALL]
    except OSError:
        return None
    if not rows:
        return None
    row = rows[0]

    def num(name: str) -> float | None:
        try:
            return float(row[name]) if row.get(name) not in (None, "") else None
        except ValueError:
            return None

    return {
        "total_time_s": num("total_time_s"),
        "tuning_time_s": num("tuning_time_s"),
        "runs_time_s": num("runs_time_s"),
        "total_energy_j": num("total_energy_j"),
        "energy_source": _sources([row.get("tuning_energy_source"), row.get("runs_energy_source")]),
        "file": str(path),
    }


# -- shown ----------------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def status_text(grid: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(grid["time"]))
    out = [f"bpfree status: {grid['results']} (config: {grid['config'] or 'none; what is on disk'}) at {when}"]
    counts = grid["counts"]
    out.append(f"state: {grid['state']}")
    out.append("")
    out.append("studies: " + ", ".join(f"{n} {s}" for s, n in sorted(counts["studies"].items())))
    rows = []
    for s in grid["studies"]:
        finished = s["complete"] + s["pruned"] + s["failed"]
        trials = f"{finished}/{'?' if s['planned'] is None else s['planned']}"
        if s["planned"] == 0:
            trials = "no study"  # tuning off, or params: paper
        extra = [f"{s['pruned']} pruned" if s["pruned"] else "", f"{s['failed']} failed" if s["failed"] else ""]
        extra += [f"{s['running']} running" if s["running"] else "", f"{s['stale']} stale" if s["stale"] else ""]
        bench = "–" if s["benchmark_s"] is None else hours(s["benchmark_s"])
        rows.append(
            [
                s["study"],
                s["state"],
                trials + (f" ({', '.join(e for e in extra if e)})" if any(extra) else ""),
                "–" if s["best"] is None else f"{s['best']:.4f}",
                hours(s["time_s"]) if s["time_s"] else "–",
                energy_text(s["energy_j"], s["energy_source"]) if s["energy_j"] is not None else "–",
                bench,
            ]
        )
    out += _table(["study", "state", "trials", "best", "time", "energy", "job (benchmark)"], rows)
    out.append("")
    out.append("runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts["runs"].items())))
    rows = []
    for r in grid["runs"]:
        if r["state"] in ("running", "stopped"):
            cap = r["max_epochs_per_stage"]
            epochs = (
                f"epoch {r['epochs']}"
                + (f" of at most {cap}" if cap else "")
                + (f" ({r['stage']}{', per stage' if r['stage'] not in (None, 'train') else ''})" if r["stage"] else "")
            )
            if r["updated_s_ago"] is not None:
                epochs += f", {hours(r['updated_s_ago'])} ago"
        else:
            epochs = str(r["epochs"]) if r["epochs"] else "–"
        bench = "–"
        if r["benchmark_s"] is not None:
            bench = hours(r["benchmark_s"]) + (
                f", {r['benchmark_max_rss_mb']:.0f} MB" if r["benchmark_max_rss_mb"] is not None else ""
            )
        rows.append(
            [
                r["run"],
                r["state"],
                epochs,
                hours(r["time_s"]) if r["time_s"] else "–",
                energy_text(r["energy_j"], r["energy_source"]) if r["energy_j"] is not None else "–",
                bench,
            ]
        )
    out += _table(["run", "state", "epochs", "time", "energy", "job (benchmark)"], rows)
    out.append("")
    spent = grid["spent"]
    out.append(
        f"spent so far: {hours(spent['time_s'])} (tuning {hours(spent['tuning_time_s'])}, "
        f"runs {hours(spent['runs_time_s'])}), energy {energy_text(spent['energy_j'], spent['energy_source'])}"
    )
    remaining = grid["remaining"]
    if grid["state"] == "done":
        cost = grid["cost_table"]
        if cost:
            out.append(
                f"done. cost table ({cost['file']}): {hours(cost['total_time_s'])} "
                f"(tuning {hours(cost['tuning_time_s'])}, runs {hours(cost['runs_time_s'])}), "
                f"energy {energy_text(cost['total_energy_j'], cost['energy_source'])}"
            )
        else:
            out.append("done. (no cost table yet: the aggregate rule writes results/tables/cost.csv)")
    else:
        line = f"remaining (estimate from measured s/epoch): about {hours(remaining['time_s'])}"
        if remaining["unmeasured_studies"]:
            n = len(remaining["unmeasured_studies"])
            line += f" for the {remaining['measured_studies']} studies measured; {n} not measured yet"
            if remaining["forecast"]:
                epochs = sum(r["tuning_epochs"] + r["runs_epochs"] for r in remaining["forecast"])
                line += f": at most {epochs:,} epochs more (bpfree plan's worst case)"
        out.append(line)
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> int:
    grid = grid_status(args.configfile, args.results, forecast=not args.no_forecast)
    if args.json:
        json.dump(grid, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(status_text(grid))
    return 0
