"""The forecast of ``bpfree plan``: per planned study, the worst-case epochs of its tuning and of
its final runs, timed by earlier results of the same study where there are any."""

from __future__ import annotations

import glob
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bpfree.core.errors import BpfreeError
from bpfree.core.outputs import RUN_METRICS, STUDY_TRIALS, run_file, study_file
from bpfree.core.paper import paper_row
from bpfree.core.record import read_record
from bpfree.report.cost import read_trials, share
from bpfree.report.formats import hours, percent
from bpfree.tuning.budget import stage_budgets, worst_case_epochs
from bpfree.workflow.grid import arch_to_slug, check_config, expand_runs, expand_studies, study_params, study_tuning


# -- the forecast (bpfree plan) -------------------------------------------------------------------
def plan_rows(
    config: Mapping[str, Any], results: str | Path = "results", protocol: str | None = None
) -> list[dict[str, Any]]:
    """One row per planned study: its worst-case epochs in tuning (trials x a trial's epoch
    budget, every stage counted) and in its final runs (seeds x a run's budget), and the
    seconds per epoch measured by earlier runs (``RESULTS/runs/.../metrics.json``) and
    trials (``RESULTS/tuning/.../study.trials.csv``) of the same study, where there are any.
    ``config``: a workflow config as read from its file; it is checked as the Snakefile
    checks it, and the studies and runs come from the same planner. ``protocol``: forecast
    the studies under this tuning protocol (bpfree or paper) instead of the config's."""
    # here, not at the top: keeps optuna and torch out of the CLI's start-up and the workflow's planning
    from bpfree.tuning.space import search_space

    if protocol is not None:
        config = {**config, "tuning": {**(config.get("tuning") or {}), "protocol": protocol}}
    checked = check_config(dict(config))
    plain = checked.model_dump(mode="json")
    run_budget = checked.early_stopping.max_epochs
    runs = expand_runs(plain)
    results = Path(results)
    rows = []
    modes = study_params(checked)
    for study in expand_studies(plain):
        mode = modes.get(study)
        tuned = checked.tuning.n_trials > 0 and mode == "tuned"  # a paper study has none
        # the study's own section under tuning.protocol (the paper's trial count and length)
        tuning, stopping = study_tuning(checked, study) if tuned else (checked.tuning, checked.early_stopping)
        trial_budget = tuning.trial_policy(stopping).max_epochs  # as the tuning job trains them
        n_trials = tuning.n_trials if tuned else 0
        space = search_space(study.algorithm, tuning.search_spaces) if tuned else None
        seeds = [r for r in runs if r.study == study]
        where = (study.dataset, arch_to_slug(study.arch), study.algorithm)
        per_trial = worst_case_epochs(study.algorithm, study.arch, study.dataset, space, trial_budget) if space else 0
        if mode == "paper":  # the paper's row: its own stage lengths and budget
            row = paper_row(study.algorithm, study.arch, study.dataset)
            per_run = sum(
                stage_budgets(study.algorithm, study.arch, study.dataset, row.params, row.early_stopping.max_epochs)
            )
        else:
            per_run = worst_case_epochs(study.algorithm, study.arch, study.dataset, space, run_budget)
        # earlier measurements of this study: seconds per epoch, and on what device
        run_rates, devices = [], set()
        measured = run_file(RUN_METRICS, *where, "*", results=glob.escape(str(results)))  # RESULTS/runs/.../seed*
        for path in sorted(map(Path, glob.glob(measured))):
            try:
                record = read_record(path)
            except BpfreeError:
                continue  # another bpfree's record: no estimate from it
            if record.epochs > 0 and record.time_per_epoch_s > 0:
                run_rates.append(record.time_per_epoch_s)
                devices.add(record.device)
        trial_rate = None
        table = Path(study_file(STUDY_TRIALS, *where, results=results))
        if table.is_file():
            try:
                trials = read_trials([table])
            except BpfreeError:
                trials = None
            if trials is not None and trials.height:
                epochs = float(trials["epochs"].fill_null(0).sum())
                seconds = float(trials["time_s"].fill_null(0.0).sum())
                trial_rate = seconds / epochs if epochs > 0 else None
        run_rate = sum(run_rates) / len(run_rates) if run_rates else None
        rows.append(
            {
                "dataset": study.dataset,
                "arch": study.arch,
                "algorithm": study.algorithm,
                "protocol": checked.tuning.protocol,
                "trials": n_trials,
                "trial_epochs": per_trial,
                "tuning_epochs": n_trials * per_trial,
                "runs": len(seeds),
                "run_epochs": per_run,
                "runs_epochs": len(seeds) * per_run,
                "s_per_epoch_tuning": trial_rate if trial_rate is not None else run_rate,
                "s_per_epoch_runs": run_rate if run_rate is not None else trial_rate,
                "measured_on": ", ".join(sorted(devices)) or ("earlier trials" if trial_rate else None),
            }
        )
    return rows


