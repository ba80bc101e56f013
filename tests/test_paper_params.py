"""bpfree/core/paper_params.yaml, the paper's final hyperparameters as package data: every row
resolves through bpfree's own checks, the paper's grid (config/paper.yaml) is covered with
each BP twin, and the rows runs were started with hold their values."""

from __future__ import annotations

import dataclasses
import typing
from importlib import resources
from pathlib import Path

import pytest
import yaml

import bpfree.engine.plugins
from bpfree.algorithms import check_trainable, params_from_mapping
from bpfree.core.registry import ALGORITHMS, DATASETS
from bpfree.core.spec import EarlyStopping, parse
from bpfree.models import parse_arch

REPO = Path(__file__).resolve().parents[1]
ROW_KEYS = {"algorithm", "arch", "dataset", "source", "params", "early_stopping", "notes", "tuning", "tuning_source"}
SOURCE_DIRS = ("configs/mf/", "configs/ff/", "configs/cafo/", "configs/bp_baselines/")


@pytest.fixture(scope="module")
def doc() -> dict:
    bpfree.engine.plugins.load()
    return yaml.safe_load(resources.files("bpfree.core").joinpath("paper_params.yaml").read_text())


def key(row: dict) -> tuple[str, str, str]:
    return row["algorithm"], row["arch"], row["dataset"]


def test_the_file_ships_with_the_package_and_names_its_source(doc):
    assert doc["version"] == 1
    assert doc["repository"] == "github.com/Przemyslaw11/BeyondBackpropagation"
    assert doc["commit"] == "597d79d"
    for row in doc["rows"]:
        assert set(row) == ROW_KEYS, row
        assert row["source"].startswith(SOURCE_DIRS) and row["source"].endswith(".yaml"), row["source"]
        assert row["tuning_source"].startswith("configs/") and row["tuning_source"].endswith(".yaml"), key(row)
        assert isinstance(row["notes"], list) and all(isinstance(n, str) and n for n in row["notes"]), key(row)


def test_every_row_is_unique(doc):
    keys = [key(row) for row in doc["rows"]]
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)


def test_every_row_resolves_through_bpfree_s_own_checks(doc):
    for row in doc["rows"]:
        algorithm, arch, dataset = key(row)
        DATASETS.get(dataset)
        check_trainable(algorithm, parse_arch(arch))
        params = params_from_mapping(algorithm, row["params"])
        policy = parse(EarlyStopping, row["early_stopping"], "early_stopping")
        assert set(row["early_stopping"]) == set(EarlyStopping.model_fields), key(row)
        for name, value in row["params"].items():
            assert getattr(params, name) == value, (key(row), name)
        # an algorithm's own stage limits are capped by the run's budget: none may be cut
        for limit in ("epochs_per_layer", "dfa_epochs"):
            if limit in row["params"]:
                assert row["params"][limit] <= policy.max_epochs, (key(row), limit)


def test_values_have_the_field_s_own_type_as_written(doc):
    """Floats written as floats (0.0, 1.0e-4), ints as ints: the checker would coerce 1e-4
    (a string to YAML 1.1) or 0, but the spec that reads a row is strict."""
    for row in doc["rows"]:
        hints = typing.get_type_hints(ALGORITHMS.get(row["algorithm"]).Params)
        for name, value in row["params"].items():
            allowed = typing.get_args(hints[name]) or (hints[name],)
            if float in allowed:
                assert type(value) is float, (key(row), name, value)
            elif bool in allowed:
                assert type(value) is bool, (key(row), name, value)
            elif int in allowed:
                assert type(value) is int, (key(row), name, value)
            else:
                assert type(value) is str, (key(row), name, value)
        es = row["early_stopping"]
        assert type(es["min_delta"]) is float and type(es["restore_best"]) is bool, key(row)
        assert type(es["patience"]) is int and type(es["max_epochs"]) is int, key(row)


def test_the_paper_s_grid_and_each_bp_twin_have_a_row(doc):
    grid = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    have = {key(row) for row in doc["rows"]}
    wanted = set()
    for experiment in grid["experiments"]:
        for dataset in experiment["datasets"]:
            wanted.add((experiment["algorithm"], experiment["arch"], dataset))
            wanted.add(("bp", experiment["arch"], dataset))
    assert not wanted - have, sorted(wanted - have)
    assert len(wanted) == 26  # 15 BP-free rows and 11 distinct BP twins
    assert sum(1 for row in doc["rows"] if row["algorithm"] == "bp") == 11


