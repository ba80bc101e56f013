"""Each config writes into a results folder of its own: two configs run one after the other in
one directory leave both sets of runs, tables and figures intact, and each job's log shows its
epochs as they end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def config(arch: str) -> dict:
    return {
        "seeds": [1],
        "device": "cpu",
        "job_threads": 1,
        "experiments": [{"algorithm": "mf", "arch": arch, "datasets": ["digits"]}],
        "early_stopping": {"max_epochs": 2},
        "tuning": {"n_trials": 0},
        "measurement": {"idle_seconds": 0, "codecarbon": False, "hardware_analysis": False},
    }


def snakemake(work: Path, configfile: str, *targets: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "BPFREE_PROGRESS": "auto"}  # a job's log: lines, not a bar
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *targets, "--cores", "2"]
        + ["--configfile", configfile],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_two_configs_leave_both_sets_of_tables_and_figures_intact(tmp_path):
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(config("mlp:8")))
    (tmp_path / "wide.yaml").write_text(yaml.safe_dump(config("mlp:32")))
    snakemake(tmp_path, "small.yaml", "aggregate", "fig_accuracy")
    small = (tmp_path / "results/small/tables/summary.csv").read_text()
    figure = (tmp_path / "results/small/figures/accuracy.svg").read_bytes()
    snakemake(tmp_path, "wide.yaml", "aggregate", "fig_accuracy")
    assert (tmp_path / "results/small/tables/summary.csv").read_text() == small  # untouched
    assert (tmp_path / "results/small/figures/accuracy.svg").read_bytes() == figure
    assert "mlp:8" in small and "mlp:32" not in small
    assert "mlp:32" in (tmp_path / "results/wide/tables/summary.csv").read_text()
    assert (tmp_path / "results/wide/figures/accuracy.svg").is_file()
    # the job's log shows each epoch as it ended, under the config's folder
    log = (tmp_path / "results/small/logs/train/digits/mlp-8/mf/seed1.log").read_text()
    assert "mf layer1 epoch 1/2" in log and "mf layer1 epoch 2/2" in log and "val_acc" in log


def test_a_running_jobs_log_shows_each_epoch_as_it_ends(tmp_path):
    """The log is read while the train job runs: epoch lines are there before its metrics.json."""
    import time

    slow = config("mlp:512,512,512")
    slow["experiments"][0]["algorithm"] = "ff"  # FF: C label passes per evaluation, the slowest epochs here
    slow["early_stopping"] = {"max_epochs": 40, "patience": 40}
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(slow))
    run = "runs/digits/mlp-512-512-512/ff/seed1"
    env = {**os.environ, "PYTHONPATH": str(REPO), "BPFREE_PROGRESS": "auto"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), f"results/slow/{run}/metrics.json"]
        + ["--cores", "1", "--configfile", "slow.yaml"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log = tmp_path / "results/slow/logs/train/digits/mlp-512-512-512/ff/seed1.log"
    metrics = tmp_path / f"results/slow/{run}/metrics.json"
    seen_while_running = ""
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        text = log.read_text() if log.is_file() else ""
        if "epoch 2/40" in text and not metrics.exists():
            seen_while_running = text
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert "ff train epoch 1/40" in seen_while_running and "val_acc" in seen_while_running
    assert "eta<=" in seen_while_running  # elapsed and the stage's ETA at its budget
