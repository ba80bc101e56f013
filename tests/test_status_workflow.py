"""One real run of the `.test` workflow, watched and then read: ``bpfree status`` while it runs
(studies and runs moving from pending to done, an estimate of what remains), on the finished
grid (done, with the cost table's totals), ``bpfree dashboard`` in headless Chromium (every study listed), and ``.ci/report-test`` on the
same run (every figure and table the README names is in ``snakemake --report``)."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from bpfree.commands.status import grid_status, status_text

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / ".test" / "config.yaml"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
pytestmark = pytest.mark.slow


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """The .test workflow run in a fresh directory, ``bpfree status`` read every second
    while it runs: (workdir, snapshots, a status text printed mid-run)."""
    work = tmp_path_factory.mktemp("test-workflow")
    (work / "results").mkdir()  # before the first job: status reads an empty grid
    snapshots = [grid_status(str(TEST_CONFIG), work / "results", forecast=False)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--cores", "2"]
        + ["--configfile", str(TEST_CONFIG)],
        cwd=work,
        stdout=open(work / "snakemake.log", "w"),
        stderr=subprocess.STDOUT,
        env=env(),
    )
    mid_text = None
    deadline = time.monotonic() + 1200
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(1.0)
            snap = grid_status(str(TEST_CONFIG), work / "results", forecast=False)
            snapshots.append(snap)
            if mid_text is None and snap.spent.time_s > 0 and snap.state != "done":
                mid_text = status_text(snap)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.wait() == 0, (work / "snakemake.log").read_text()[-3000:]
    return work, [asdict(s) for s in snapshots], mid_text  # as bpfree status --json prints each


def test_status_sees_studies_and_runs_move_from_pending_to_done(watched):
    work, snapshots, mid_text = watched
    first, last = snapshots[0], snapshots[-1]
    assert first["state"] == "pending" and len(first["studies"]) == 2 and len(first["runs"]) == 4
    assert {s["state"] for s in first["studies"]} == {"pending"} and {r["state"] for r in first["runs"]} == {"pending"}
    # each study and run: pending first, done at the end, never back
    for kind, name in (("studies", "study"), ("runs", "run")):
        for item in first[kind]:
            seen = [next(x for x in snap[kind] if x[name] == item[name])["state"] for snap in snapshots]
            assert seen[0] == "pending" and seen[-1] == "done", (item[name], seen)
            assert "pending" not in seen[seen.index("done") :], (item[name], seen)
    # in between: some done while others were not, and an estimate of what remains
    assert any(0 < snap["counts"]["runs"].get("done", 0) < 4 for snap in snapshots)
    assert mid_text is not None and "remaining (estimate from measured s/epoch): about" in mid_text
    assert any(s["state"] == "running" for s in snapshots), [s["state"] for s in snapshots]
    assert last["counts"]["runs"] == {"done": 4}


def test_status_of_the_finished_grid_says_done_with_the_cost_tables_totals(watched):
    work, _, _ = watched
    out = subprocess.run(
        [sys.executable, "-m", "bpfree", "status", "--configfile", str(TEST_CONFIG)],
        cwd=work,
        capture_output=True,
        text=True,
        env=env(),
    )
    assert out.returncode == 0, out.stderr
    status = asdict(grid_status(str(TEST_CONFIG), work / "results"))
    assert status["state"] == "done"
    (grid,) = [r for r in csv.DictReader(open(work / "results/tables/cost.csv")) if r["algorithm"] == "(all)"]
    cost = status["cost_table"]
    assert cost["total_time_s"] == pytest.approx(float(grid["total_time_s"]))
    assert cost["total_energy_j"] == pytest.approx(float(grid["total_energy_j"]))
    # status's own sums of the journals and metrics.json agree with the cost table's
    assert status["spent"]["time_s"] == pytest.approx(float(grid["total_time_s"]), rel=1e-6)
    assert status["spent"]["energy_j"] == pytest.approx(float(grid["total_energy_j"]), rel=1e-6)
    assert "done. cost table" in out.stdout and "estimate" in out.stdout
    # Snakemake's benchmark of every train and tune job, beside the run's own time
    assert all(r["benchmark_s"] is not None and r["benchmark_s"] >= r["time_s"] for r in status["runs"])
    assert all(s["benchmark_s"] is not None and s["benchmark_s"] >= s["time_s"] for s in status["studies"])


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_dashboard_lists_every_study_in_headless_chromium(watched, tmp_path):
    pytest.importorskip("optuna_dashboard")
    work, _, _ = watched
    server = subprocess.Popen(
        [sys.executable, "-m", "bpfree", "dashboard", "--results", "results", "--host", "127.0.0.1", "--port", "0"]
        + ["--stop-after", "300"],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=open(tmp_path / "dashboard.err", "w"),
        text=True,
        env=env(),
    )
    try:
        line = server.stdout.readline()
        assert "at http://127.0.0.1:" in line, line + (tmp_path / "dashboard.err").read_text()
        url = line.split(" at ", 1)[1].split("/ ", 1)[0] + "/dashboard"
        dom = subprocess.run(
            ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000"]
            + ["--dump-dom", url],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        for study in ("digits mlp:64,64 bp", "digits mlp:64,64 mf"):
            assert study in dom, dom[-2000:]
    finally:
        server.send_signal(signal.SIGTERM)
        rc = server.wait(timeout=30)
    assert rc == 0 and "stopped after" in server.stdout.read()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_report_lists_every_figure_and_table_the_readme_names(watched):
    work, _, _ = watched
    out = subprocess.run(
        [str(REPO / ".ci" / "report-test"), str(work)],
        capture_output=True,
        text=True,
        env={**env(), "PYTHON": sys.executable},
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    from bpfree.core.outputs import FIGURE_NAMES, TABLE_NAMES

    figures, tables = len(FIGURE_NAMES), len(TABLE_NAMES)
    assert f"Figures: {figures} of {figures}" in out.stdout and f"Tables: {tables} of {tables}" in out.stdout
