"""``bpfree dashboard``'s storage: every study journal of a results folder in one read-only
Optuna storage (the page itself is loaded in headless Chromium in test_status_workflow.py)."""

from __future__ import annotations

import time

import optuna
import pytest
from test_status import journal_study

from bpfree.cli import main
from bpfree.commands.dashboard import journals, make_storage


@pytest.fixture
def results(tmp_path):
    for algorithm, value in (("bp", 0.9), ("mf", 0.8)):
        journal_study(
            tmp_path / f"tuning/digits/mlp-8-8/{algorithm}/study.journal",
            [{"state": "complete", "value": value, "epochs": 3, "time_s": 1.0}, {"state": "running"}],
        )
    return tmp_path


def test_every_journal_is_one_study_of_one_storage(results):
    assert [name for name, _ in journals(results)] == ["digits mlp:8,8 bp", "digits mlp:8,8 mf"]
    storage = make_storage(results)
    studies = {s.study_name: s for s in storage.get_all_studies()}
    assert sorted(studies) == ["digits mlp:8,8 bp", "digits mlp:8,8 mf"]
    study = optuna.load_study(study_name="digits mlp:8,8 mf", storage=storage)
    assert study.best_value == 0.8 and [t.state.name for t in study.trials] == ["COMPLETE", "RUNNING"]
    assert study.trials[0].user_attrs["epochs"] == 3


def test_the_storage_refuses_every_write_and_the_journals_are_only_read(results):
    before = {p: p.stat().st_mtime_ns for p in results.rglob("*")}
    storage = make_storage(results)
    study_id = storage.get_study_id_from_name("digits mlp:8,8 bp")
    with pytest.raises(PermissionError, match="read-only"):
        storage.set_study_user_attr(study_id, "note", "x")
    with pytest.raises(PermissionError, match="read-only"):
        storage.delete_study(study_id)
    with pytest.raises(PermissionError, match="read-only"):
        storage.create_new_trial(study_id)
    time.sleep(0.01)
    assert {p: p.stat().st_mtime_ns for p in results.rglob("*")} == before


def test_a_missing_results_folder_is_one_line(tmp_path, capsys):
    pytest.importorskip("optuna_dashboard")
    assert main(["dashboard", "--results", str(tmp_path / "nowhere")]) == 2
    assert "no results folder at" in capsys.readouterr().err
