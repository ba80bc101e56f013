"""The paper's claims, tested: the verdict rule on made-up pairs, the paper's values taken from
its own table, the twin's selection rules, and fig_claims read back against the claims table."""

from __future__ import annotations

import math
import random

import polars as pl
import pytest

from bpfree.report.claims import (
    CONTRADICTED,
    HOLDS,
    NEEDS_GPU,
    NOT_IN_GRID,
    NOT_RUN,
    NOT_SHOWN,
    Estimate,
    claims,
    claims_chart,
    claims_display,
    claims_table,
    paired_estimate,
    shown_value,
    verdict,
)

ARCH = "mlp:1000,1000"


def runs(mf_gain: float = 0.004, n: int = 5, energy_source: str = "estimate", device: str = "cpu", **extra):
    """MF and its BP twin on Fashion-MNIST, paired by seed; MF ``mf_gain`` more accurate."""
    rng = random.Random(0)
    rows = []
    for seed in range(1, n + 1):
        noise = rng.gauss(0, 0.0005)
        for algorithm in ("mf", "bp"):
            accuracy = 0.89 + noise + (mf_gain if algorithm == "mf" else 0.0)
            row = {
                "algorithm": algorithm,
                "arch": ARCH,
                "dataset": "fashion-mnist",
                "seed": seed,
                "status": "ok",
                "test_accuracy": accuracy,
                "energy_j": 80.0 if algorithm == "mf" else 100.0 + noise,
                "energy_source": energy_source,
                "device": device,
                "train_time_s": 50.0 + seed,
            }
            if algorithm == "bp":  # the twin at its last epoch is worse, at its best accuracy better
                row |= {
                    "test_accuracy_last": accuracy - 0.01,
                    "test_accuracy_min_val_loss": accuracy,
                    "test_accuracy_max_val_accuracy": accuracy + 0.01,
                }
            rows.append(row | extra)
    return pl.DataFrame(rows)


def row(table: pl.DataFrame, claim: str, dataset: str = "fashion-mnist") -> dict:
    (found,) = table.filter((pl.col("claim") == claim) & (pl.col("dataset") == dataset)).iter_rows(named=True)
    return found


def test_the_verdict_rule():
    assert verdict("difference", "greater", Estimate(5, 0.5, 0.1, 0.9)) == HOLDS
    assert verdict("difference", "greater", Estimate(5, -0.5, -0.9, -0.1)) == CONTRADICTED
    assert verdict("difference", "greater", Estimate(5, 0.1, -0.2, 0.4)) == NOT_SHOWN
    assert verdict("ratio", "less", Estimate(5, 0.8, 0.7, 0.9)) == HOLDS  # a ratio against 1
    assert verdict("ratio", "less", Estimate(5, 1.2, 1.1, 1.3)) == CONTRADICTED
    assert verdict("difference", "greater", Estimate(1, 0.5, None, None)) == NOT_SHOWN  # one pair: no interval
    assert verdict("difference", "greater", Estimate(0, None, None, None)) == NOT_RUN


def test_a_paired_ratio_is_a_geometric_mean_with_a_log_scale_interval():
    estimate = paired_estimate("ratio", [(1, 2.0, 1.0), (2, 8.0, 1.0)])
    assert estimate.value == pytest.approx(4.0) and estimate.low < 4.0 < estimate.high
    assert math.log(estimate.high) - math.log(4.0) == pytest.approx(math.log(4.0) - math.log(estimate.low))
    difference = paired_estimate("difference", [(1, 0.9, 0.8), (2, 0.95, 0.8)], scale=100)
    assert difference.value == pytest.approx(12.5) and difference.seeds == (1, 2)


def test_every_claim_of_the_paper_is_covered():
    ids = {c.id for c in claims()}
    assert ids == {
        "mf-accuracy",
        "mf-val-loss",
        "mf-energy",
        "mf-time",
        "mf-co2",
        "ff-flops",
        "ff-time-per-sample",
        "mf-flops",
        "cafo-memory",
        "ff-accuracy",
        "cafo-accuracy",
    }
    # each FF and CaFo row of the paper's grid against its twin
    assert {r for c in claims() if c.id in ("ff-accuracy", "cafo-accuracy") for r in c.rows} == {
        ("ff", "mlp:1000,1000,1000", "mnist"),
        ("ff", "mlp:2000,2000,2000,2000", "mnist"),
        ("ff", "mlp:2000,2000,2000,2000", "fashion-mnist"),
        *{
            (a, "cnn:32,128,512", d)
            for a in ("cafo-rand", "cafo-dfa")
            for d in ("mnist", "fashion-mnist", "cifar10", "cifar100")
        },
    }


def test_the_papers_values_come_from_its_table():
    table = claims_table(runs())
    assert row(table, "mf-accuracy")["paper_value"] == pytest.approx(89.72 - 89.13)
    assert row(table, "mf-energy", "cifar10")["paper_value"] == pytest.approx(3.17 / 5.35)  # its "up to 41%"
    assert row(table, "mf-val-loss")["paper_value"] is None  # the paper gives no number
    assert row(table, "mf-accuracy", "mnist")["verdict"] == NOT_RUN


