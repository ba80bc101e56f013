"""What the study costs: epoch budgets counted per stage, the cost table's sums and shares,
the figure, and ``bpfree plan``'s forecast of the paper grid (nothing run)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from bpfree.cli import main
from bpfree.core.errors import BpfreeError
from bpfree.core.outputs import TRIAL_COLUMNS
from bpfree.core.spec import read_yaml
from bpfree.report.cost import ALL, COST_COLUMNS, cost_chart, cost_display, cost_table, read_trials
from bpfree.tuning.budget import stage_budgets, worst_case_epochs
from bpfree.tuning.space import search_space
from bpfree.workflow.forecast import plan_rows


def trials_frame(rows: list[tuple]) -> pl.DataFrame:
    """(algorithm, state, epochs, time_s, energy_j, source) on mlp:8 / digits."""
    records = []
    for i, (algorithm, state, epochs, time_s, energy, source) in enumerate(rows):
        records.append(
            {
                "study": f"{algorithm}-digits-mlp:8",
                "algorithm": algorithm,
                "arch": "mlp:8",
                "dataset": "digits",
                "pruner": "median",
                "number": i,
                "state": state,
                "value": 0.9 if state == "complete" else None,
                "epochs": float(epochs),
                "time_s": time_s,
                "train_time_s": time_s,
                "energy_j": energy,
                "energy_source": source,
                "reason": "",
                "params": "{}",
            }
        )
    return pl.DataFrame(records, schema=read_trials([]).schema)


def runs_frame(rows: list[tuple]) -> pl.DataFrame:
    """(algorithm, seed, epochs, train_time_s, energy_j, source, co2_kg) on mlp:8 / digits;
    CodeCarbon's own energy ten times ours where it measured CO2."""
    keys = ["algorithm", "seed", "epochs", "train_time_s", "energy_j", "energy_source", "co2_kg"]
    frame = pl.DataFrame([dict(zip(keys, r, strict=True)) for r in rows])
    codecarbon = pl.when(pl.col("co2_kg").is_not_null()).then(10 * pl.col("energy_j"))
    return frame.with_columns(
        pl.lit("mlp:8").alias("arch"), pl.lit("digits").alias("dataset"), codecarbon.alias("codecarbon_energy_j")
    )


def test_the_cost_table_adds_tuning_and_runs_per_study_and_for_the_grid():
    trials = trials_frame(
        [
            ("bp", "complete", 5, 10.0, 100.0, "estimate"),
            ("bp", "pruned", 2, 4.0, 40.0, "estimate"),
            ("bp", "failed", 0, 1.0, None, None),  # a stale trial: time, no energy
            ("ff", "complete", 5, 20.0, 200.0, "rapl"),
        ]
    )
    runs = runs_frame(
        [
            ("bp", 1, 10, 30.0, 300.0, "estimate", 3e-5),
            ("bp", 2, 10, 30.0, 300.0, "estimate", 3e-5),
            ("ff", 1, 20, 60.0, 600.0, "rapl", None),
            ("mf", 1, 7, 5.0, 50.0, "estimate", None),  # a study never tuned
        ]
    )
    cost = cost_table(runs, trials)
    assert cost.columns == COST_COLUMNS
    rows = {r["algorithm"]: r for r in cost.to_dicts()}
    assert list(rows) == ["bp", "ff", "mf", ALL]

    bp = rows["bp"]
    assert (bp["tuning_trials_complete"], bp["tuning_trials_pruned"], bp["tuning_trials_failed"]) == (1, 1, 1)
    assert bp["tuning_epochs"] == 7 and bp["tuning_time_s"] == 15.0
    assert bp["tuning_energy_j"] == 140.0 and bp["tuning_unmeasured_trials"] == 1
    assert bp["runs"] == 2 and bp["runs_epochs"] == 20 and bp["runs_time_s"] == 60.0 and bp["runs_energy_j"] == 600.0
    assert bp["tuning_share_time"] == pytest.approx(15 / 75)
    assert bp["tuning_share_energy"] == pytest.approx(140 / 740)
    # tuning's CO2: its energy at the grid intensity CodeCarbon applied to the runs (its CO2 over
    # its own energy, 6e-5 kg over 6,000 J), labelled so; the runs' CO2 of our energy the same
    # way, CodeCarbon's own beside its energy
    assert bp["tuning_co2_kg"] == pytest.approx(140 * 6e-5 / 6000) and "grid intensity" in bp["tuning_co2_source"]
    assert bp["runs_co2_ours_kg"] == pytest.approx(600 * 6e-5 / 6000)
    assert bp["runs_co2_kg"] == pytest.approx(6e-5) and bp["runs_codecarbon_energy_j"] == 6000.0

    assert rows["mf"]["tuning_epochs"] == 0 and rows["mf"]["tuning_share_time"] == 0.0
    assert rows["ff"]["tuning_co2_kg"] is None  # no CO2 measured for its runs: none scaled

    grid = rows[ALL]
    assert grid["tuning_time_s"] == 35.0 and grid["runs_time_s"] == 125.0 and grid["total_time_s"] == 160.0
    assert grid["tuning_energy_j"] == 340.0 and grid["runs_energy_j"] == 1250.0
    # sums over differently measured work name every source: an estimate never reads as measured
    assert grid["tuning_energy_source"] == "rapl+estimate" and grid["runs_energy_source"] == "rapl+estimate"
    assert grid["tuning_co2_kg"] == pytest.approx(bp["tuning_co2_kg"])
    assert grid["tuning_share_time"] == pytest.approx(35 / 160)

    shown = cost_display(cost)
    assert shown["study"].to_list()[-1] == "whole grid"
    assert shown.filter(pl.col("study") == "bp mlp:8 digits")["trials (c/p/f)"].item() == "1/1/1"
    assert "(rapl+estimate)" in shown["tuning energy"].to_list()[-1]
    bp_shown = shown.filter(pl.col("study") == "bp mlp:8 digits").row(0, named=True)
    assert bp_shown["run CO2 (of that energy)"] == "0.00600 g"  # 600 J at 10 g per MJ
    assert bp_shown["run CO2, CodeCarbon's (of its energy)"] == "0.0600 g (of 6.00 kJ)"


