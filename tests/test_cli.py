"""``bpfree`` on the command line: what a run writes, and how bad input is reported (one line
on stderr that says what is valid, a non-zero exit, never a traceback)."""

from __future__ import annotations

import csv
import json
import math

import pytest
from conftest import run_bpfree
from helpers import train_argv

from bpfree.cli import main
from bpfree.core.registry import ALGORITHMS, DATASETS

HISTORY_COLUMNS = ["epoch", "stage", "train_loss", "val_loss", "val_accuracy", "epoch_time_s"]


# -- a real run ----------------------------------------------------------------------------
def test_train_writes_metrics(bp_digits_mlp_run):
    proc, _, metrics = bp_digits_mlp_run
    assert metrics["algorithm"] == "bp" and metrics["arch"] == "mlp:256,256"
    assert metrics["dataset"] == "digits" and metrics["seed"] == 7
    assert metrics["status"] == "ok"
    assert 0 <= metrics["test_accuracy"] <= 1 and 0 <= metrics["best_val_accuracy"] <= 1
    assert isinstance(metrics["epochs"], int) and metrics["epochs"] >= 1
    assert metrics["train_time_s"] > 0
    assert "test accuracy" in proc.stdout


def test_train_writes_one_history_row_per_epoch(bp_digits_mlp_run):
    _, out, metrics = bp_digits_mlp_run
    with open(out / "history.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert reader.fieldnames[: len(HISTORY_COLUMNS)] == HISTORY_COLUMNS
        rows = list(reader)
    assert len(rows) == metrics["epochs"]
    assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {r["stage"] for r in rows} == {"train"}
    for row in rows:
        assert math.isfinite(float(row["train_loss"])) and math.isfinite(float(row["val_loss"]))
        assert 0 <= float(row["val_accuracy"]) <= 1 and float(row["epoch_time_s"]) > 0
    # early stopping ended the run (or the budget did), and the loss went down on the way
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries behind


# -- bad input -----------------------------------------------------------------------------
def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith("bpfree")
    return lines[0]


def train_args(tmp_path, *extra: str, **overrides: str) -> list[str]:
    return train_argv(*extra, **{"seed": "0", "out": tmp_path / "out", **overrides})


@pytest.fixture
def params_file(tmp_path):
    def write(text: str):
        path = tmp_path / "params.yaml"
        path.write_text(text)
        return str(path)

    return write


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"algorithm": "sgd-magic"}, ["unknown algorithm 'sgd-magic'", "valid:", "bp"]),
        ({"dataset": "imagenet"}, ["unknown dataset 'imagenet'", "digits", "mnist", "cifar10"]),
        ({"arch": "mlp:10,x"}, ["arch: expected mlp:W1,W2,... or cnn:C1,C2,...", "'mlp:10,x'"]),
        ({"arch": "rnn:10"}, ["unknown kind 'rnn'", "cnn", "mlp"]),
        ({"arch": "cnn:4,4,4,4"}, ["4 blocks", "8x8"]),
        ({"max_epochs": "0"}, ["early_stopping.max_epochs: Input should be greater than or equal to 1"]),
        ({"device": "tpu"}, ["machine.device: expected torch device: auto (cuda if present), cpu", "'tpu'"]),
        ({"device": "cpu", "precision": "tf32"}, ["tf32 needs a CUDA device"]),
        ({"checkpoint_every_s": "-5"}, ["checkpoint_every_s: Input should be greater than or equal to 0"]),
    ],
)
def test_bad_arguments_give_one_line(tmp_path, capsys, overrides, expected):
    assert main(train_args(tmp_path, **overrides)) != 0
    line = one_error_line(capsys)
    for text in expected:
        assert text in line


def test_params_file_with_unknown_key(tmp_path, capsys, params_file):
    path = params_file("lr: 0.01\nmomentum: 0.9\n")
    assert main(train_args(tmp_path, params=path)) != 0
    line = one_error_line(capsys)
    assert "'momentum'" in line and "valid: batch_size, drop_last, lr, weight_decay" in line


@pytest.mark.parametrize("text", ["algorithm: ff\nparams:\n  lr: 0.01\n", "algorithm: ff\nlr: 0.01\n"])
def test_params_file_for_another_algorithm(tmp_path, capsys, params_file, text):
    assert main(train_args(tmp_path, params=params_file(text))) != 0
    assert "is for algorithm 'ff', not 'bp'" in one_error_line(capsys)


def test_params_file_written_by_tune_is_accepted(tmp_path, capsys, params_file):
    path = params_file("algorithm: bp\nparams:\n  lr: 0.003\n  batch_size: 64\nbest_value: 0.97\n")
    args = train_args(tmp_path, "--arch", "mlp:8", "--max-epochs", "1", "--device", "cpu", params=path)
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["params"] == {
        "lr": 0.003,
        "weight_decay": 1e-4,
        "batch_size": 64,
        "drop_last": False,
        "init": "pytorch-zero-bias",
        "head_init": "pytorch",
    }


def test_missing_params_file(tmp_path, capsys):
    assert main(train_args(tmp_path, params=str(tmp_path / "nope.yaml"))) != 0
    assert "cannot read" in one_error_line(capsys)


def test_config_with_unknown_early_stopping_key(tmp_path, capsys, params_file):
    path = params_file("early_stopping:\n  patients: 3\n")
    assert main(train_args(tmp_path, config=path)) != 0
    line = one_error_line(capsys)
    assert "patients" in line and "patience" in line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("precision: fp16\n", "precision: Input should be 'fp32', 'tf32' or 'bf16', got 'fp16'"),
        ("checkpoint_every_s: soon\n", "checkpoint_every_s: Input should be a valid number, got 'soon'"),
    ],
)
def test_config_with_a_bad_top_level_value(tmp_path, capsys, params_file, text, message):
    assert main(train_args(tmp_path, config=params_file(text))) != 0
    assert message in one_error_line(capsys)