def test_accuracy_verdicts_follow_the_runs_and_the_twins_selection_rule():
    holds = row(claims_table(runs(mf_gain=0.004)), "mf-accuracy")
    assert holds["verdict"] == HOLDS and holds["value"] == pytest.approx(0.4, abs=1e-6)
    # the same runs against the twin tested at other epochs: +1.4, +0.4, -0.6 points
    assert (holds["verdict_twin_last"], holds["verdict_twin_min_val_loss"], holds["verdict_twin_max_val_accuracy"]) == (
        HOLDS,
        HOLDS,
        CONTRADICTED,
    )
    assert holds["value_twin_max_val_accuracy"] == pytest.approx(-0.6, abs=1e-6)
    assert row(claims_table(runs(mf_gain=-0.004)), "mf-accuracy")["verdict"] == CONTRADICTED
    assert row(claims_table(runs(mf_gain=0.004, n=1)), "mf-accuracy")["verdict"] == NOT_SHOWN


def test_energy_and_time_need_a_gpu_and_show_the_estimate_beside():
    table = claims_table(runs())
    energy = row(table, "mf-energy")
    assert energy["verdict"] == NEEDS_GPU and energy["value"] == pytest.approx(0.8, rel=1e-3)
    assert "estimate" in energy["note"] and "not a verdict" in energy["note"]
    assert row(table, "mf-time")["verdict"] == NEEDS_GPU
    measured = claims_table(runs(energy_source="nvml-counter", device="cuda:0"))
    assert row(measured, "mf-energy")["verdict"] == HOLDS  # 0.8x: less, the claim's side ...
    assert row(measured, "mf-energy")["paper_value"] > 1  # ... where the paper's own Fashion-MNIST row says more


def test_a_dataset_outside_the_papers_grid_says_so():
    digits = runs().with_columns(pl.lit("digits").alias("dataset"))
    table = claims_table(digits)
    assert row(table, "-", "digits")["verdict"] == NOT_IN_GRID
    assert set(table.filter(pl.col("claim") != "-")["verdict"]) == {NOT_RUN}


def test_a_stand_in_dataset_answers_for_the_papers():
    five_k = runs().with_columns(pl.lit("mnist-5k").alias("dataset"))
    found = row(claims_table(five_k), "mf-accuracy", "mnist-5k")
    assert found["paper_dataset"] == "mnist" and "standing in for mnist" in found["note"]


def test_fig_claims_shows_what_the_table_holds():
    """Read back: every plotted estimate, interval and paper value is the table's, coloured by
    its verdict; every row with nothing to plot is listed."""
    table = claims_table(runs())
    spec = claims_chart(table).to_dict()
    subtitle = " ".join(spec["title"]["subtitle"])
    plotted = {}
    for v in spec["datasets"][spec["data"]["name"]]:
        if v["mark"] == "ours (95% interval)":
            plotted[v["label"], "ours"] = (v["value"], v["low"], v["high"], v["verdict"])
        else:
            plotted[v["label"], "paper"] = v["value"]
    for r in table.filter(pl.col("value").is_not_null()).iter_rows(named=True):
        label = f"{r['claim']} · {r['algorithm']} {r['arch']} · {r['dataset']}"
        ours = tuple(shown_value(r[k], r["unit"]) for k in ("value", "ci_low", "ci_high"))
        assert plotted[label, "ours"] == (*ours, r["verdict"])
        if r["paper_value"] is not None:
            assert plotted[label, "paper"] == shown_value(r["paper_value"], r["unit"])
    assert "mf-accuracy · mf: not run here (mlp:1000,1000 on mnist, mlp:2000,2000,2000 on cifar10, " in subtitle
    shown = claims_display(table)
    assert set(shown["verdict"]) == set(table["verdict"])


def test_rebuild_makes_every_table_and_figure_of_a_results_folder_without_training(tmp_path, bp_digits_mlp_run, capsys):
    """``bpfree rebuild RESULTS``: from the run records a folder holds (as docs/evidence/ keeps
    them), the tables and every figure, the claims' among them; no training."""
    import shutil

    from bpfree.cli import main
    from bpfree.core.outputs import FIGURE_NAMES, TABLE_NAMES

    _, out, _ = bp_digits_mlp_run
    run = tmp_path / "evidence/runs/digits/mlp-256-256/bp/seed7"
    run.mkdir(parents=True)
    for name in ("spec.yaml", "metrics.json", "history.csv"):
        shutil.copy(out / name, run / name)
    assert main(["rebuild", str(tmp_path / "evidence")]) == 0
    for name in TABLE_NAMES:
        assert (tmp_path / f"evidence/tables/{name}.csv").is_file(), name
    for name in FIGURE_NAMES:
        assert (tmp_path / f"evidence/figures/{name}.svg").is_file(), name
    assert "not run here" in (tmp_path / "evidence/tables/claims.csv").read_text()  # a BP run alone: no claim's pair
    capsys.readouterr()
    assert main(["rebuild", str(tmp_path / "nothing")]) == 2
    assert "no results folder at" in capsys.readouterr().err