def test_without_tuning_the_table_has_the_runs_and_a_zero_share():
    cost = cost_table(runs_frame([("bp", 1, 10, 30.0, None, None, None)]), read_trials([]))
    grid = cost.filter(pl.col("algorithm") == ALL).to_dicts()[0]
    assert grid["tuning_time_s"] == 0.0 and grid["runs_time_s"] == 30.0 and grid["tuning_share_time"] == 0.0
    assert grid["tuning_energy_j"] is None and grid["runs_energy_j"] is None and grid["tuning_share_energy"] is None
    assert cost_display(cost)["run energy"].to_list() == ["not measured", "not measured"]


def test_a_file_that_is_no_trial_table_fails_in_one_line(tmp_path):
    bad = tmp_path / "x.trials.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(BpfreeError, match="is not a trial table"):
        read_trials([bad])
    assert read_trials([]).columns == TRIAL_COLUMNS


def test_epoch_budgets_count_every_stage():
    # MF: one stage per layer, each capped by its own epochs_per_layer and the budget
    assert stage_budgets("mf", "mlp:1000,1000,1000", "digits", {}, 30) == [30, 30, 30]
    assert stage_budgets("mf", "mlp:1000,1000", "digits", {"epochs_per_layer": 5}, 30) == [5, 5]
    # cafo-dfa: DFA (dfa_epochs, capped) then the predictors; cafo-rand: the predictors only
    assert stage_budgets("cafo-dfa", "cnn:32,128,512", "digits", {"dfa_epochs": 50}, 30) == [30, 30]
    assert stage_budgets("cafo-rand", "cnn:32,128,512", "digits", {}, 30) == [30]
    assert stage_budgets("bp", "mlp:2000,2000,2000,2000", "digits", {}, 30) == [30]
    # a trial's worst case takes the space's largest epoch counts
    assert worst_case_epochs("mf", "mlp:8,8", "digits", search_space("mf"), 30) == 60
    assert worst_case_epochs("cafo-dfa", "cnn:8,8,8", "digits", search_space("cafo-dfa"), 100) == 200
    assert worst_case_epochs("cafo-dfa", "cnn:8,8,8", "digits", None, 100) == 110  # defaults: dfa_epochs 10


def test_the_figure_stacks_tuning_on_the_runs_or_says_why_it_cannot():
    cost = cost_table(
        runs_frame([("bp", 1, 10, 3600.0, 3.6e6, "estimate", None)]),
        trials_frame([("bp", "complete", 5, 7200.0, 7.2e6, "estimate")]),
    )
    spec = cost_chart(cost).to_dict()
    values = [v for d in spec["datasets"].values() for v in d]
    assert {(v["phase"], v["quantity"], v["value"]) for v in values} == {
        ("tuning", "time (h)", 2.0),
        ("final runs", "time (h)", 1.0),
        ("tuning", "energy (kWh, estimate)", 2.0),
        ("final runs", "energy (kWh, estimate)", 1.0),
    }
    assert "67% of the time" in str(spec["title"])
    assert "no cost table" in str(cost_chart(None).to_dict())


