"""The paper's hyperparameters as a choice: ``bpfree train/spec --paper-params`` and
``params: paper`` on an experiment (no study; the row's params and early stopping), and
``data_from`` (the download job imports a local copy with --from)."""

from __future__ import annotations

import copy

import pytest
import yaml
from test_workflow import REPO, job_counts, load, snakemake

from bpfree.core.errors import BpfreeError
from bpfree.core.paper import paper_row
from bpfree.core.spec import load_spec
from bpfree.workflow.grid import Study, check_config, expand_runs, study_params


def cli(capsys, *argv: str) -> tuple[int, str]:
    from bpfree.cli import main

    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_spec_with_paper_params_takes_the_rows_params_and_stopping(tmp_path, capsys):
    out = tmp_path / "spec.yaml"
    args = ("--algorithm", "bp", "--dataset", "fashion-mnist", "--arch", "mlp:2000,2000,2000,2000", "--seed", "3")
    code, err = cli(capsys, "spec", *args, "--paper-params", "--out", str(out))
    assert code == 0, err
    spec, row = load_spec(out), paper_row("bp", "mlp:2000,2000,2000,2000", "fashion-mnist")
    assert {k: spec.params[k] for k in row.params} == row.params
    assert spec.early_stopping == row.early_stopping
    # --max-epochs still overrides the row's budget (a short check of a paper run)
    code, _ = cli(capsys, "spec", *args, "--paper-params", "--max-epochs", "2", "--out", str(out))
    assert code == 0 and load_spec(out).early_stopping.max_epochs == 2
    assert load_spec(out).early_stopping.patience == row.early_stopping.patience


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--arch", "mlp:64", "--paper-params"), "no configuration for mf mlp:64 on fashion-mnist"),
        (("--paper-params",), "per architecture: give the arch"),
        (("--arch", "mlp:1000,1000", "--paper-params", "--params", "x.yaml"), "not both"),
    ],
)
def test_paper_params_that_cannot_apply_are_one_line(tmp_path, capsys, extra, message):
    (tmp_path / "x.yaml").write_text("lr: 0.1\n")
    args = ("--algorithm", "mf", "--dataset", "fashion-mnist", "--seed", "1")
    code, err = cli(capsys, "spec", *args, *extra, "--out", str(tmp_path / "s.yaml"))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.yaml").exists()


def test_mnist_5k_takes_the_papers_mnist_rows():
    assert paper_row("mf", "mlp:1000,1000", "mnist-5k") == paper_row("mf", "mlp:1000,1000", "mnist")


def test_a_paper_experiment_needs_its_row_and_its_twins():
    config = load("config.yaml")
    config["experiments"][0]["params"] = "paper"  # ff mlp:256,256,256 on digits: not the paper's
    with pytest.raises(BpfreeError, match=r"experiments\[0\] \(params: paper\): the paper's code has no configuration"):
        check_config(config)


def test_a_shared_bp_twin_must_be_asked_for_one_way():
    config = load("fashion-mnist.yaml")
    config["experiments"][3]["params"] = "tuned"  # cafo-dfa; cafo-rand shares its BP twin (cnn)
    with pytest.raises(BpfreeError, match=r"experiments\[3\] asks for params: tuned for bp cnn:32,128,512"):
        check_config(config)


def test_data_from_must_name_an_importable_dataset():
    config = copy.deepcopy(load("config.yaml"))
    config["data_from"] = {"digits": "/somewhere"}
    with pytest.raises(BpfreeError, match="data_from.digits: dataset 'digits' ships with its package"):
        check_config(config)
    config["data_from"] = {"nope": "/somewhere"}
    with pytest.raises(BpfreeError, match="unknown dataset 'nope'"):
        check_config(config)


def test_the_fashion_mnist_config_is_the_papers_comparisons_with_its_values():
    config = load("fashion-mnist.yaml")
    checked = check_config(config)
    modes = study_params(checked)
    assert set(modes.values()) == {"paper"}
    assert set(modes) == {
        Study("fashion-mnist", "mlp:1000,1000", "mf"),
        Study("fashion-mnist", "mlp:1000,1000", "bp"),
        Study("fashion-mnist", "mlp:2000,2000,2000,2000", "ff"),
        Study("fashion-mnist", "mlp:2000,2000,2000,2000", "bp"),
        Study("fashion-mnist", "cnn:32,128,512", "cafo-rand"),
        Study("fashion-mnist", "cnn:32,128,512", "cafo-dfa"),
        Study("fashion-mnist", "cnn:32,128,512", "bp"),
    }
    assert checked.seeds == [1, 2, 3, 4, 5] and len(expand_runs(config)) == 35
    assert checked.data_from == {"fashion-mnist": "/usr/share/datasets/fashion-mnist"}


def test_dry_run_imports_with_from_and_plans_no_study(tmp_path):
    """``snakemake -n`` on config/fashion-mnist.yaml, with tuning switched on as well: the
    paper experiments still plan no tune job, every spec takes --paper-params, and the
    download job imports the Debian folder."""
    config = load("fashion-mnist.yaml")
    config["tuning"] = {"n_trials": 5}
    path = tmp_path / "fm.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake("-n", "-p", "--cores", "2", "--configfile", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = job_counts(proc.stdout)
    assert "tune" not in jobs and jobs["spec"] == jobs["train"] == 35 and jobs["download"] == 1
    specs = [line for line in proc.stdout.splitlines() if "bpfree spec " in line]
    assert len(specs) == 35 and all("--paper-params" in line for line in specs)
    assert "bpfree download fashion-mnist --root data --from /usr/share/datasets/fashion-mnist" in proc.stdout


@pytest.mark.slow  # a second whole dry run (13 s); the fast tier keeps the paper config's
def test_the_default_config_trains_from_its_studies_not_the_papers_params(tmp_path):
    """The default config (no paper experiment): no spec takes --paper-params, and each takes
    its study's best parameters where the config tunes."""
    config = load("config.yaml")
    config["data_from"] = {}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake("-n", "-p", "--cores", "2", "--configfile", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--paper-params" not in proc.stdout
    if check_config(config).tuning.n_trials:
        assert "--params results/c/tuning/" in proc.stdout


def test_plan_forecasts_no_tuning_for_paper_studies_and_the_rows_budgets():
    from bpfree.workflow.forecast import plan_rows

    rows = {(r["algorithm"], r["arch"]): r for r in plan_rows(load("fashion-mnist.yaml"), results=REPO / "nowhere")}
    assert all(r["tuning_epochs"] == 0 and r["trials"] == 0 for r in rows.values())
    assert rows[("mf", "mlp:1000,1000")]["run_epochs"] == 2 * 12  # epochs_per_layer of its row, two layers
    assert rows[("bp", "mlp:1000,1000")]["run_epochs"] == 100
