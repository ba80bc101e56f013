"""bpfree tune: seeded and resumable studies in a journal file, failures that never stop a
study, the search spaces checked by name, and the best params round-tripping into a run.

Everything trains bp on digits with a 32-unit MLP for two epochs, so a trial takes a blink."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from helpers import train_argv, tune_argv
from optuna.trial import TrialState

from bpfree.algorithms.bp import Backprop
from bpfree.cli import main
from bpfree.core.errors import BpfreeError
from bpfree.core.spec import Machine, Tuning
from bpfree.models import parse_arch
from bpfree.tuning.job import TuneJob, tune
from bpfree.tuning.records import write_trials_csv
from bpfree.tuning.space import search_space
from bpfree.tuning.study import open_study


def make_job(tmp_path, n_trials: int, journal: str = "study.journal", **settings) -> TuneJob:
    settings = {"max_epochs": 2, "pruner": "none", **settings}
    return TuneJob(
        algorithm="bp",
        dataset="digits",
        n_trials=n_trials,
        storage=tmp_path / journal,
        settings=Tuning(**settings),
        arch=parse_arch("mlp:32"),
        machine=Machine(device="cpu"),
    )


def stored_trials(path) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return optuna.load_study(study_name=None, storage=storage).trials


def states(trials) -> dict[str, int]:
    return {s.name: sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)}


def test_seeded_study_resumes_to_exactly_n_complete_trials_with_the_same_params(tmp_path):
    straight = tune(make_job(tmp_path, 4, "straight.journal"), progress=False)
    tune(make_job(tmp_path, 2, "resumed.journal"), progress=False)
    assert states(stored_trials(tmp_path / "resumed.journal")) == {"COMPLETE": 2}
    resumed = tune(make_job(tmp_path, 4, "resumed.journal"), progress=False)
    tune(make_job(tmp_path, 2, "other.journal", seed=7), progress=False)

    assert resumed.trials_run == 2 and resumed.counts.complete == 4 == straight.counts.complete
    straight_params = [t.params for t in stored_trials(tmp_path / "straight.journal")]
    resumed_params = [t.params for t in stored_trials(tmp_path / "resumed.journal")]
    # the restart drew what the uninterrupted study drew, not a replay of its first draws
    assert resumed_params == straight_params
    assert len({p["lr"] for p in straight_params}) == 4
    assert [t.params for t in stored_trials(tmp_path / "other.journal")] != straight_params[:2]

    # a study already met does nothing more; one resumed with other settings is refused
    again = tune(make_job(tmp_path, 4, "resumed.journal"), progress=False)
    assert again.trials_run == 0 and again.best.number == resumed.best.number
    with pytest.raises(BpfreeError, match="was started with early_stopping"):
        tune(make_job(tmp_path, 5, "resumed.journal", max_epochs=3), progress=False)


def test_raising_and_diverging_trials_are_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    # trial 0 trains; 1 raises; 2 runs out of memory; 3 diverges (NaN loss); 4 trains
    plan = iter(["ok", "raise", "oom", "nan", "ok"])
    original_begin, original_epoch = Backprop.begin_stage, Backprop.train_epoch

    def begin_stage(self, stage, max_epochs):
        self.behaviour = next(plan)
        if self.behaviour == "raise":
            raise RuntimeError("boom in trial setup")
        if self.behaviour == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4 GiB")
        original_begin(self, stage, max_epochs)

    def train_epoch(self, stage, batches):
        loss = original_epoch(self, stage, batches)
        return math.nan if self.behaviour == "nan" else loss

    monkeypatch.setattr(Backprop, "begin_stage", begin_stage)
    monkeypatch.setattr(Backprop, "train_epoch", train_epoch)
    result = tune(make_job(tmp_path, 5), progress=False)  # 5 finished: failed and pruned ones count

    trials = stored_trials(tmp_path / "study.journal")
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.FAIL,
        TrialState.PRUNED,
        TrialState.COMPLETE,
    ]
    assert trials[1].user_attrs["reason"] == "RuntimeError: boom in trial setup"
    assert trials[2].user_attrs["reason"].startswith("out of memory: CUDA out of memory")
    assert trials[3].user_attrs["reason"].startswith("diverged")
    assert (result.counts.complete, result.counts.failed, result.counts.pruned) == (2, 2, 1)
    assert result.best.number in (0, 4)


@pytest.mark.parametrize("warmup_epochs", [0, 1])
def test_median_pruner_stops_a_trial_below_the_median(tmp_path, warmup_epochs):
    job = make_job(
        tmp_path,
        3,
        pruner="median",
        pruner_startup_trials=1,
        pruner_warmup_epochs=warmup_epochs,
        search_spaces={"bp": {"lr": {"type": "float", "low": 1e-7, "high": 1e-1, "log": True}}},
    )
    study = open_study(job.storage, "bp-digits-mlp:32", job.settings)
    for lr in (1e-2, 1e-7, 1e-2):  # good, hopeless, good again
        study.enqueue_trial({"lr": lr})
    result = tune(job, progress=False)

    trials = stored_trials(job.storage)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    assert trials[1].user_attrs["reason"].startswith(f"pruned at epoch {warmup_epochs + 1}")
    assert list(trials[0].intermediate_values) == [1, 2]  # the global epoch is the step
    assert result.counts.pruned == 1


def test_a_dead_workers_running_trial_is_run_again_with_its_params_and_counted_once(tmp_path):
    job = make_job(tmp_path, 2)
    study = open_study(job.storage, "bp-digits-mlp:32", job.settings)
    orphan = study.ask(search_space("bp").distributions)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    orphan.set_user_attr("worker", {"host": socket.gethostname(), "pid": int(finished.stdout)})
    tune(job, progress=False)

    trials = stored_trials(job.storage)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].params == orphan.params and "reason" not in trials[0].user_attrs
    assert trials[0].user_attrs["abandoned"][0]["by"].startswith("killed: its worker (pid ")


def test_a_trial_whose_worker_died_before_naming_itself_is_run_again_not_waited_for(tmp_path):
    # SIGKILLed between study.ask and set_user_attr("worker"): before this was handled, the
    # resumed worker waited for its heartbeat for stale_after (30 min); CI timed out on it.
    job = make_job(tmp_path, 2, stale_after=1800)
    study = open_study(job.storage, "bp-digits-mlp:32", job.settings)
    study.ask(search_space("bp").distributions)  # and nothing more: the asker is gone
    tune(job, progress=False)

    trials = stored_trials(job.storage)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE]
    assert "died between asking for it and naming itself" in trials[0].user_attrs["abandoned"][0]["by"]


def test_a_trial_whose_workers_keep_dying_is_failed_after_three_attempts(tmp_path, monkeypatch):
    """An attempt that kills its worker every time (the kernel's out-of-memory killer, say)
    does not hold the study for ever: the third death fails it."""
    from bpfree.tuning import workers

    job = make_job(tmp_path, 1)
    study = open_study(job.storage, "bp-digits-mlp:32", job.settings)
    study.ask(search_space("bp").distributions)  # its worker never names itself: gone
    for attempt in range(workers.MAX_KILLED_ATTEMPTS):
        assert workers.retry_stale_trials(study, 1800) == [0]
        if attempt < workers.MAX_KILLED_ATTEMPTS - 1:
            assert study.trials[0].state == TrialState.WAITING
            study.ask(search_space("bp").distributions)  # taken again, and its worker dies again
    trial = study.trials[0]
    assert trial.state == TrialState.FAIL and trial.user_attrs["reason"].endswith("(3 times)")
    assert len(trial.user_attrs["abandoned"]) == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"bp": {"lrr": {"type": "float", "low": 1e-5, "high": 1e-2}}},
            "search space of bp: unknown parameter 'lrr'; valid: batch_size, drop_last, lr, weight_decay",
        ),
        ({"bp": {"lr": {"type": "float", "low": 1e-5, "hihg": 1e-2}}}, "unknown key(s) hihg"),
        ({"bp": {"lr": {"type": "flaot", "low": 1e-5, "high": 1e-2}}}, "type must be one of float"),
        (
            {"bp": {"batch_size": {"type": "float", "low": 32, "high": 256}}},
            "'batch_size' of algorithm 'bp' must be int",
        ),
        ({"bp": {"lr": {"type": "float", "low": 0.0, "high": 1e-2, "log": True}}}, "search space of bp, lr"),
        ({"bpp": {"lr": {"type": "float", "low": 1e-5, "high": 1e-2}}}, "unknown algorithm(s) 'bpp'"),
    ],
)
def test_a_misspelt_search_space_fails_clearly(overrides, message):
    with pytest.raises(BpfreeError) as err:
        search_space("bp", overrides)
    assert message in str(err.value)


def test_every_shipped_space_names_real_parameters():
    from bpfree.core.registry import ALGORITHMS
    from bpfree.tuning.space import default_search_spaces

    shipped = default_search_spaces()
    assert {"bp", "ff", "mf", "cafo-rand", "cafo-dfa"} <= set(shipped)
    for algorithm in set(shipped) & set(ALGORITHMS.names()):
        assert set(search_space(algorithm).distributions) == set(shipped[algorithm])


def test_cli_rejects_a_misspelt_space_in_one_line(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"tuning": {"search_spaces": {"bp": {"lrr": {"type": "float", "low": 1, "high": 2}}}}})
    )
    code = main(tune_argv(config=config, storage=tmp_path / "s.journal", out=tmp_path / "best.yaml"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "unknown parameter 'lrr'" in err
    assert not (tmp_path / "best.yaml").exists()


def test_best_params_round_trip_into_bpfree_train(tmp_path, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"tuning": {"max_epochs": 2, "pruner": "none"}}))
    best = tmp_path / "best_params.yaml"
    code = main(
        tune_argv(
            "--config",
            str(config),
            "--device",
            "cpu",
            arch="mlp:32",
            n_trials=2,
            storage=tmp_path / "study.journal",
            out=best,
        )
    )
    assert code == 0
    assert "2 finished trials: 2 complete, 0 pruned, 0 failed" in capsys.readouterr().out
    doc = yaml.safe_load(best.read_text())
    assert (doc["algorithm"], doc["dataset"], doc["arch"]) == ("bp", "digits", "mlp:32")
    assert doc["trials"] == {"complete": 2, "pruned": 0, "failed": 0, "running": 0, "waiting": 0}
    assert set(doc["params"]) == {
        "lr",
        "weight_decay",
        "batch_size",
        "drop_last",
        "init",
        "head_init",
    }  # the full Params
    assert doc["params"]["lr"] != 1e-3 and 0 < doc["best_value"] <= 1 and doc["best_trial"] in (0, 1)

    out = tmp_path / "run"
    code = main(train_argv(seed=1, arch="mlp:32", params=best, max_epochs=2, device="cpu", out=out))
    assert code == 0
    assert json.loads((out / "metrics.json").read_text())["params"] == doc["params"]


@pytest.mark.slow
def test_parallel_workers_share_one_study_without_overshooting(tmp_path):
    args = tune_argv("--device", "cpu", arch="mlp:16", n_trials=4, max_epochs=1, storage=tmp_path / "study.journal")
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "bpfree", *args, "--out", str(tmp_path / f"best{i}.yaml")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr
    trials = stored_trials(tmp_path / "study.journal")
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4
    assert not any(t.state == TrialState.RUNNING for t in trials)


def test_the_locks_of_a_worker_killed_while_holding_them_die_with_it(tmp_path):
    """CI once hung here for 300 s: the worker was SIGKILLed between its ask and its
    release, and the lock it left was never broken, so the resumed worker waited forever.
    bpfree's locks are flocks: the kernel drops them with their process, at once."""
    import threading

    from bpfree.core.journal import writers_lock
    from bpfree.tuning.journal import ask_lock

    storage = tmp_path / "study.journal"
    holder = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sys; from bpfree.tuning.journal import ask_lock; from bpfree.core.journal import writers_lock; "
            "ask_lock(sys.argv[1]).acquire(); writers_lock(sys.argv[1]).acquire(); os.kill(os.getpid(), 9)",
            str(storage),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert holder.returncode == -9, holder.stderr
    for lock in (ask_lock(storage), writers_lock(storage)):
        got = []
        waiter = threading.Thread(target=lambda: got.append(lock.acquire()), daemon=True)
        waiter.start()
        waiter.join(timeout=10)
        assert got == [True], "the killed worker's lock outlived it"
        lock.release()


@pytest.mark.slow
def test_a_sigkilled_tune_resumes_to_its_trial_count_with_nothing_left_running(tmp_path):
    import signal
    import time

    journal = tmp_path / "study.journal"
    args = [
        sys.executable,
        "-m",
        "bpfree",
        *tune_argv(
            "--device",
            "cpu",
            "--threads",
            "1",
            "--out",
            str(tmp_path / "best.yaml"),
            arch="mlp:16",
            n_trials=4,
            max_epochs=3,
            storage=journal,
        ),
    ]
    worker = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    running_at_kill = None
    while time.monotonic() < deadline and worker.poll() is None:  # kill it inside a trial
        try:
            trials = stored_trials(journal) if journal.exists() else []
        except ValueError:  # the journal exists, the study is not in it yet
            trials = []
        if trials:
            running = [t.number for t in trials if t.state == TrialState.RUNNING]
            if running and any(t.state == TrialState.COMPLETE for t in trials):
                worker.send_signal(signal.SIGKILL)
                running_at_kill = running[0]
                break
        time.sleep(0.02)
    worker.wait(timeout=60)
    assert running_at_kill is not None, "the worker finished before it could be killed mid-trial"

    again = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    trials = stored_trials(journal)
    # 4 finished, as asked: the trial killed mid-way was run again, with its params, and counted once
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert trials[running_at_kill].user_attrs["abandoned"][0]["by"].startswith("killed: its worker")


# -- every trial accounted for (issue 16) ------------------------------------------------------
def read_trial_table(path) -> list[dict]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_trial_has_its_epochs_time_and_energy_pruned_and_failed_ones_included(tmp_path, monkeypatch):
    # trial 0 trains; 1 raises in setup; 2 diverges at its first epoch; 3 trains; then an
    # orphan left RUNNING by a dead worker is failed as stale on the next run
    plan = iter(["ok", "raise", "nan", "ok"])
    original_begin, original_epoch = Backprop.begin_stage, Backprop.train_epoch

    def begin_stage(self, stage, max_epochs):
        self.behaviour = next(plan, "ok")
        if self.behaviour == "raise":
            raise RuntimeError("boom in trial setup")
        original_begin(self, stage, max_epochs)

    def train_epoch(self, stage, batches):
        loss = original_epoch(self, stage, batches)
        return math.nan if self.behaviour == "nan" else loss

    monkeypatch.setattr(Backprop, "begin_stage", begin_stage)
    monkeypatch.setattr(Backprop, "train_epoch", train_epoch)
    result = tune(make_job(tmp_path, 4), progress=False)  # 4 finished: failed and pruned ones count
    assert result.trials_csv == tmp_path / "study.trials.csv"

    rows = read_trial_table(result.trials_csv)
    assert [r["state"] for r in rows] == ["complete", "failed", "pruned", "complete"]
    assert {(r["algorithm"], r["arch"], r["dataset"]) for r in rows} == {("bp", "mlp:32", "digits")}
    complete, failed, pruned = rows[0], rows[1], rows[2]
    assert int(complete["epochs"]) == 2 and float(complete["value"]) > 0.5
    assert int(failed["epochs"]) == 0 and failed["reason"] == "RuntimeError: boom in trial setup"
    assert int(pruned["epochs"]) == 1 and pruned["value"] == ""  # diverged: pruned, no value
    for row in rows:  # the failed trial's setup took time and energy too
        assert float(row["time_s"]) > 0 and float(row["energy_j"]) > 0
        assert row["energy_source"] in ("estimate", "rapl")  # a CPU: never "measured" by a GPU counter
    journal = stored_trials(tmp_path / "study.journal")
    assert [t.user_attrs["energy_source"] for t in journal] == [r["energy_source"] for r in rows]
    assert journal[0].user_attrs["time_s"] >= journal[0].user_attrs["train_time_s"]

    # a trial whose worker died has no end of its own: it still gets a row (its last epoch)
    study = open_study(tmp_path / "study.journal", "bp-digits-mlp:32", make_job(tmp_path, 3).settings)
    orphan = study.ask(search_space("bp").distributions)
    orphan.report(0.5, 1)
    write_trials_csv(result.trials_csv, study)
    rows = read_trial_table(result.trials_csv)
    assert rows[4]["state"] == "running" and rows[4]["epochs"] == "1" and rows[4]["energy_j"] == ""
    # the next start runs it again (its worker is gone): the lost attempt's time is in its row
    tune(make_job(tmp_path, 6), progress=False)
    rows = read_trial_table(result.trials_csv)
    assert [r["state"] for r in rows] == ["complete", "failed", "pruned", "complete", "complete", "complete"]
    assert rows[4]["reason"] == "" and rows[4]["epochs"] == "2" and float(rows[4]["energy_j"]) > 0
    (lost,) = stored_trials(tmp_path / "study.journal")[4].user_attrs["abandoned"]
    assert lost["by"].startswith("killed: its worker died between asking") and lost["epochs"] is None


@pytest.mark.parametrize("pruner", ["median", "successive-halving", "hyperband", "none"])
def test_each_pruner_is_built_as_configured(pruner):
    from bpfree.tuning.study import make_pruner

    settings = Tuning(pruner=pruner, pruner_warmup_epochs=1, pruner_reduction_factor=2, pruner_startup_trials=4)
    built = make_pruner(settings, max_resource=30)
    kind = {
        "median": optuna.pruners.MedianPruner,
        "successive-halving": optuna.pruners.SuccessiveHalvingPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "none": optuna.pruners.NopPruner,
    }[pruner]
    assert type(built) is kind
    if pruner == "hyperband":  # the resource is epochs: from the first prunable one to the budget
        assert (built._min_resource, built._max_resource, built._reduction_factor) == (2, 30, 2)
    if pruner == "successive-halving":
        assert (built._min_resource, built._reduction_factor) == (2, 2)
    if pruner == "median":
        assert (built._n_startup_trials, built._n_warmup_steps) == (4, 2)


def test_the_pruner_must_be_one_we_know():
    with pytest.raises(BpfreeError, match="successive-halving"):
        from bpfree.core.spec import parse

        parse(Tuning, {"pruner": "asha"}, where="tuning")


@pytest.mark.parametrize("pruner", ["hyperband", "successive-halving"])
def test_a_multi_fidelity_study_prunes_and_resumes_from_its_journal(tmp_path, pruner):
    space = {"bp": {"lr": {"type": "float", "low": 1e-7, "high": 1e-1, "log": True}}}
    job = make_job(tmp_path, 2, max_epochs=4, pruner=pruner, search_spaces=space)
    study = open_study(job.storage, "bp-digits-mlp:32", job.settings, max_resource=4)
    for lr in (1e-2, 1e-7, 1e-7, 1e-2):  # good, hopeless, hopeless, good
        study.enqueue_trial({"lr": lr})
    tune(job, progress=False)
    trials = stored_trials(job.storage)
    assert sum(t.state == TrialState.PRUNED for t in trials) >= 1
    assert all(f"by the {pruner} pruner" in t.user_attrs["reason"] for t in trials if t.state == TrialState.PRUNED)

    # resumed for more trials, the same pruner picks the study up where it stopped
    resumed = tune(make_job(tmp_path, 4, max_epochs=4, pruner=pruner, search_spaces=space), progress=False)
    assert resumed.counts.finished == 4 and resumed.counts.running == 0  # pruned ones counted
    rows = read_trial_table(resumed.trials_csv)
    assert len(rows) == len(stored_trials(job.storage)) and {r["pruner"] for r in rows} == {pruner}


def test_cli_tune_takes_the_pruner_and_writes_the_trial_table(tmp_path, capsys):
    out = tmp_path / "best.yaml"
    code = main(
        tune_argv(
            "--trials-out",
            str(tmp_path / "t.csv"),
            "--device",
            "cpu",
            "--out",
            str(out),
            arch="mlp:16",
            n_trials=2,
            max_epochs=2,
            pruner="hyperband",
            storage=tmp_path / "s.journal",
        )
    )
    assert code == 0
    document = yaml.safe_load(out.read_text())
    assert document["pruner"]["name"] == "hyperband" and document["pruner"]["reduction_factor"] == 3
    assert [r["pruner"] for r in read_trial_table(tmp_path / "t.csv")][:2] == ["hyperband", "hyperband"]
    assert "t.csv" in capsys.readouterr().out


# -- a trial is a run specification --------------------------------------------------------------
def test_bpfree_train_reruns_a_kept_trial_spec_to_the_same_validation_accuracy(tmp_path):
    """Each trial's spec is kept beside its row of the trial table; `bpfree train --spec` on
    it trains the same configuration, to the validation accuracy the trial scored."""
    table = tmp_path / "study.trials.csv"
    code = main(
        ["tune", "--algorithm", "bp", "--dataset", "digits", "--arch", "mlp:16", "--n-trials", "2"]
        + ["--max-epochs", "3", "--pruner", "none", "--storage", str(tmp_path / "study.journal")]
        + ["--device", "cpu", "--threads", "1", "--out", str(tmp_path / "best.yaml")]
    )
    assert code == 0
    rows = read_trial_table(table)
    assert [r["spec"] for r in rows] == ["study.trials/trial-0.yaml", "study.trials/trial-1.yaml"]
    for row in rows:
        spec = yaml.safe_load((tmp_path / row["spec"]).read_text())
        assert spec["params"]["lr"] == pytest.approx(json.loads(row["params"])["lr"])
        assert spec["seed"] == 42 and spec["early_stopping"]["max_epochs"] == 3
        out = tmp_path / f"again-{row['number']}"
        assert main(["train", "--spec", str(tmp_path / row["spec"]), "--threads", "1", "--out", str(out)]) == 0
        again = json.loads((out / "metrics.json").read_text())
        assert again["best_val_accuracy"] == float(row["value"]), row["number"]
        assert again["epochs"] == int(float(row["epochs"]))


def test_a_study_started_on_one_device_type_is_not_joined_from_another(tmp_path, monkeypatch):
    """The study's identity is its trials' run identity: the device type is part of it, as it
    is of a run's, so a GPU worker cannot add trials to a CPU study."""
    job = make_job(tmp_path, 1, max_epochs=1)
    tune(job, progress=False)
    from bpfree.tuning.study import study_identity

    as_if_on_a_gpu = lambda spec, device_type, space, score: study_identity(spec, "cuda", space, score)  # noqa: E731
    monkeypatch.setattr("bpfree.tuning.job.study_identity", as_if_on_a_gpu)
    with pytest.raises(BpfreeError, match="was started with device_type 'cpu', not 'cuda'"):
        tune(job, progress=False)


def test_a_pruner_ends_the_study_after_exactly_n_finished_trials_for_fewer_epochs(tmp_path):
    """Optuna's meaning of n_trials: a pruned trial is one of the N, not an extra one, so a
    pruner saves epochs; without one the same N trials all run their budget out."""
    space = {"bp": {"lr": {"type": "float", "low": 1e-7, "high": 1e-1, "log": True}}}
    epochs = {}
    for pruner in ("median", "none"):
        job = make_job(tmp_path / pruner, 4, max_epochs=4, pruner=pruner, pruner_startup_trials=1, search_spaces=space)
        study = open_study(job.storage, "bp-digits-mlp:32", job.settings)
        for lr in (1e-2, 1e-7, 1e-7, 1e-2):  # good, hopeless, hopeless, good
            study.enqueue_trial({"lr": lr})
        result = tune(job, progress=False)
        trials = stored_trials(job.storage)
        assert len(trials) == 4 and result.counts.finished == 4
        epochs[pruner] = sum(int(r["epochs"]) for r in read_trial_table(result.trials_csv))
    assert epochs["none"] == 16 and epochs["median"] < epochs["none"], epochs


def test_a_study_with_no_complete_trial_fails_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(Backprop, "begin_stage", lambda self, stage, max_epochs: 1 / 0)
    with pytest.raises(BpfreeError, match=r"has no complete trial of 2 \(0 pruned, 2 failed\): no best params"):
        tune(make_job(tmp_path, 2), progress=False)


def test_a_trial_trains_the_stage_length_it_samples(tmp_path, capsys):
    """A stage length sampled above a trial's epoch budget would be cut to the budget in its
    trial and not in the final run: the space is capped to the budget instead, and says so."""
    job = TuneJob(
        algorithm="mf",
        dataset="digits",
        n_trials=3,
        storage=tmp_path / "study.journal",
        settings=Tuning(
            max_epochs=2,
            pruner="none",
            search_spaces={"mf": {"epochs_per_layer": {"type": "int", "low": 1, "high": 6}}},
        ),
        arch=parse_arch("mlp:16,16"),
        machine=Machine(device="cpu"),
    )
    result = tune(job, progress=False)
    assert "mf's epochs_per_layer sampled in [1, 2], not [1, 6]" in capsys.readouterr().err
    trials = stored_trials(job.storage)
    assert all(1 <= t.params["epochs_per_layer"] <= 2 for t in trials)
    assert result.space.describe()["epochs_per_layer"]["high"] == 2


@pytest.mark.slow  # two trials of a 1000x1000 MLP on mnist-5k: about a minute on 2 cores
def test_the_paper_protocol_tunes_bp_for_fixed_epochs_scoring_the_best_epoch(tmp_path):
    """tuning.protocol paper: the configuration's own count, length, stopping and score (the
    paper's BP MNIST 2x1000 study: 5 trials of 10 epochs, no early stopping, best epoch)."""
    config = tmp_path / "c.yaml"
    config.write_text("tuning: {protocol: paper, n_trials: 50}\nearly_stopping: {patience: 1, max_epochs: 40}\n")
    out = tmp_path / "best.yaml"
    code = main(
        ["tune", "--algorithm", "bp", "--dataset", "mnist-5k", "--arch", "mlp:1000,1000", "--config", str(config)]
        + ["--storage", str(tmp_path / "s.journal"), "--device", "cpu", "--threads", "1", "--out", str(out)]
        + ["--n-trials", "2"]  # the command line still wins: 2 of the paper's 5, to keep the test short
    )
    assert code == 0
    document = yaml.safe_load(out.read_text())
    assert document["score"] == "best_epoch" and document["protocol"] == "paper"
    assert document["sampler"]["multivariate"] is False and document["pruner"]["name"] == "median"
    for row in read_trial_table(tmp_path / "s.trials.csv"):
        assert int(float(row["epochs"])) == 10  # no early stopping (patience 1 would have stopped it)
        spec = yaml.safe_load((tmp_path / row["spec"]).read_text())
        assert spec["early_stopping"]["restore_best"] is False and spec["early_stopping"]["max_epochs"] == 10


def test_each_trials_end_is_one_line_in_the_jobs_log(tmp_path, capsys):
    """Outside a terminal (a workflow job's log), each trial's end is a line: its result, the
    study's finished count of N, the elapsed time and an ETA."""
    argv = tune_argv("--max-epochs", "1", "--device", "cpu", arch="mlp:8", n_trials=2, storage=tmp_path / "s.journal")
    assert main([*argv, "--out", str(tmp_path / "best.yaml")]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trial ")]
    assert len(lines) == 2
    assert "(1 of 2 finished)" in lines[0] and "(2 of 2 finished)" in lines[1]
    assert all("elapsed " in line and ", eta " in line for line in lines)


def test_a_trial_never_trains_longer_than_the_forecast_says(tmp_path):
    """tuning.max_epochs above early_stopping.max_epochs: the tuning job's trials and bpfree
    plan's forecast take the one trial policy (core.spec.Tuning.trial_policy), so no trial
    trains an epoch more than the forecast counts."""
    from bpfree.workflow.forecast import plan_rows

    config = {
        "seeds": [1],
        "device": "cpu",
        "experiments": [{"algorithm": "mf", "arch": "mlp:8", "datasets": ["digits"]}],
        "early_stopping": {"max_epochs": 2, "patience": 50},
        "tuning": {"n_trials": 2, "max_epochs": 4, "pruner": "none", "search_spaces": {"mf": {"epochs_per_layer": 50}}},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    rows = {r["algorithm"]: r for r in plan_rows(config, tmp_path / "results")}
    forecast = rows["bp"]["trial_epochs"]
    journal = tmp_path / "bp.journal"
    argv = tune_argv("--config", str(tmp_path / "c.yaml"), arch="mlp:8", n_trials=2, storage=journal)
    assert main([*argv, "--out", str(tmp_path / "best.yaml")]) == 0
    trials = optuna.load_study(
        study_name=None,
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal))),
    ).trials
    epochs = [t.user_attrs["epochs"] for t in trials]
    assert forecast == 4 and max(epochs) <= forecast and max(epochs) == 4  # the trials' budget, not the runs' 2


def test_every_config_section_a_study_reads_makes_it_stale():
    """The tune rule reruns a study when a section it reads changes: STUDY_SECTIONS holds each
    config section a TuneJob is built of (bpfree tune), measurement and checkpoint_every_s too."""
    import dataclasses

    from bpfree.core.spec import STUDY_SECTIONS, Settings
    from bpfree.tuning.job import TuneJob

    read = {"settings": "tuning"}
    taken = {read.get(f.name, f.name) for f in dataclasses.fields(TuneJob)} & set(Settings.model_fields)
    assert taken == {"tuning", "early_stopping", "precision", "measurement", "checkpoint_every_s"}
    assert taken <= set(STUDY_SECTIONS)
    tune_rules = (Path(__file__).resolve().parents[1] / "workflow/rules/tune.smk").read_text()
    assert "for k in STUDY_SECTIONS" in tune_rules