def test_aggregate_writes_the_cost_table_beside_the_others(tmp_path):
    from bpfree.report.tables import Tables, write_tables

    empty = pl.DataFrame()
    cost = cost_table(runs_frame([("bp", 1, 10, 30.0, 5.0, "estimate", None)]), read_trials([]))
    tables = Tables(empty, empty, empty, empty, pl.DataFrame({"x": [1]}), cost=cost)
    write_tables(tables, tmp_path)
    assert pl.read_csv(tmp_path / "cost.csv")["runs_time_s"].to_list() == [30.0, 30.0]
    assert "whole grid" in (tmp_path / "cost.md").read_text()
    assert r"\toprule" in (tmp_path / "cost.tex").read_text()


def test_plan_forecasts_the_paper_grid_without_running_anything(tmp_path, capsys):
    rows = plan_rows(read_yaml("config/paper.yaml"), tmp_path / "no-results", protocol="bpfree")
    assert len(rows) == 26 and sum(r["runs"] for r in rows) == 78
    mf = next(r for r in rows if r["algorithm"] == "mf" and r["arch"] == "mlp:2000,2000,2000")
    assert (mf["trial_epochs"], mf["tuning_epochs"]) == (90, 4500)  # 3 layers x 30 epochs x 50 trials
    assert (mf["run_epochs"], mf["runs_epochs"]) == (150, 450)  # 3 layers x epochs_per_layer <= 50, 3 seeds
    assert all(r["s_per_epoch_runs"] is None for r in rows)

    assert main(["plan", "--configfile", "config/paper.yaml", "--results", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    tuning = sum(r["tuning_epochs"] for r in rows)
    # both protocols, side by side: the config's (the paper's) and bpfree's
    assert "config/paper.yaml, tuning protocol paper: 26 studies" in out and "26 studies, 806 trials" in out
    assert "tuning.protocol: bpfree, tuning protocol bpfree" in out and "26 studies, 1300 trials" in out
    assert f"{tuning:,}" in out and "78 runs" in out
    assert "no earlier results" in out
    assert not (tmp_path / "none").exists()  # nothing written, nothing run


def test_plan_estimates_time_from_earlier_trials(tmp_path, capsys):
    config = read_yaml("config/config.yaml")
    study = tmp_path / "results/tuning/digits/mlp-256-256/mf"
    study.mkdir(parents=True)
    trials_frame([("mf", "complete", 10, 5.0, 1.0, "estimate")]).with_columns(
        pl.lit("mlp:256,256").alias("arch")
    ).write_csv(study / "study.trials.csv")
    rows = {(r["algorithm"], r["arch"]): r for r in plan_rows(config, tmp_path / "results")}
    mf = rows["mf", "mlp:256,256"]
    assert mf["s_per_epoch_tuning"] == pytest.approx(0.5) and mf["s_per_epoch_runs"] == pytest.approx(0.5)
    assert rows["ff", "mlp:256,256,256"]["s_per_epoch_tuning"] is None

    assert main(["plan", "--configfile", "config/config.yaml", "--results", str(tmp_path / "results")]) == 0
    assert "1 of 7 studies measured" in capsys.readouterr().out


def test_plan_defaults_to_the_snakefiles_config_as_status_does(tmp_path, capsys, monkeypatch):
    assert main(["plan", "--results", str(tmp_path / "none")]) == 0
    assert capsys.readouterr().out.startswith("config/config.yaml, tuning protocol bpfree: 7 studies")
    monkeypatch.chdir(tmp_path)  # no config/config.yaml here: one line saying what to give
    assert main(["plan"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no --configfile given and no config/config.yaml here" in err


def test_plan_names_the_other_tuning_protocol_only_where_it_applies(tmp_path, capsys):
    """The digits grid is not the paper's: "tuning.protocol: paper" (never set, and impossible for
    it) is not mentioned; the paper's grid gets both forecasts (see above)."""
    assert main(["plan", "--configfile", "config/config.yaml", "--results", str(tmp_path / "none")]) == 0
    out = capsys.readouterr().out
    assert "config/config.yaml, tuning protocol bpfree: 7 studies" in out and "protocol: paper" not in out


def test_plan_refuses_a_bad_config_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seeds: [1]\nexperiments: [{algorithm: nope, arch: 'mlp:8', datasets: [digits]}]\n")
    assert main(["plan", "--configfile", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope" in err and math.isfinite(1.0)


@pytest.mark.slow
def test_the_default_workflow_feeds_every_studys_trial_table_to_the_cost_table(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from bpfree.workflow.grid import expand_runs

    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "results/config/tables/cost.csv", "fig_cost", "-n", "-p", "--cores", "1"]
        + ["-s", str(repo / "Snakefile"), "--configfile", str(repo / "config" / "config.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    command = next(line for line in proc.stdout.splitlines() if "bpfree aggregate" in line)
    studies = {(r.dataset, r.arch_slug, r.algorithm) for r in expand_runs(read_yaml(repo / "config" / "config.yaml"))}
    tables = command.split("--trials", 1)[1].split("--", 1)[0].split()
    assert sorted(tables) == sorted(f"results/config/tuning/{d}/{a}/{g}/study.trials.csv" for d, a, g in studies)
    assert proc.stdout.count("--trials-out results/config/tuning/") == len(studies)  # each tune job writes its own
    assert "rule fig_cost:" in proc.stdout


def test_the_trial_counts_of_config_paper_yaml_are_the_papers(tmp_path):
    """Its tuning configs: 10 trials per BP study (5 for MNIST 2x1000), 50 for FF, MF and CaFo
    (1 for MF on MNIST); a BP trial's budget is 15 epochs (10 for MNIST 2x1000)."""
    rows = plan_rows(read_yaml("config/paper.yaml"), tmp_path / "no-results")
    trials = {(r["algorithm"], r["arch"], r["dataset"]): r["trials"] for r in rows}
    for (algorithm, arch, dataset), n in trials.items():
        if algorithm == "bp":
            assert n == (5 if (arch, dataset) == ("mlp:1000,1000", "mnist") else 10), (arch, dataset)
        else:
            assert n == (1 if (algorithm, dataset) == ("mf", "mnist") else 50), (algorithm, dataset)
    bp = {(r["arch"], r["dataset"]): r["trial_epochs"] for r in rows if r["algorithm"] == "bp"}
    assert bp.pop(("mlp:1000,1000", "mnist")) == 10 and set(bp.values()) == {15}


def test_the_bpfree_protocol_config_is_the_paper_grid_under_bpfree_tuning():
    paper, ours = read_yaml("config/paper.yaml"), read_yaml("config/paper-bpfree.yaml")
    assert {k: v for k, v in paper.items() if k != "tuning"} == {k: v for k, v in ours.items() if k != "tuning"}
    assert paper["tuning"]["protocol"] == "paper" and ours["tuning"]["protocol"] == "bpfree"
    rows = plan_rows(ours, "no-results")
    assert {r["trials"] for r in rows} == {50} and {r["protocol"] for r in rows} == {"bpfree"}


# -- the wall time, fixed costs included ------------------------------------------------------------
def small_config() -> dict:
    return {
        "seeds": [1, 2],
        "job_threads": 1,
        "experiments": [{"algorithm": "mf", "arch": "mlp:8", "datasets": ["digits"]}],
        "tuning": {"n_trials": 0},
    }


def benchmark(path, seconds: float) -> None:
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t100\n")


def test_the_wall_time_is_every_jobs_measured_time_over_the_cores(tmp_path):
    """Each job as Snakemake's benchmark of the earlier run timed it (spec, train, aggregate,
    every figure), over the cores, after Snakemake's own start; a job not timed yet counts as
    its kind's timed ones."""
    from bpfree.core.outputs import FIGURE_NAMES, report_benchmark, spec_benchmark, train_benchmark
    from bpfree.workflow.forecast import wall_forecast

    results = tmp_path / "results"
    for algorithm in ("mf", "bp"):
        for seed in (1, 2):
            benchmark(train_benchmark("digits", "mlp-8", algorithm, seed, results=results), 10.0)
            benchmark(spec_benchmark("digits", "mlp-8", algorithm, seed, results=results), 3.0)
    benchmark(report_benchmark("aggregate", results=results), 4.0)
    for name in FIGURE_NAMES[1:]:
        benchmark(report_benchmark(f"fig_{name}", results=results), 5.0)
    forecast = wall_forecast(small_config(), results, cores=2, probe=lambda: 6.0)
    timed_report = [4.0] + [5.0] * (len(FIGURE_NAMES) - 1)
    # the untimed figure as its kind's timed jobs (the aggregate and the figures): their mean
    jobs = 4 * 10.0 + 4 * 3.0 + sum(timed_report) + sum(timed_report) / len(timed_report)
    assert forecast["jobs"] == 8 + 1 + len(FIGURE_NAMES) and forecast["timed_jobs"] == forecast["jobs"] - 1
    assert forecast["wall_s"] == pytest.approx(6.0 + jobs / 2)
    assert forecast["untimed_training_jobs"] == 0
    # one core: the same jobs one after another
    assert wall_forecast(small_config(), results, cores=1, probe=lambda: 6.0)["wall_s"] == pytest.approx(6.0 + jobs)


def test_without_earlier_results_the_wall_time_is_a_lower_bound_of_fixed_costs(tmp_path, capsys):
    from bpfree.workflow.forecast import wall_forecast, wall_text

    forecast = wall_forecast(small_config(), tmp_path / "nothing", cores=2, probe=lambda: 3.0)
    assert forecast["untimed_training_jobs"] == 4 and forecast["timed_jobs"] == 0
    assert forecast["wall_s"] == pytest.approx(3.0 + forecast["jobs"] * 3.0 / 2)
    assert wall_text(forecast).startswith("wall time on 2 cores: at least ")