# -- the wall time: every job of the workflow, fixed costs included --------------------------------
def read_benchmark(path: str | Path) -> float | None:
    """The wall seconds of a Snakemake benchmark file (its ``s`` column), or None."""
    try:
        with open(path, encoding="utf-8") as f:
            header, first = f.readline().rstrip("\n").split("\t"), f.readline().rstrip("\n").split("\t")
        value = float(first[header.index("s")])
    except (OSError, ValueError, IndexError):
        return None
    return value if value >= 0 else None


def startup_probe() -> float:
    """This machine's start-up of a job process: a Python importing bpfree's run engine and
    torch (what every train, tune and spec job pays before its work), timed once."""
    import subprocess
    import sys
    import time

    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import bpfree.engine.run"], capture_output=True, check=False)
    return time.perf_counter() - t0


def wall_forecast(
    config: Mapping[str, Any], results: str | Path = "results", cores: int = 1, probe=startup_probe
) -> dict[str, Any]:
    """The workflow's expected wall time on ``cores`` cores, job by job: each job's wall time as
    Snakemake's benchmark of an earlier run of it measured it, else as earlier jobs of its kind
    measured it (a run's: its study's other seeds, or its epochs at the measured seconds per epoch
    plus the fixed cost measured for train jobs), else a job process's start-up on this machine
    (``probe``, timed once, only if some job needs it). The jobs run ``cores // threads`` at a
    time (a train or tune job's threads: ``job_threads``, else every core), the others one core
    each; the wall time is their core-seconds over the cores."""
    from bpfree.core.outputs import FIGURE_NAMES, report_benchmark, spec_benchmark, train_benchmark, tune_benchmark

    checked = check_config(dict(config))
    plain = checked.model_dump(mode="json")
    results = Path(results)
    threads = min(checked.job_threads or cores, cores)
    rows = {(r["dataset"], r["arch"], r["algorithm"]): r for r in plan_rows(config, results)}
    started: list[float] = []

    def fixed() -> float:
        if not started:
            started.append(probe())
        return started[0]

    jobs: list[tuple[str, float | None, int]] = []  # (kind, seconds or None: estimated, threads)
    train_fixed = []
    for run in expand_runs(plain):
        where = (run.dataset, run.arch_slug, run.algorithm, run.seed)
        measured = read_benchmark(train_benchmark(*where, results=results))
        record_path = Path(run_file(RUN_METRICS, *where, results=results))
        if measured is not None and record_path.is_file():
            try:
                train_fixed.append(measured - read_record(record_path).train_time_s)
            except BpfreeError:
                pass
    fixed_train = sorted(train_fixed)[len(train_fixed) // 2] if train_fixed else None
    for run in expand_runs(plain):
        where = (run.dataset, run.arch_slug, run.algorithm, run.seed)
        study = (run.dataset, run.arch, run.algorithm)
        seconds = read_benchmark(train_benchmark(*where, results=results))
        if seconds is None:
            others = [
                read_benchmark(p)
                for p in glob.glob(train_benchmark(*where[:3], "*", results=glob.escape(str(results))))
            ]
            others = [o for o in others if o is not None]
            row = rows.get(study)
            if others:
                seconds = sum(others) / len(others)
            elif row is not None and row["s_per_epoch_runs"] is not None:
                seconds = row["s_per_epoch_runs"] * row["run_epochs"] + (
                    fixed_train if fixed_train is not None else fixed()
                )
        jobs.append(("train", seconds, threads))
        spec = read_benchmark(spec_benchmark(*where, results=results))
        jobs.append(("spec", spec, 1))
    for (dataset, arch, algorithm), row in rows.items():
        if row["trials"] == 0:
            continue
        slug = arch_to_slug(arch)
        seconds = read_benchmark(tune_benchmark(dataset, slug, algorithm, results=results))
        if seconds is None and row["s_per_epoch_tuning"] is not None:
            seconds = row["s_per_epoch_tuning"] * row["tuning_epochs"] + fixed()
        jobs.append(("tune", seconds, threads))
    for name in ["aggregate", *(f"fig_{f}" for f in FIGURE_NAMES)]:
        jobs.append(("report", read_benchmark(report_benchmark(name, results=results)), 1))
    by_kind: dict[str, list[float]] = {}
    for kind, seconds, _ in jobs:
        if seconds is not None:
            by_kind.setdefault(kind, []).append(seconds)
    timed = sum(seconds is not None for _, seconds, _ in jobs)
    core_seconds, unknown = 0.0, 0
    for kind, seconds, used in jobs:
        if seconds is None:  # as its kind's measured jobs, else a start-up
            if kind in by_kind:
                seconds = sum(by_kind[kind]) / len(by_kind[kind])
            else:
                seconds = fixed()
                unknown += kind in ("train", "tune")  # its training unknown: counted as its start-up only
        core_seconds += seconds * used
    snakemake_s = fixed()  # Snakemake's own start: it imports bpfree (and torch) to plan the grid
    return {
        "cores": cores,
        "jobs": len(jobs),
        "timed_jobs": timed,
        "core_seconds": core_seconds,
        "wall_s": snakemake_s + core_seconds / cores,
        "startup_s": started[0] if started else None,
        "untimed_training_jobs": unknown,
    }


def wall_text(forecast: dict[str, Any]) -> str:
    timed, jobs = forecast["timed_jobs"], forecast["jobs"]
    basis = (
        "every job timed by an earlier run's Snakemake benchmark"
        if timed == jobs
        else f"{timed} of {jobs} jobs timed by earlier runs' Snakemake benchmarks, the rest from their kind's "
        f"or a job's start-up on this machine ({forecast['startup_s']:.1f} s)"
    )
    if forecast["untimed_training_jobs"]:
        return (
            f"wall time on {forecast['cores']} cores: at least {hours(forecast['wall_s'])} for {jobs} jobs: their "
            f"fixed costs ({basis}); the training of {forecast['untimed_training_jobs']} train and tune jobs is "
            "not known before an earlier run measured it\n"
        )
    return (
        f"expected wall time on {forecast['cores']} cores: {hours(forecast['wall_s'])} for {jobs} jobs, fixed costs "
        f"included ({basis}; early stopping as the earlier runs stopped)\n"
    )


def plan_text(rows: list[dict[str, Any]], name: str) -> str:
    """The forecast as a reader sees it: phase totals first, then one line per study."""

    def seconds(row: dict[str, Any], phase: str) -> float | None:
        rate = row[f"s_per_epoch_{phase}"]
        return None if rate is None else rate * row[f"{phase}_epochs"]

    def total(phase: str) -> tuple[int, float | None, int]:
        epochs = sum(r[f"{phase}_epochs"] for r in rows)
        timed = [seconds(r, phase) for r in rows if r[f"s_per_epoch_{phase}"] is not None]
        return epochs, (sum(timed) if timed else None), len(timed)

    studies = len(rows)
    n_runs = sum(r["runs"] for r in rows)
    trials = sum(r["trials"] for r in rows)
    protocol = rows[0]["protocol"] if rows else "bpfree"
    lines = [
        f"{name}, tuning protocol {protocol}: {studies} studies, {n_runs} final runs; worst case (every stage "
        "of every trial and run at its epoch budget, no early stop, no pruning; pruned and failed trials "
        "are among the N):",
        f"{'phase':<8} {'what':<34} {'epochs (worst case)':>20} {'time (from measured s/epoch)':>30}",
    ]
    for phase, what in (("tuning", f"{studies} studies, {trials} trials"), ("runs", f"{n_runs} runs")):
        epochs, secs, known = total(phase)
        estimate = "no earlier results" if secs is None else f"{hours(secs)} ({known} of {studies} studies measured)"
        lines.append(f"{phase:<8} {what:<34} {epochs:>20,} {estimate:>30}")
    t_epochs, t_secs, _ = total("tuning")
    r_epochs, r_secs, _ = total("runs")
    tuning_share = percent(share(t_epochs, t_epochs + r_epochs))
    lines.append(f"{'total':<8} {'tuning: ' + tuning_share + ' of the epochs':<34} {t_epochs + r_epochs:>20,}")
    lines.append("")
    lines.append(
        f"{'dataset':<14} {'arch':<24} {'algorithm':<10} {'trials':>6} {'trial ep':>8} {'tuning ep':>10} "
        f"{'run ep':>7} {'runs ep':>8} {'s/epoch':>8} {'est. time':>10}"
    )
    for r in rows:
        secs = [s for s in (seconds(r, "tuning"), seconds(r, "runs")) if s is not None]
        rate = r["s_per_epoch_runs"] if r["s_per_epoch_runs"] is not None else r["s_per_epoch_tuning"]
        lines.append(
            f"{r['dataset']:<14} {r['arch']:<24} {r['algorithm']:<10} {r['trials']:>6} {r['trial_epochs']:>8} "
            f"{r['tuning_epochs']:>10,} {r['run_epochs']:>7} {r['runs_epochs']:>8,} "
            f"{'–' if rate is None else f'{rate:.3g}':>8} {hours(sum(secs)) if secs else '–':>10}"
        )
    devices = sorted({r["measured_on"] for r in rows if r["measured_on"]})
    if devices:
        lines.append(f"seconds per epoch measured on: {'; '.join(devices)} (another device runs at another speed)")
    return "\n".join(lines) + "\n"