def test_bf16_training_learns_and_is_recorded_as_part_of_the_run(tmp_path, capsys):
    args = train_args(
        tmp_path,
        "--arch",
        "mlp:64",
        "--max-epochs",
        "8",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--measure-idle-s",
        "0",
        "--measure-codecarbon",
        "off",
        precision="bf16",
    )
    assert main(args) == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["precision"] == "bf16" and metrics["test_accuracy"] > 0.85
    with open(tmp_path / "out" / "history.csv") as fh:
        bf16_first = next(csv.DictReader(fh))["train_loss"]
    # an fp32 run of the same configuration is another run: not "already trained", and it
    # does not overwrite the finished bf16 run (refused in one line), it trains elsewhere
    fp32 = [
        "--arch",
        "mlp:64",
        "--max-epochs",
        "1",
        "--device",
        "cpu",
        "--measure-idle-s",
        "0",
        "--measure-codecarbon",
        "off",
    ]
    capsys.readouterr()
    assert main(train_args(tmp_path, *fp32)) == 2
    assert "holds a finished run of another specification" in capsys.readouterr().err
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["precision"] == "bf16"
    assert main(train_args(tmp_path, *fp32, out=str(tmp_path / "fp32"))) == 0
    assert "already trained" not in capsys.readouterr().out
    assert json.loads((tmp_path / "fp32" / "metrics.json").read_text())["precision"] == "fp32"
    with open(tmp_path / "fp32" / "history.csv") as fh:
        fp32_first = next(csv.DictReader(fh))["train_loss"]
    assert float(fp32_first) != float(bf16_first)  # same seed and batches: only the precision differs


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(train_args(tmp_path, out=str(blocker / "run"))) != 0
    assert "cannot create output directory" in one_error_line(capsys)


def test_missing_dataset_says_how_to_download(tmp_path, capsys):
    assert main(train_args(tmp_path, dataset="mnist", data_root=str(tmp_path / "empty"))) != 0
    assert f"bpfree download mnist --root {tmp_path / 'empty'}" in one_error_line(capsys)


@pytest.mark.parametrize("args", [["train", "--algorithm", "bp"], ["train", "--seed", "x"], ["frobnicate"], []])
def test_argparse_errors_are_one_line(capsys, args):
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    one_error_line(capsys)


def test_errors_from_a_real_process_are_one_line(tmp_path):
    proc = run_bpfree(*train_args(tmp_path, dataset="cifar10", data_root=str(tmp_path)))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "bpfree download cifar10" in lines[0]
    assert not (tmp_path / "out" / "metrics.json").exists()


# -- catalogues ----------------------------------------------------------------------------
def test_algorithms_lists_every_registered_name(capsys):
    assert main(["algorithms"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ALGORITHMS.names() and "bp" in names


def test_datasets_lists_every_registered_name(capsys):
    assert main(["datasets"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert names == DATASETS.names()
    assert {"digits", "mnist", "fashion-mnist", "cifar10", "cifar100"} <= set(names)


def test_set_overrides_any_key_of_the_settings_typed_and_checked(tmp_path, capsys):
    """``--set SECTION.KEY=VALUE`` beside the named flags: typed as YAML, checked as the config's
    key would be, in one line when wrong; the named flag and --set reach the same spec."""
    import yaml

    out = tmp_path / "spec.yaml"
    argv = ["spec", "--algorithm", "bp", "--dataset", "digits", "--seed", "1", "--out", str(out)]
    assert (
        main([*argv, "--set", "early_stopping.patience=3", "--set", "measurement.idle_reuse_s=0", "--max-epochs", "7"])
        == 0
    )
    spec = yaml.safe_load(out.read_text())
    assert spec["early_stopping"]["patience"] == 3 and spec["early_stopping"]["max_epochs"] == 7
    assert spec["measurement"]["idle_reuse_s"] == 0
    assert (
        main(
            [
                *argv,
                "--set",
                "early_stopping.max_epochs=7",
                "--set",
                "measurement.idle_reuse_s=0",
                "--set",
                "early_stopping.patience=3",
            ]
        )
        == 0
    )
    assert yaml.safe_load(out.read_text()) == spec
    capsys.readouterr()
    assert main([*argv, "--set", "early_stopping.patiense=3"]) == 2
    assert "unknown key 'patiense' at command line.early_stopping; valid keys: monitor" in one_error_line(capsys)
    assert main([*argv, "--set", "early_stopping.patience=soon"]) == 2
    assert "early_stopping.patience" in one_error_line(capsys)
    assert main([*argv, "--set", "patience"]) == 2
    assert "expected SECTION.KEY=VALUE" in one_error_line(capsys)


def test_max_epochs_says_which_budget_it_sets():
    """One meaning per command: train's sets a run's (early_stopping), tune's a trial's (tuning)."""
    from bpfree.cli import build_parser

    helps = {}
    for action in build_parser()._subparsers._group_actions[0].choices.items():
        name, parser = action
        for option in parser._actions:
            if "--max-epochs" in option.option_strings:
                helps[name] = option.help
    assert helps["train"].startswith("sets early_stopping.max_epochs") and helps["spec"] == helps["train"]
    assert helps["tune"].startswith("sets tuning.max_epochs")
