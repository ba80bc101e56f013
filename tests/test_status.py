"""``bpfree status``: where a grid stands, from its results folder alone (journals replayed,
checkpoints read without torch, no file written), and on a finished grid the cost table's
totals. The workflow-run tests (status while the `.test` workflow runs, the dashboard in
headless Chromium) are in tests/test_status_workflow.py."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import record

from bpfree.cli import main
from bpfree.commands.status import grid_status, status_text
from bpfree.core.errors import BpfreeError

REPO = Path(__file__).resolve().parent.parent
CONFIG = {
    "results": "results",  # the grid below lies in ./results (the key, in place of results/config)
    "seeds": [1, 2],
    "device": "cpu",
    "experiments": [{"algorithm": "mf", "arch": "mlp:8,8", "datasets": ["digits"]}],
    "early_stopping": {"max_epochs": 6, "patience": 6},
    "tuning": {"n_trials": 2, "max_epochs": 3, "pruner": "none", "stale_after": 600},
}


def journal_study(path: Path, trials: list[dict]) -> None:
    """A study journal as bpfree tune writes it: each trial's epochs, time, energy (user
    attributes), reported epochs (intermediate values), worker and heartbeat."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        storage=JournalStorage(JournalFileBackend(str(path))), study_name=path.parent.name, direction="maximize"
    )
    for spec in trials:
        trial = study.ask()
        trial.set_user_attr("worker", spec.get("worker", {"host": "elsewhere", "pid": 1, "started": 0.0}))
        trial.set_user_attr("heartbeat", spec.get("heartbeat", time.time()))
        for epoch in range(1, spec.get("reported", 0) + 1):
            trial.report(0.5, epoch)
        if spec["state"] == "running":
            continue
        for key in ("epochs", "time_s", "energy_j", "energy_source"):
            if key in spec:
                trial.set_user_attr(key, spec[key])
        state = {"complete": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED}
        study.tell(trial, spec.get("value") if spec["state"] == "complete" else None, state=state[spec["state"]])


