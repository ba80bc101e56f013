"""bpfree.progress: one grid for the workflow, tuning and ``bpfree status`` (the same config
gives each the same studies, runs and trial counts), one decision on a trial's worker for the
tuning workers and status (zombies and requeued SLURM runs included), each fact defined once."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import optuna
import psutil
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState
from test_status import CONFIG, journal_study
from test_workflow import snakemake

from bpfree.cli import main
from bpfree.core.errors import BpfreeError
from bpfree.core.paper import study_settings
from bpfree.progress.grid import arch_to_slug, canonical_arch
from bpfree.progress.workers import stale_reason, worker_identity
from bpfree.workflow.grid import check_config, expand_grid, expand_runs

PACKAGE = Path(__file__).resolve().parents[1] / "bpfree"

# per-experiment seeds (a twin shared by two experiments trains the seeds of both), one
# experiment on the paper's values (no study), an arch written with a leading zero
GRID_CONFIG = {
    "results": "results",
    "seeds": [1, 2],
    "device": "cpu",
    "experiments": [
        {"algorithm": "mf", "arch": "mlp:8,8", "datasets": ["digits"], "seeds": [1, 2, 3]},
        {"algorithm": "ff", "arch": "mlp:08,8", "datasets": ["digits"], "seeds": [7]},
        {"algorithm": "mf", "arch": "mlp:1000,1000", "datasets": ["mnist"], "params": "paper"},
    ],
    "tuning": {"n_trials": 2, "max_epochs": 2},
}
EXPECTED_RUNS = {
    *(("digits", "mlp:8,8", "bp", s) for s in (1, 2, 3, 7)),
    *(("digits", "mlp:8,8", "mf", s) for s in (1, 2, 3)),
    ("digits", "mlp:8,8", "ff", 7),
    *(("mnist", "mlp:1000,1000", a, s) for a in ("bp", "mf") for s in (1, 2)),
}
EXPECTED_TRIALS = {
    **{("digits", "mlp:8,8", a): 2 for a in ("bp", "mf", "ff")},
    **{("mnist", "mlp:1000,1000", a): 0 for a in ("bp", "mf")},  # params: paper: no study
}


def status_json(capsys, config: str) -> dict:
    assert main(["status", "--configfile", config, "--json", "--no-forecast"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_workflow_tuning_and_status_expand_one_grid(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID_CONFIG))
    (tmp_path / "results").mkdir()

    # the workflow: what workflow/rules/common.smk reads (its GRID), and bpfree plan (expand_runs)
    checked = check_config(GRID_CONFIG)  # as the Snakefile checks it first
    grid = expand_grid(checked)
    workflow_runs = {(r.dataset, r.arch, r.algorithm, r.seed) for r in grid.runs}
    assert workflow_runs == {(r.dataset, r.arch, r.algorithm, r.seed) for r in expand_runs(GRID_CONFIG)}
    workflow_trials = {(s.dataset, s.arch, s.algorithm): grid.trials[s] for s in grid.studies}
    # tuning: the section each tuned study's bpfree tune --config applies (bpfree.commands.tune)
    tuning_trials = {
        (s.dataset, s.arch, s.algorithm): study_settings(
            checked.tuning, checked.early_stopping, s.algorithm, s.arch, s.dataset
        )[0].n_trials
        for s, mode in grid.params.items()
        if mode == "tuned"
    }
    # bpfree status, on the grid before any job ran
    status = status_json(capsys, "grid.yaml")
    status_runs = {(r["dataset"], r["arch"], r["algorithm"], r["seed"]) for r in status["runs"]}
    status_trials = {(s["dataset"], s["arch"], s["algorithm"]): s["planned"] for s in status["studies"]}

    assert workflow_runs == status_runs == EXPECTED_RUNS
    assert workflow_trials == status_trials == EXPECTED_TRIALS
    assert tuning_trials == {k: n for k, n in EXPECTED_TRIALS.items() if n}
    assert len(status["runs"]) == len(EXPECTED_RUNS)  # no run twice
    assert {s["state"] for s in status["studies"] if not s["planned"]} == {"done"}  # nothing to tune


@pytest.mark.slow
def test_the_workflows_jobs_are_the_grid_status_reads(tmp_path, monkeypatch, capsys):
    """The Snakefile's dry run (its train jobs, its tune jobs and their --n-trials) against
    bpfree status's planned runs and studies, from the same config."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GRID_CONFIG))
    proc = snakemake("-n", "-p", "--cores", "1", "--configfile", "grid.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = re.findall(r"^rule (\w+):\n(.*?)(?=^\[|\Z)", proc.stdout, re.M | re.S)
    wildcards = [
        (rule, dict(re.findall(r"(\w+)=([^,\s]+)", re.search(r"wildcards: (.*)", body)[1])))
        for rule, body in jobs
        if rule in ("train", "tune")
    ]
    dag_runs = {(w["dataset"], w["arch"], w["algorithm"], int(w["seed"])) for rule, w in wildcards if rule == "train"}
    n_trials = [int(n) for rule, body in jobs if rule == "tune" for n in re.findall(r"--n-trials (\d+)", body)]
    dag_studies = {(w["dataset"], w["arch"], w["algorithm"]) for rule, w in wildcards if rule == "tune"}

    (tmp_path / "results").mkdir()
    status = status_json(capsys, "grid.yaml")
    slug = arch_to_slug
    assert dag_runs == {(r["dataset"], slug(r["arch"]), r["algorithm"], r["seed"]) for r in status["runs"]}
    assert dag_studies == {(s["dataset"], slug(s["arch"]), s["algorithm"]) for s in status["studies"] if s["planned"]}
    assert n_trials == [2] * len(dag_studies)


def test_an_architecture_is_named_as_its_folders_name_it():
    assert canonical_arch("mlp:08,8") == "mlp:8,8" and canonical_arch("cnn:32,128,512") == "cnn:32,128,512"
    with pytest.raises(BpfreeError, match=r"^malformed architecture 'mlp:8,,8': expected KIND:W1,W2"):
        canonical_arch("mlp:8,,8")


def test_a_config_status_cannot_expand_is_refused_as_the_workflow_refuses_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = dict(
        GRID_CONFIG, experiments=[*GRID_CONFIG["experiments"], {**GRID_CONFIG["experiments"][2], "params": "tuned"}]
    )
    config["experiments"][3]["algorithm"] = "ff"  # its BP twin on mnist, now asked for tuned and paper
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "results").mkdir()
    with pytest.raises(BpfreeError, match="the BP twin is shared") as workflow:
        check_config(config)
    assert main(["status", "--configfile", "grid.yaml"]) == 2
    assert capsys.readouterr().err.strip() == f"bpfree: error: grid.yaml: {workflow.value}"


# -- a trial's worker: one decision ---------------------------------------------------------------
def running_trial(worker: object, heartbeat: float | None, started: float) -> FrozenTrial:
    attrs = {"worker": worker} if heartbeat is None else {"worker": worker, "heartbeat": heartbeat}
    return FrozenTrial(0, TrialState.RUNNING, None, datetime.fromtimestamp(started), None, {}, {}, attrs, {}, {}, 0)


def test_a_trial_without_a_worker_is_stale_only_under_the_ask_lock_or_by_its_heartbeat():
    now = time.time()
    nameless = running_trial({}, None, started=now - 10)
    assert stale_reason(nameless, 600, now=now, under_ask_lock=True) == (
        "its worker died between asking for it and naming itself"
    )
    assert stale_reason(nameless, 600, now=now) is None  # bpfree status: it may be naming itself now
    silent = running_trial({}, None, started=now - 3600)  # no heartbeat: its start counts
    assert stale_reason(silent, 600, now=now).startswith("no heartbeat for 3600 s")
    elsewhere = {"host": "other-node", "pid": 1, "started": 0.0}
    assert stale_reason(running_trial(elsewhere, now - 5, started=now - 3600), 600, now=now) is None


def zombie():
    """A worker process on this host that ended and was not reaped yet."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    process = psutil.Process(proc.pid)
    started = process.create_time()
    deadline = time.monotonic() + 30
    while process.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.status() == psutil.STATUS_ZOMBIE
    return proc, {**worker_identity(), "pid": proc.pid, "started": started}


@pytest.mark.parametrize("gone", ["zombie", "requeued"])
def test_status_calls_stale_the_trials_the_next_tuning_worker_runs_again(gone, tmp_path, monkeypatch, capsys):
    """A RUNNING trial with a fresh heartbeat whose worker is a zombie on this host, or the
    earlier run of this SLURM job (requeued): bpfree status shows it stale, and the tuning
    workers' retry (bpfree.tuning.workers) puts it back in the queue: the same decision."""
    from bpfree.core.journal import read_journal
    from bpfree.tuning.workers import retry_stale_trials

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    proc, worker = zombie() if gone == "zombie" else (None, {**worker_identity(), "host": "other-node", "pid": 1})
    if gone == "requeued":
        worker["slurm_restart"] = "0"  # this job's run before SLURM requeued it
    try:
        (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
        journal = tmp_path / "results/tuning/digits/mlp-8-8/mf/study.journal"
        journal_study(
            journal,
            [
                {"state": "complete", "value": 0.7, "epochs": 3, "time_s": 3.0},
                {"state": "running", "reported": 1, "worker": worker},  # its heartbeat: now
            ],
        )
        status = status_json(capsys, "config.yaml")
        (mf,) = [s for s in status["studies"] if s["algorithm"] == "mf"]
        assert (mf["state"], mf["stale"], mf["running"]) == ("stale worker", 1, 0)

        storage = optuna.storages.InMemoryStorage()
        read_journal(journal).copy_into(storage)
        study = optuna.load_study(study_name="mf", storage=storage)
        assert retry_stale_trials(study, stale_after=600) == [1]
        assert study.trials[1].state == TrialState.WAITING
    finally:
        if proc is not None:
            proc.wait()


# -- each fact once ---------------------------------------------------------------------------------
ONCE = {
    "Study": "bpfree.progress.grid",
    "Run": "bpfree.progress.grid",
    "expand_grid": "bpfree.progress.grid",
    "expand_runs": "bpfree.progress.grid",
    "expand_studies": "bpfree.progress.grid",
    "arch_to_slug": "bpfree.progress.grid",
    "slug_to_arch": "bpfree.progress.grid",
    "trial_cost": "bpfree.progress.trials",
    "abandoned_attempts": "bpfree.progress.trials",
    "worker_identity": "bpfree.progress.workers",
    "worker_gone": "bpfree.progress.workers",
    "stale_reason": "bpfree.progress.workers",
    "grid_status": "bpfree.progress.status",  # bpfree status adds the forecast and the cost table to it
    "plan_of": "bpfree.progress.status",
}


def test_the_grid_the_trial_cost_and_the_worker_check_are_defined_once():
    found: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name in ONCE:
                found.setdefault(node.name, []).append(module)
    wrapped = {"grid_status": ["bpfree.commands.status"]}  # the command's, over the package's
    assert {n: sorted(set(m) - set(wrapped.get(n, []))) for n, m in found.items()} == {n: [m] for n, m in ONCE.items()}
    assert not any(
        isinstance(n, ast.ClassDef) and n.name == "Key"
        for n in ast.walk(ast.parse((PACKAGE / "commands" / "status.py").read_text()))
    )


def test_status_stays_argument_parsing_and_display():
    assert len((PACKAGE / "commands" / "status.py").read_text().splitlines()) < 250
