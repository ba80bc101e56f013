"""Reliability: bad input fails in one line before any work; a finished run is not re-run and
a checkpoint of another configuration is not resumed; out of memory is named; a damaged
tuning journal is set aside and the study goes on; a killed worker's trial is recognised as
gone; diverged runs stay in the tables; fuzzed configs and params never end in a traceback.

(Killing and resuming `bpfree train` is in test_resume.py, a SIGKILLed `bpfree tune` in
test_tuning.py, the fuzz of whole workflow configs in test_config_fuzz.py.)"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing

import optuna
import psutil
import pytest
import yaml
from conftest import record, run_bpfree
from helpers import FAST_TRAIN, train_argv, tune_argv
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState
from test_workflow import REPO

import bpfree.engine.run
import bpfree.tuning.job
from bpfree.algorithms import params_from_mapping
from bpfree.algorithms.base import RANGES
from bpfree.algorithms.bp import Backprop
from bpfree.cli import main
from bpfree.core.errors import BpfreeError
from bpfree.core.io import write_csv_atomic, write_json_atomic
from bpfree.core.registry import ALGORITHMS
from bpfree.core.spec import EarlyStopping, Machine, Measurement, RunSpec, Tuning
from bpfree.engine.checkpoint import Checkpoint, CheckpointState
from bpfree.engine.resolve import load_settings, read_params_file
from bpfree.models import parse_arch
from bpfree.progress.workers import worker_gone, worker_identity
from bpfree.tuning.job import TuneJob, tune
from bpfree.workflow.grid import check_config


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def train_args(out, *extra: str, algorithm: str = "bp", dataset: str = "digits", seed: str = "1"):
    return train_argv(*extra, out=out, algorithm=algorithm, dataset=dataset, seed=seed)


@pytest.fixture
def no_work(monkeypatch):
    """Reading the data is the first work a run does: it must not be reached."""

    def started(*args, **kwargs):
        raise AssertionError("work started before the input was checked")

    monkeypatch.setattr(bpfree.engine.run, "load_splits", started)
    monkeypatch.setattr(bpfree.tuning.job, "load_splits", started)


# -- bad input: one line, non-zero exit, before any work ------------------------------------
BAD_TRAIN_INPUT = {  # name -> (extra arguments, files to write, what the line must say)
    "unknown algorithm": (["--algorithm", "bpp"], {}, "unknown algorithm 'bpp'; valid: bp"),
    "unknown dataset": (["--dataset", "imagenet"], {}, "unknown dataset 'imagenet'; valid:"),
    "unknown architecture": (["--arch", "rnn:8"], {}, "unknown kind 'rnn'; valid kinds: cnn, mlp"),
    "malformed arch spec": (
        ["--arch", "mlp:8,,8"],
        {},
        "arch: expected mlp:W1,W2,... or cnn:C1,C2,...; null: the algorithm's own, got 'mlp:8,,8'",
    ),
    "arch wider than any tensor": (["--arch", "mlp:" + "9" * 20], {}, "widths from 1 to 2147483647"),
    "arch the algorithm cannot train": (["--algorithm", "ff", "--arch", "cnn:4"], {}, "cannot train cnn:4"),
    "negative seed": (["--seed", "-1"], {}, "seed: Input should be greater than or equal to 0, got -1"),
    "misspelt config key": (
        ["--config", "c.yaml"],
        {"c.yaml": "early_stopping: {patiense: 3}\n"},
        "unknown key 'patiense' at early_stopping; valid keys: monitor",
    ),
    "config value of the wrong type": (
        ["--config", "c.yaml"],
        {"c.yaml": "measurement: {codecarbon: 'yes'}\n"},
        "measurement.codecarbon: Input should be a valid boolean, got 'yes'",
    ),
    "config NaN": (
        ["--config", "c.yaml"],
        {"c.yaml": "early_stopping: {min_delta: .nan}\n"},
        "early_stopping.min_delta: Input should be a finite number",
    ),
    "config key that is no string": (
        ["--config", "c.yaml"],
        {"c.yaml": "early_stopping: {1: 2, a: 3}\n"},
        "early_stopping[1]: Keys should be strings, got 1",
    ),
    "config that is no mapping": (["--config", "c.yaml"], {"c.yaml": "- 1\n"}, "must hold a mapping"),
    "params for another algorithm": (
        ["--params", "p.yaml"],
        {"p.yaml": "algorithm: ff\nparams: {lr: 0.1}\n"},
        "is for algorithm 'ff', not 'bp'",
    ),
    "params key misspelt": (
        ["--params", "p.yaml"],
        {"p.yaml": "lrr: 0.1\n"},
        "unknown parameter 'lrr' for algorithm 'bp'; valid: batch_size, drop_last, lr",
    ),
    "params value out of range": (
        ["--params", "p.yaml"],
        {"p.yaml": "batch_size: 0\n"},
        "'batch_size' of algorithm 'bp' must be > 0, got 0",
    ),
    "params NaN": (["--params", "p.yaml"], {"p.yaml": "lr: .nan\n"}, "must be a finite float, got nan"),
    "unwritable output directory": (["--out", "blocker/run"], {"blocker": "a file"}, "cannot create output directory"),
}


@pytest.mark.parametrize("case", list(BAD_TRAIN_INPUT))
def test_bad_train_input_is_one_line_before_any_work(tmp_path, capsys, monkeypatch, no_work, case):
    extra, files, expected = BAD_TRAIN_INPUT[case]
    monkeypatch.chdir(tmp_path)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    # later options win: the case's --algorithm/--seed/--out replace the defaults
    assert main(train_args(tmp_path / "out", *FAST_TRAIN, *extra)) == 2
    line = one_line(capsys)
    assert line.startswith("bpfree: error: ") and expected in line, line
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_missing_dataset_offline_is_one_line_and_writes_nothing(tmp_path):
    proc = run_bpfree(*train_args(tmp_path / "out", "--data-root", str(tmp_path / "none"), dataset="mnist"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"bpfree: error: dataset 'mnist' is not under {tmp_path / 'none'}; "
        f"fetch it with: bpfree download mnist --root {tmp_path / 'none'}"
    )
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_repeated_seeds_in_the_workflow_config_are_refused():
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["seeds"] = [1, 2, 1]
    with pytest.raises(BpfreeError, match=r"^seeds: items must be distinct, got \[1, 2, 1\]$"):
        check_config(config)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--out", "blocker/best.yaml"], "the directory of --out blocker is a file, not a directory"),
        (["--storage", "blocker/study.journal"], "the directory of --storage blocker is a file"),
        (["--seed", "-2"], "tuning.seed: Input should be greater than or equal to 0, got -2"),
    ],
)
def test_bad_tune_input_is_one_line_before_any_trial(tmp_path, capsys, monkeypatch, no_work, extra, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "blocker").write_text("a file")
    args = tune_argv(*extra, arch="mlp:8", storage="j/study.journal", out="best.yaml")
    assert main(args) == 2
    assert expected in one_line(capsys)
    assert not (tmp_path / "j" / "study.journal").exists()  # no study, so no trial


# -- parameters: every numeric field has a range ------------------------------------------------
def numeric_fields():
    for name in ALGORITHMS.names():
        params = ALGORITHMS.get(name).Params
        hints = typing.get_type_hints(params)
        for f in dataclasses.fields(params):
            kinds = typing.get_args(hints[f.name]) or (hints[f.name],)
            if int in kinds or float in kinds:
                yield name, f.name


@pytest.mark.parametrize("algorithm, field", list(numeric_fields()))
def test_every_numeric_parameter_has_a_range_and_refuses_a_negative_value(algorithm, field):
    assert any(applies(field) for applies, _, _ in RANGES), f"no range for {algorithm}.{field}"
    with pytest.raises(BpfreeError, match=rf"parameter '{field}' of algorithm '{algorithm}' must be"):
        params_from_mapping(algorithm, {field: -1})


def test_a_yaml_1_1_exponent_string_is_read_as_the_number():
    # PyYAML reads `lr: 1e-3` (no dot) as the string "1e-3": a params file a user writes
    assert params_from_mapping("bp", yaml.safe_load("lr: 1e-3")).lr == 1e-3


# -- finished runs, foreign checkpoints, out of memory -------------------------------------
def tiny_config(**params) -> RunSpec:
    return RunSpec(
        algorithm="bp",
        dataset="digits",
        seed=1,
        arch="mlp:8",
        params=params,
        machine=Machine(device="cpu"),
        early_stopping=EarlyStopping(max_epochs=2),
        measurement=Measurement(idle_seconds=0, codecarbon=False),
    )


def any_state() -> CheckpointState:
    return CheckpointState(
        0,
        1,
        {"stopping": [{"best": 1.0, "best_epoch": 1, "bad_epochs": 0, "stopped": False}], "selections": {}},
        {},
        {},
        {},
        [],
        1.0,
        1,
        1,
        0.1,
    )


def test_a_finished_run_is_not_run_again(tmp_path, capsys):
    args = train_args(tmp_path / "out", *FAST_TRAIN)
    assert main(args) == 0
    first = (tmp_path / "out" / "metrics.json").read_text()
    capsys.readouterr()
    assert main(args) == 0
    assert "already trained (status ok)" in capsys.readouterr().out
    assert (tmp_path / "out" / "metrics.json").read_text() == first
    # another configuration in the same directory does train
    _, _, other = bpfree.engine.run.prepare(tiny_config(lr=0.01))
    assert bpfree.engine.run.completed_record(other, tmp_path / "out") is None


def test_a_checkpoint_of_another_configuration_is_set_aside_not_resumed(tmp_path, capsys):
    out = tmp_path / "out"
    other = bpfree.engine.run.resolve(tiny_config(lr=0.5)).identity("cpu")
    Checkpoint(out / "checkpoint.pt", other).save(any_state(), epoch=1)
    result = bpfree.engine.run.train(tiny_config(), out)
    assert result.fit.pieces == 1 and result.fit.epochs == 2  # started afresh
    assert "is of another run (params differ); set aside as checkpoint.pt.other-run-" in one_line(capsys)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["checkpoint_set_aside"].startswith("checkpoint.pt.other-run-")
    assert (out / metrics["checkpoint_set_aside"]).exists() and not (out / "checkpoint.pt").exists()


@pytest.mark.parametrize("where", ["__init__", "train_epoch"])
def test_out_of_memory_on_the_cpu_names_batch_size_and_architecture(tmp_path, monkeypatch, where):
    def exhausted(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(Backprop, where, exhausted)
    with pytest.raises(BpfreeError, match=r"^out of memory on cpu training bp mlp:8 with batch size 32 on digits"):
        bpfree.engine.run.train(tiny_config(batch_size=32), tmp_path / "out")


def test_other_runtime_errors_are_not_called_out_of_memory(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(Backprop, "train_epoch", broken)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        bpfree.engine.run.train(tiny_config(), tmp_path / "out")


# -- tuning: a damaged journal, a gone worker -------------------------------------------------
def tune_job(tmp_path, n_trials: int) -> TuneJob:
    return TuneJob(
        "bp",
        "digits",
        n_trials,
        tmp_path / "study.journal",
        Tuning(max_epochs=1, pruner="none"),
        arch=parse_arch("mlp:8"),
        machine=Machine(device="cpu"),
    )


def trial_states(path) -> list[TrialState]:
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return [t.state for t in optuna.load_study(study_name=None, storage=storage).trials]


@pytest.mark.parametrize("damage", ["truncated last entry", "garbage mid-file"])
def test_a_damaged_journal_is_set_aside_and_the_study_goes_on(tmp_path, capsys, damage):
    tune(tune_job(tmp_path, 2), progress=False)
    journal = tmp_path / "study.journal"
    original = journal.read_bytes()
    lines = original.splitlines(keepends=True)
    if damage == "truncated last entry":  # a writer killed mid-line
        damaged = original[: len(original) - len(lines[-1]) // 2]
        kept = len(lines) - 1
    else:
        cut = len(lines) // 2
        damaged = b"".join(lines[:cut]) + b'{"op_code": 5, "trunc\n' + b"".join(lines[cut:])
        kept = cut
    journal.write_bytes(damaged)
    capsys.readouterr()

    result = tune(tune_job(tmp_path, 3), progress=False)
    said = [line for line in capsys.readouterr().err.splitlines() if "journal" in line]  # not the trials'
    assert len(said) == 1 and said[0].startswith(f"bpfree: journal {journal} is damaged at line {kept + 1} (byte ")
    assert f"kept its first {kept} entries" in said[0]
    assert result.journal_set_aside.read_bytes() == damaged  # the whole file, kept aside
    # 3 finished, as asked: a trial the cut journal left without its end is run again, and counts once
    assert trial_states(journal) == [TrialState.COMPLETE] * 3


def test_a_file_that_is_no_journal_is_refused_and_left_alone(tmp_path):
    journal = tmp_path / "study.journal"
    journal.write_text("seeds: [1, 2, 3]\n")
    with pytest.raises(BpfreeError, match="is not an Optuna journal"):
        tune(tune_job(tmp_path, 1), progress=False)
    assert journal.read_text() == "seeds: [1, 2, 3]\n" and len(list(tmp_path.iterdir())) == 1


def test_a_worker_is_gone_when_its_pid_was_reused_or_its_slurm_job_requeued(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    me = worker_identity()
    parent = psutil.Process(os.getppid())
    alive = {**me, "pid": parent.pid, "started": parent.create_time()}
    assert not worker_gone(alive, me)
    assert worker_gone({**alive, "started": parent.create_time() - 3600}, me)  # its pid, reused
    assert worker_gone(me, me)  # this process runs no trial while it asks for the next one
    elsewhere = {**me, "host": "other-node", "pid": 1}
    assert worker_gone({**elsewhere, "slurm_restart": "0"}, me)  # the run SLURM requeued
    assert not worker_gone(elsewhere, me)  # same SLURM run on another node: the heartbeat decides
    assert not worker_gone({**elsewhere, "slurm_task": "1", "slurm_restart": "0"}, me)  # another task


# -- diverged runs stay in the tables -------------------------------------------------------
def test_diverged_runs_are_shown_not_dropped(tmp_path):
    from bpfree.report.tables import build_tables

    paths = []
    for algorithm, seed, status in [("bp", 1, "ok"), ("bp", 2, "ok"), ("ff", 1, "diverged"), ("ff", 2, "diverged")]:
        run = tmp_path / f"{algorithm}{seed}"
        ok = status == "ok"
        write_json_atomic(
            run / "metrics.json",
            record(
                {
                    "algorithm": algorithm,
                    "arch": "mlp:8",
                    "dataset": "digits",
                    "seed": seed,
                    "status": status,
                    "test_accuracy": 0.9 if ok else math.nan,
                    "best_val_accuracy": 0.9 if ok else math.nan,
                    "epochs": 2,
                    "train_time_s": 1.0,
                }
            ),
        )
        rows = [
            {
                "epoch": 1,
                "stage": "train",
                "train_loss": 1.0,
                "val_loss": 1.0,
                "val_accuracy": 0.5,
                "epoch_time_s": 0.1,
            },
            {
                "epoch": 2,
                "stage": "train",
                "train_loss": 0.5 if ok else math.nan,
                "val_loss": 0.5 if ok else math.inf,
                "val_accuracy": 0.9,
                "epoch_time_s": 0.1,
            },
        ]
        write_csv_atomic(run / "history.csv", rows, list(rows[0]))  # "nan", "inf" as csv writes them
        paths.append(run / "metrics.json")
    assert json.loads((tmp_path / "ff1" / "metrics.json").read_text())["test_accuracy"] is None

    tables = build_tables(paths)
    assert tables.summary.filter(tables.summary["algorithm"] == "ff")["status"].to_list() == ["diverged"] * 2
    ff = tables.methods.filter(tables.methods["algorithm"] == "ff").row(0, named=True)
    assert (ff["runs"], ff["ok"], ff["diverged"]) == (2, 0, 2) and "2 diverged" in ff["note"]
    ff_delta = tables.deltas.filter(tables.deltas["algorithm"] == "ff").row(0, named=True)
    assert ff_delta["pairs"] == 0 and "2 of 2 runs diverged" in ff_delta["note"]
    assert tables.histories.height == 8


# -- fuzz: anything in a config or params file is accepted or refused in one line -------------
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-10, 10**30)
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["val_loss", "max", "USA", "1e-3", "mlp:8", "digits", "bp"])
)
keys = (
    st.sampled_from(
        [
            "patience",
            "min_delta",
            "max_epochs",
            "monitor",
            "mode",
            "restore_best",
            "idle_seconds",
            "poll_interval_s",
            "country_iso_code",
            "codecarbon",
            "cpu_tdp_w",
            "lr",
            "batch_size",
            "seeds",
            "n_trials",
            "seed",
        ]
    )
    | st.text(max_size=4)
    | st.integers()
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=5
)
sections = st.dictionaries(
    st.sampled_from(["early_stopping", "measurement", "tuning", "seeds"]) | keys, values, max_size=4
)


def yaml_file(tmp_path_factory, content) -> str:
    path = tmp_path_factory.mktemp("fuzz") / "file.yaml"
    path.write_text(yaml.safe_dump(content))
    return str(path)


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=sections | values)
def test_fuzz_train_config_file_never_a_traceback(tmp_path_factory, content):
    path = yaml_file(tmp_path_factory, content)
    try:
        load_settings(path)
    except BpfreeError as err:
        assert str(err) and "\n" not in str(err)


FIELDS = sorted({f.name for name in ALGORITHMS.names() for f in dataclasses.fields(ALGORITHMS.get(name).Params)})


@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    content=st.dictionaries(st.sampled_from(FIELDS), scalars, max_size=4) | values,
    algorithm=st.sampled_from(["bp", "ff", "mf", "cafo-rand"]),
)
def test_fuzz_params_file_never_a_traceback(tmp_path_factory, content, algorithm):
    path = yaml_file(tmp_path_factory, content)
    try:
        params = params_from_mapping(algorithm, read_params_file(path, algorithm))
    except BpfreeError as err:
        assert str(err) and "\n" not in str(err)
    else:  # what is accepted is finite and in range
        for f in dataclasses.fields(params):
            value = getattr(params, f.name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert math.isfinite(value), (f.name, value)
                assert all(ok(value) for applies, _, ok in RANGES if applies(f.name)), (f.name, value)


@settings(deadline=None)
@given(
    extra=st.dictionaries(keys, values, min_size=1, max_size=3),
    where=st.sampled_from(["top", "early_stopping", "measurement", "tuning"]),
)
def test_fuzz_workflow_config_never_a_traceback(extra, where):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    (config if where == "top" else config[where]).update(extra)  # misspelt keys, odd values
    try:
        check_config(config)
    except BpfreeError as err:
        assert str(err) and "\n" not in str(err)