def done_run(folder: Path, epochs: int, time_s: float, energy: float = 5.0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    algorithm, arch, dataset, seed = folder.parent.name, folder.parent.parent.name, folder.parents[2].name, folder.name
    fields = {"algorithm": algorithm, "arch": arch, "dataset": dataset, "seed": int(seed.removeprefix("seed"))}
    fields |= {
        "status": "ok",
        "epochs": epochs,
        "train_time_s": time_s,
        "energy_j": energy,
        "energy_source": "estimate",
    }
    (folder / "metrics.json").write_text(json.dumps(record(fields)))


def running_run(folder: Path, epochs: int, time_s: float) -> None:
    """A checkpoint as bpfree.engine.checkpoint writes it (torch.save of plain data and tensors)."""
    import torch

    from bpfree.engine.checkpoint import Checkpoint, CheckpointState

    folder.mkdir(parents=True, exist_ok=True)
    history = [
        {"epoch": e, "stage": "layer2" if e > 3 else "layer1", "epoch_time_s": 0.5} for e in range(1, epochs + 1)
    ]
    state = CheckpointState(
        stage_index=1,
        stage_epochs=epochs - 3,
        handlers={
            "stopping": [{"best": 0.1, "best_epoch": 2, "bad_epochs": 0, "stopped": False}],
            "selections": {"restore": {"best": 0.1, "epoch": 2, "weights": {"w": torch.ones(3, 3)}}},
        },
        algorithm={"weights": {"w": torch.zeros(4)}, "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}}},
        batches={"generator": torch.Generator().get_state()},
        rng={"torch": torch.get_rng_state()},
        history=history,
        train_time_s=time_s,
        pieces=1,
        checkpoints=epochs,
        checkpoint_time_s=0.1,
    )
    Checkpoint(folder / "checkpoint.pt", {"run": "x"}).save(state, epoch=epochs)


@pytest.fixture
def grid(tmp_path, monkeypatch):
    """Half a grid (make_grid), the current directory."""
    monkeypatch.chdir(tmp_path)
    return make_grid(tmp_path)


def make_grid(tmp_path: Path) -> Path:
    """Half a grid: bp's study done (2 complete, 1 pruned) with both runs done; mf's study
    with one complete trial and one RUNNING whose worker went silent (stale), its seed 1
    running (epoch 5, from the checkpoint), seed 2 pending."""
    results = tmp_path / "results"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    bp = results / "tuning/digits/mlp-8-8/bp"
    journal_study(
        bp / "study.journal",
        [
            {
                "state": "complete",
                "value": 0.81,
                "epochs": 3,
                "time_s": 6.0,
                "energy_j": 12.0,
                "energy_source": "estimate",
            },
            {"state": "pruned", "epochs": 1, "time_s": 2.0, "energy_j": 4.0, "energy_source": "estimate"},
            {"state": "complete", "value": 0.86, "epochs": 3, "time_s": 6.0, "energy_j": 12.0, "energy_source": "rapl"},
        ],
    )
    (bp / "best_params.yaml").write_text("lr: 0.01\n")
    mf = results / "tuning/digits/mlp-8-8/mf"
    journal_study(
        mf / "study.journal",
        [
            {
                "state": "complete",
                "value": 0.7,
                "epochs": 3,
                "time_s": 9.0,
                "energy_j": 3.0,
                "energy_source": "estimate",
            },
            {"state": "running", "reported": 2, "heartbeat": time.time() - 3600},
        ],
    )
    done_run(results / "runs/digits/mlp-8-8/bp/seed1", epochs=6, time_s=3.0)
    done_run(results / "runs/digits/mlp-8-8/bp/seed2", epochs=4, time_s=2.0)
    bench = results / "benchmarks/train/digits/mlp-8-8/bp/seed1.tsv"
    bench.parent.mkdir(parents=True)
    bench.write_text("s\th:m:s\tmax_rss\tmax_vms\n41.5\t0:00:41\t655.2\t900\n")
    running_run(results / "runs/digits/mlp-8-8/mf/seed1", epochs=5, time_s=2.5)
    return tmp_path


def test_journal_is_read_as_every_command_reads_it(grid):
    from bpfree.core.journal import read_journal

    journal = read_journal(grid / "results/tuning/digits/mlp-8-8/mf/study.journal")
    assert journal.damage is None and journal.studies[0].maximize
    trials = journal.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "RUNNING"]
    assert trials[0].value == 0.7 and len(trials[1].intermediate_values) == 2 and trials[0].user_attrs["epochs"] == 3


def test_checkpoint_is_read_without_torch_objects(grid):
    from bpfree.core.readback import CheckpointFields, read_checkpoint_data, read_checkpoint_fields

    checkpoint = grid / "results/runs/digits/mlp-8-8/mf/seed1/checkpoint.pt"
    data = read_checkpoint_data(checkpoint)
    assert len(data["history"]) == 5 and data["history"][-1]["stage"] == "layer2" and data["train_time_s"] == 2.5
    assert data["handlers"]["selections"]["restore"]["weights"]["w"] is None  # a tensor: never built
    assert read_checkpoint_fields(checkpoint) == CheckpointFields(5, "layer2", 2.5)
    (grid / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(BpfreeError, match="is no torch checkpoint"):
        read_checkpoint_data(grid / "junk.pt")


def test_status_of_a_half_done_grid(grid):
    status = grid_status("config.yaml", "results", forecast=False)  # typed: bpfree.progress.status.GridStatus
    studies = {s.algorithm: s for s in status.studies}
    assert studies["bp"].state == "done" and (studies["bp"].complete, studies["bp"].pruned) == (2, 1)
    assert studies["bp"].best == 0.86 and studies["bp"].planned == 2
    assert studies["bp"].energy_j == 28.0 and studies["bp"].energy_source == "estimate+rapl"
    assert studies["mf"].state == "stale worker" and studies["mf"].stale == 1 and studies["mf"].best == 0.7
    runs = {(r.algorithm, r.seed): r for r in status.runs}
    assert [runs[k].state for k in sorted(runs)] == ["done", "done", "running", "pending"]
    assert runs["bp", 1].benchmark_s == 41.5 and runs["bp", 1].benchmark_max_rss_mb == 655.2
    assert runs["mf", 1].epochs == 5 and runs["mf", 1].stage == "layer2" and runs["mf", 1].time_s == 2.5
    assert status.state == "running" and status.counts.runs == {"done": 2, "running": 1, "pending": 1}
    spent = status.spent
    assert spent.tuning_time_s == 23.0 and spent.runs_time_s == 7.5 and spent.energy_j == 41.0
    # what remains is mf's: its stale trial (half its 3 epochs on average) at the trials'
    # 3 s/epoch, then its runs at the same rate (no mf run is done), each run 3 x 6/3 = 6
    # epochs (a trial's epochs scaled by the budgets, 6 per run against 3 per trial): seed 1
    # from its epoch 5 (1 left), seed 2 from nothing (6)
    assert status.remaining.time_s == pytest.approx((1.5 + 1 + 6) * 3)
    assert status.remaining.unmeasured_studies == []
    text = status_text(status)
    assert "stale worker" in text and "epoch 5 of at most 6 (layer2, per stage)" in text
    assert "41.5 s, 655 MB" in text and "remaining (estimate from measured s/epoch): about" in text


def test_status_json_and_table_from_the_command_line(grid, capsys):
    assert main(["status", "--configfile", "config.yaml", "--json", "--no-forecast"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"]["studies"] == {"done": 1, "stale worker": 1}
    assert main(["status", "--configfile", "config.yaml", "--no-forecast"]) == 0
    assert "digits mlp:8,8 mf seed1  running" in capsys.readouterr().out


def test_status_reads_only(grid):
    before = {p: p.stat().st_mtime_ns for p in (grid / "results").rglob("*")}
    grid_status("config.yaml", "results", forecast=False)
    assert {p: p.stat().st_mtime_ns for p in (grid / "results").rglob("*")} == before


def test_where_nothing_is_measured_the_plan_forecasts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    (tmp_path / "results").mkdir()
    status = grid_status("config.yaml", "results", forecast=True)
    assert status.state == "pending" and len(status.remaining.unmeasured_studies) == 2
    forecast = {r.algorithm: r for r in status.remaining.forecast}
    assert forecast["bp"].tuning_epochs == 2 * 3 and forecast["bp"].runs_epochs == 2 * 6
    assert "not measured yet: at most" in status_text(status)


def test_bad_input_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["status", "--results", "nowhere"]) == 2
    assert "no results folder at nowhere" in capsys.readouterr().err
    (tmp_path / "results").mkdir()
    assert main(["status", "--configfile", "missing.yaml"]) == 2
    assert "missing.yaml: no such file" in capsys.readouterr().err


def test_status_of_hundreds_of_runs_imports_no_torch(tmp_path):
    """300 finished runs and their studies: the command reads them without importing torch
    (nor optuna); the time it took is printed for the record, not asserted."""
    config = dict(CONFIG, seeds=list(range(1, 51)))
    config["experiments"] = [
        {"algorithm": a, "arch": arch, "datasets": ["digits"]} for a in ("mf", "ff") for arch in ("mlp:8,8", "mlp:16")
    ]
    config["tuning"] = dict(config["tuning"], n_trials=0)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    for algorithm in ("mf", "ff", "bp"):
        for slug in ("mlp-8-8", "mlp-16"):
            for seed in range(1, 51):
                done_run(tmp_path / f"results/runs/digits/{slug}/{algorithm}/seed{seed}", epochs=6, time_s=1.0)
    probe = (
        "import sys, time; from bpfree.cli import main; t = time.perf_counter(); "
        "rc = main(['status', '--configfile', 'config.yaml', '--json']); "
        "print('took', round(time.perf_counter() - t, 2), 's', file=sys.stderr); "
        "assert rc == 0; assert 'torch' not in sys.modules and 'optuna' not in sys.modules, 'imported'"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, env=_env())
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert len(status["runs"]) == 300 and status["state"] == "done"
    print(out.stderr.strip())


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_studies_that_take_the_papers_values_have_nothing_to_tune(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = dict(
        CONFIG, experiments=[{"algorithm": "mf", "arch": "mlp:1000,1000", "datasets": ["mnist"], "params": "paper"}]
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    for algorithm in ("bp", "mf"):
        for seed in (1, 2):
            done_run(tmp_path / f"results/runs/mnist/mlp-1000-1000/{algorithm}/seed{seed}", epochs=6, time_s=1.0)
    status = grid_status("config.yaml", "results", forecast=False)
    assert [(s.state, s.planned) for s in status.studies] == [("done", 0), ("done", 0)]
    assert status.state == "done" and "no study" in status_text(status)