def test_every_params_field_is_a_field_of_the_algorithm(doc):
    for row in doc["rows"]:
        fields = {f.name for f in dataclasses.fields(ALGORITHMS.get(row["algorithm"]).Params)}
        assert set(row["params"]) <= fields, (key(row), set(row["params"]) - fields)


def test_the_rows_runs_were_started_with_hold_their_values(doc):
    rows = {key(row): row for row in doc["rows"]}
    mf = rows["mf", "mlp:1000,1000", "fashion-mnist"]
    assert mf["params"] == {
        "lr": 0.0003873086262136253,
        "weight_decay": 0.0,
        "batch_size": 128,
        "epochs_per_layer": 12,
        "drop_last": True,
        "init": "kaiming-relu",
    }
    assert mf["early_stopping"] == {
        "monitor": "val_loss",
        "mode": "min",
        "patience": 10,
        "min_delta": 0.0001,
        "max_epochs": 100,
        "restore_best": True,
        "restore_by": "monitor",
    }
    bp = rows["bp", "mlp:1000,1000", "fashion-mnist"]
    assert bp["params"] == {
        "lr": 0.00021316290979390737,
        "weight_decay": 2.7122805865833542e-05,
        "batch_size": 128,
        "drop_last": True,
        "init": "kaiming-relu",
        "head_init": "normal-0.01",
    }
    assert bp["early_stopping"] == {
        "monitor": "val_loss",
        "mode": "min",
        "patience": 10,
        "min_delta": 0.0,
        "max_epochs": 100,
        "restore_best": True,
        "restore_by": "val_accuracy",
    }
    assert mf["source"] == "configs/mf/fashion_mnist_mlp_2x1000.yaml"
    assert bp["source"] == "configs/bp_baselines/fashion_mnist_mlp_2x1000_bp.yaml"


# -- what the paper's code ran, in every setting that can change a number ----------------------------
MF_TWINS = {"mlp:1000,1000", "mlp:2000,2000,2000"}  # MF's archs: its BP twin is its MF_MLP
FF_TWINS = {"mlp:1000,1000,1000", "mlp:2000,2000,2000,2000"}


def test_every_row_trains_what_the_papers_code_trained(doc):
    """Each choice the paper's code makes without a config key, set in every row as its code
    makes it (docs/paper-code.md): drop_last, BP's restore rule, MF's and the twins' init, FF's
    label value, CaFo's BatchNorm statistics and per-predictor stopping."""
    rows = doc["rows"]
    assert len(rows) == 26
    for row in rows:
        params, stopping, name = row["params"], row["early_stopping"], key(row)
        assert params["drop_last"] is True, name  # its training DataLoaders: drop_last=True
        if row["algorithm"] == "bp":
            assert stopping["monitor"] == "val_loss" and stopping["restore_by"] == "val_accuracy", name
            if row["arch"] in MF_TWINS:
                assert (params["init"], params["head_init"]) == ("kaiming-relu", "normal-0.01"), name
            elif row["arch"] in FF_TWINS:
                assert params["init"] == "pytorch" and params.get("head_init", "pytorch") == "pytorch", name
            else:  # the CNN twin: the CaFo blocks' own init, a default Linear head
                assert "init" not in params and "head_init" not in params, name
        else:
            assert stopping["restore_by"] == "monitor", name
        if row["algorithm"] == "mf":
            assert params["init"] == "kaiming-relu", name
        if row["algorithm"] == "ff":
            assert params["label_value"] == "one", name
        if row["algorithm"].startswith("cafo"):
            assert (params["batchnorm"], params["stopping"]) == ("keep", "per-predictor"), name
            assert stopping["restore_best"] is False, name
    assert sum(row["algorithm"] == "bp" for row in rows) == 11


def test_cafo_rand_mnist_is_the_row_its_published_runs_ran(doc):
    """Its published runs logged no predictor_lr, predictor_weight_decay or num_epochs_per_block:
    the code's defaults ran (lr 0.001, weight decay 0, 10 epochs a predictor), patience 20."""
    row = {key(r): r for r in doc["rows"]}["cafo-rand", "cnn:32,128,512", "mnist"]
    assert (row["params"]["predictor_lr"], row["params"]["predictor_weight_decay"]) == (0.001, 0.0)
    assert (row["early_stopping"]["max_epochs"], row["early_stopping"]["patience"]) == (10, 20)
    assert row["notes"][0].startswith("as it ran")
