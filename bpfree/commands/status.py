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
import io
import json
import math
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bpfree.commands.common import add_results_arguments, results_of
from bpfree.core.errors import BpfreeError
from bpfree.core.io import MAX_TABLE_BYTES, decode_utf8, finite, read_limited, read_yaml
from bpfree.core.outputs import (
    BASELINE,
    BEST_PARAMS,
    DEFAULT_CONFIG,
    RUN_CHECKPOINT,
    RUN_METRICS,
    RUN_SPEC,
    STUDY_JOURNAL,
    folder_name,
    run_dir,
    study_dir,
    table_file,
    train_benchmark,
    tune_benchmark,
    within,
)
from bpfree.core.paper import study_settings
from bpfree.core.readback import read_checkpoint_fields
from bpfree.core.record import read_record
from bpfree.core.spec import WorkflowConfig, parse
from bpfree.report.formats import energy_text, hours
from bpfree.workflow.grid import arch_to_slug, slug_to_arch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="where a running (or finished) grid stands: studies, runs, time and energy so far, what remains",
        description=__doc__.split("\n\n")[0],
    )
    add_results_arguments(p, "for what is planned; without one, what the results folder holds")
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
    for i, exp in enumerate(checked.experiments):
        arch = "".join(str(exp.arch).split())
        # each name becomes a folder under --results: none may lead out of it (plan and the
        # workflow refuse an unregistered name; this reads no registry, so checks the path)
        folder_name(exp.algorithm, f"{config_path}: experiments[{i}].algorithm")
        for dataset in exp.datasets:
            folder_name(dataset, f"{config_path}: experiments[{i}].datasets")
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
def _worker_gone(worker: Any) -> bool:
    """A RUNNING trial's worker known to be dead: a process on this host that is no more."""
    if not isinstance(worker, dict) or worker.get("host") != socket.gethostname():
        return False
    pid = worker.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        return False
    try:
        import psutil

        process = psutil.Process(pid)
        started = finite(worker.get("started"))
        return started is not None and abs(process.create_time() - started) > 1.0
    except Exception as err:  # noqa: BLE001 - psutil.NoSuchProcess and its kin
        return type(err).__name__ == "NoSuchProcess"


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


def study_status(key: Key, plan: Plan, results: Path, now: float) -> StudyStatus:
    folder = Path(study_dir(*key.where, results=results))
    planned = plan.study_trials.get(key, plan.n_trials)
    status = StudyStatus(str(key), key.dataset, key.arch, key.algorithm, "pending", planned=planned)
    journal = folder / STUDY_JOURNAL
    if plan.n_trials == 0 or key in plan.untuned:
        status.state = "done"  # no study: the runs take the defaults, or the paper's values
        status.planned = 0
        return status
    if not journal.exists() and not journal.is_symlink():
        return status
    # here, not at the top: optuna is imported only where there is a journal to read
    from optuna.trial import TrialState

    from bpfree.core.journal import read_journal
    from bpfree.tuning.records import trial_cost

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
    for trial in read.trials:
        if trial.state == TrialState.WAITING:
            status.queued += 1
            continue
        if trial.state == TrialState.RUNNING:
            beat = finite(trial.user_attrs.get("heartbeat"))
            stale = _worker_gone(trial.user_attrs.get("worker")) or (beat is not None and now - beat > plan.stale_after)
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
    status.energy_source = _sources(sources)
    status.s_per_epoch = status.time_s / status.epochs if status.epochs > 0 else None
    status.epochs_per_trial = sum(finished_epochs) / len(finished_epochs) if finished_epochs else None
    status.benchmark_s, status.benchmark_max_rss_mb = _benchmarks(
        [Path(tune_benchmark(*key.where, results=results))]
        + sorted(map(Path, glob.glob(tune_benchmark(*key.where, worker="*", results=glob.escape(str(results))))))
    )
    # n_trials counts finished trials, pruned and failed ones included (Optuna's meaning)
    enough = planned is not None and status.complete + status.pruned + status.failed >= planned
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


def run_status(key: Key, seed: int, plan: Plan, results: Path, now: float) -> RunStatus:
    folder = Path(run_dir(*key.where, seed, results=results))
    status = RunStatus(f"{key} seed{seed}", key.dataset, key.arch, key.algorithm, seed, "pending")
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
        bench = Path(train_benchmark(*key.where, seed, results=results))
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
        for row in _csv_rows(path, "\t")[-1:]:  # the last measurement (a rerun appends none; repeats would)
            if _float(row.get("s")) is not None:
                seconds.append(_float(row.get("s")))
            if _float(row.get("max_rss")) is not None:
                rss.append(_float(row.get("max_rss")))
    return (sum(seconds) if seconds else None), (max(rss) if rss else None)


def _csv_rows(path: Path, delimiter: str = ",") -> list[dict[str, Any]]:
    """A CSV file's rows, read within MAX_TABLE_BYTES as UTF-8; none where it is missing or
    cannot be read (Snakemake's benchmarks and the cost table are extras here)."""
    if not path.exists():
        return []
    try:
        text = decode_utf8(read_limited(path, MAX_TABLE_BYTES), str(path))
        return list(csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter))
    except (BpfreeError, csv.Error):
        return []


def _float(value: Any) -> float | None:
    """A finite number from a CSV cell, or None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _sources(values: list[str | None]) -> str | None:
    named = sorted({s for v in values if v for s in str(v).split("+")})
    return "+".join(named) if named else None


# -- the whole grid -------------------------------------------------------------------------------------
def grid_status(config_path: str | None, results: str | Path, forecast: bool = True) -> dict[str, Any]:
    results = Path(results)
    if not results.is_dir():
        raise BpfreeError(f"no results folder at {results} (--results: the workflow's results folder)")
    plan = plan_of(config_path, results)
    for key in plan.studies:  # every path read below stays in the results folder
        if not within(results, study_dir(*key.where, results=results)):
            raise BpfreeError(f"study {key} would be read from outside {results}; check its names")
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
        from bpfree.workflow.forecast import plan_rows

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

    rows = [r for r in _csv_rows(path) if r.get("algorithm") == ALL]
    if not rows:
        return None
    row = rows[0]

    def num(name: str) -> float | None:
        return _float(row.get(name))

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
        extra += [f"{s['queued']} to run again" if s["queued"] else ""]
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
    problems = [(s["study"], s["problem"]) for s in grid["studies"] if s["problem"]]
    problems += [(r["run"], r["problem"]) for r in grid["runs"] if r["problem"]]
    if problems:
        out.append(f"damaged: {len(problems)}")
        out += [f"  {what}: {problem}" for what, problem in problems]
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
    grid = grid_status(args.configfile, results_of(args.results, args.configfile), forecast=not args.no_forecast)
    if args.json:
        json.dump(grid, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(status_text(grid))
    return 0
