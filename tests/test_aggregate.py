"""The study's tables: mean, sd and t-interval over seeds, deltas against the BP twin with a
paired t-test, diverged runs counted, energy sources never mixed, ours vs the paper."""

from __future__ import annotations

import json
import math
import random
import re
import statistics

import polars as pl
import pytest
from conftest import record

from bpfree.report.runs import read_metrics
from bpfree.report.tables import (
    METRIC,
    Tables,
    bp_deltas,
    build_tables,
    interval,
    method_stats,
    paper_arch,
    paper_comparison,
    paper_results,
    t_halfwidth,
    write_tables,
)

T_975_DF2 = 4.302652729911275  # Student t, 97.5th percentile, 2 degrees of freedom (tables)
T_975_DF1 = 12.706204736174707


def run(
    algorithm,
    seed,
    accuracy,
    energy=None,
    source="nvml-counter",
    status="ok",
    arch="mlp:8,8",
    dataset="digits",
    time_s=10.0,
):
    row = {
        "algorithm": algorithm,
        "arch": arch,
        "dataset": dataset,
        "seed": seed,
        "status": status,
        "test_accuracy": accuracy,
        "train_time_s": time_s,
        "epochs": 5,
    }
    if energy is not None:
        row |= {"energy_j": energy, "energy_source": source}
    return row


def frame(rows):
    return pl.from_dicts(rows, infer_schema_length=None)


def wilson(p, n, z):
    """Wilson's score interval for a proportion ``p`` of ``n`` trials, as textbooks write it."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_mean_sd_and_score_interval_of_accuracy_over_seeds():
    runs = frame([run("bp", s, a) for s, a in [(1, 0.90), (2, 0.92), (3, 0.97)]])
    row = method_stats(runs).row(0, named=True)
    sd = math.sqrt(((0.90 - 0.93) ** 2 + (0.92 - 0.93) ** 2 + (0.97 - 0.93) ** 2) / 2)
    assert row["test_accuracy_n"] == 3
    assert row["test_accuracy_mean"] == pytest.approx(0.93)
    assert row["test_accuracy_sd"] == pytest.approx(sd)
    # the effective sample size: the Bernoulli trials whose mean has the seeds' variance
    n_eff = 0.93 * 0.07 / (sd**2 / 3)
    low, high = wilson(0.93, n_eff, T_975_DF2)
    assert row["test_accuracy_ci_low"] == pytest.approx(low)
    assert row["test_accuracy_ci_high"] == pytest.approx(high)
    assert (row["runs"], row["ok"], row["diverged"], row["seeds"]) == (3, 3, 0, "1,2,3")


def test_an_accuracy_interval_stays_within_0_and_100_percent():
    """FF on digits: 95.33%, 97.33%, 98.00% gave the t-interval [93.44, 100.34]; near 100% the
    interval must end at or below it (and hold the mean)."""
    for values in ([0.90, 0.96, 1.0], [0.9533, 0.9733, 0.98], [0.99, 1.0], [0.0, 0.02, 0.01], [1.0, 1.0, 1.0]):
        runs = frame([run("ff", s, a) for s, a in enumerate(values, start=1)])
        row = method_stats(runs).row(0, named=True)
        low, high, mean = row["test_accuracy_ci_low"], row["test_accuracy_ci_high"], row["test_accuracy_mean"]
        assert 0.0 <= low <= mean <= high <= 1.0, (values, low, high)
    assert (low, high) == (1.0, 1.0)  # all equal: no spread


def test_a_cost_interval_stays_above_zero_on_the_log_scale():
    """Early stopping makes times spread: 10, 30, 12 s has the t-interval [-10.0, 44.7] s."""
    runs = frame([run("bp", s, 0.9, time_s=t) for s, t in [(1, 10.0), (2, 30.0), (3, 12.0)]])
    row = method_stats(runs).row(0, named=True)
    logs = [math.log(t) for t in (10.0, 30.0, 12.0)]
    centre = sum(logs) / 3
    half = T_975_DF2 * math.sqrt(sum((x - centre) ** 2 for x in logs) / 2) / math.sqrt(3)
    assert row["train_time_s_ci_low"] == pytest.approx(math.exp(centre - half))
    assert row["train_time_s_ci_high"] == pytest.approx(math.exp(centre + half))
    assert 0 < row["train_time_s_ci_low"] < row["train_time_s_mean"] < row["train_time_s_ci_high"]


def test_every_interval_holds_its_mean_with_two_to_four_seeds():
    rng = random.Random(34)
    for _ in range(300):
        k = rng.randint(2, 4)
        accuracies = [rng.choice([1.0, rng.betavariate(0.5, 0.2)]) for _ in range(k)]
        times = [rng.lognormvariate(0, 2) for _ in range(k)]
        runs = frame([run("bp", s, a, time_s=t) for s, (a, t) in enumerate(zip(accuracies, times), start=1)])
        row = method_stats(runs).row(0, named=True)
        for column in ("test_accuracy", "train_time_s"):
            low, mean, high = (row[f"{column}_{s}"] for s in ("ci_low", "mean", "ci_high"))
            assert low <= mean * (1 + 1e-12) and mean <= high * (1 + 1e-12), (column, accuracies, times)


def test_a_quantity_that_can_be_negative_keeps_the_t_interval():
    values = [-5.0, 10.0, 40.0]
    (low, high), kind = interval(METRIC["net_energy_j"], values)
    sd = statistics.stdev(values)
    assert kind == "t"
    assert (low, high) == pytest.approx((15.0 - T_975_DF2 * sd / math.sqrt(3), 15.0 + T_975_DF2 * sd / math.sqrt(3)))
    # a positive quantity with a value <= 0 (a broken counter's 0 J) falls back to it, and says so
    (low, high), kind = interval(METRIC["energy_j"], [0.0, 10.0, 20.0])
    assert kind == "t" and low < 0


def test_t_halfwidth_needs_two_values():
    assert t_halfwidth(1.0, 2) == pytest.approx(T_975_DF1 / math.sqrt(2))
    assert math.isnan(t_halfwidth(1.0, 1))


def test_diverged_runs_are_counted_not_averaged():
    runs = frame([run("bp", 1, 0.9), run("bp", 2, 0.8), run("bp", 3, float("nan"), status="diverged")])
    row = method_stats(runs).row(0, named=True)
    assert (row["runs"], row["ok"], row["diverged"]) == (3, 2, 1)
    assert row["test_accuracy_mean"] == pytest.approx(0.85)
    assert "diverged" in row["note"]


def test_one_run_has_no_spread():
    row = method_stats(frame([run("bp", 1, 0.9)])).row(0, named=True)
    assert row["test_accuracy_mean"] == pytest.approx(0.9)
    assert math.isnan(row["test_accuracy_sd"]) and math.isnan(row["test_accuracy_ci_low"])


def test_energy_from_different_sources_is_not_averaged():
    runs = frame([run("bp", 1, 0.9, 100.0, "nvml-counter"), run("bp", 2, 0.9, 50.0, "estimate")])
    row = method_stats(runs).row(0, named=True)
    assert row["energy_j_mean"] is None
    assert row["energy_source"] == "estimate, nvml-counter"
    assert "energy_j not summarised" in row["note"]
    # one source: summarised, and the source carried beside it
    same = method_stats(frame([run("bp", s, 0.9, 10.0 * s) for s in (1, 2)])).row(0, named=True)
    assert same["energy_j_mean"] == pytest.approx(15.0)
    assert same["energy_source"] == "nvml-counter"


def test_delta_against_bp_twin_is_percent_of_bp_with_paired_t_test():
    bp = [(1, 0.90, 100.0), (2, 0.92, 110.0), (3, 0.94, 120.0)]
    mf = [(1, 0.91, 60.0), (2, 0.95, 64.0), (3, 0.96, 70.0)]
    runs = frame([run("bp", s, a, e) for s, a, e in bp] + [run("mf", s, a, e) for s, a, e in mf])
    deltas = bp_deltas(runs)
    energy = deltas.filter(pl.col("metric") == "energy_j").row(0, named=True)
    assert energy["algorithm"] == "mf" and energy["pairs"] == 3
    assert energy["delta_pct"] == pytest.approx(100 * (64.6667 / 110.0 - 1), rel=1e-4)  # -41.2%
    diffs = [m[2] - b[2] for m, b in zip(mf, bp)]  # -40, -46, -50
    mean = sum(diffs) / 3
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert energy["t_stat"] == pytest.approx(mean / (sd / math.sqrt(3)))
    assert 0 < energy["p_value"] < 0.01
    assert energy["source"] == "nvml-counter"
    accuracy = deltas.filter(pl.col("metric") == "test_accuracy").row(0, named=True)
    assert accuracy["delta"] == pytest.approx(0.02)  # 2 percentage points


def test_delta_pairs_by_seed_and_needs_two_pairs():
    runs = frame(
        [run("bp", 1, 0.90), run("bp", 2, 0.92), run("mf", 1, 0.95), run("mf", 2, float("nan"), status="diverged")]
    )
    row = bp_deltas(runs).filter(pl.col("metric") == "test_accuracy").row(0, named=True)
    assert row["pairs"] == 1
    assert row["delta"] == pytest.approx(0.05)  # seed 1 only: the diverged seed is not paired
    assert math.isnan(row["t_stat"]) and math.isnan(row["p_value"])
    assert "no paired test" in row["note"] and "without an ok pair" in row["note"]


def test_delta_refuses_energy_measured_differently():
    runs = frame(
        [run("bp", s, 0.9, 100.0, "nvml-counter") for s in (1, 2)]
        + [run("mf", s, 0.9, 50.0, "estimate") for s in (1, 2)]
    )
    row = bp_deltas(runs).filter(pl.col("metric") == "energy_j").row(0, named=True)
    assert math.isnan(row["delta_pct"])
    assert "not compared" in row["note"] and "estimate" in row["note"]


def test_paper_architectures_in_our_notation():
    assert paper_arch("mlp 2x1000") == "mlp:1000,1000"
    assert paper_arch("mlp 4x2000") == "mlp:2000,2000,2000,2000"
    assert paper_arch("cnn 32-128-512") == "cnn:32,128,512"
    paper = paper_results()
    assert paper.height == 26 and {"mnist", "fashion-mnist", "cifar10", "cifar100"} == set(paper["dataset"])


def test_ours_vs_paper_matches_algorithm_arch_and_dataset():
    runs = frame(
        [run("mf", s, 0.98, 2000.0, arch="mlp:2000,2000,2000", dataset="cifar10") for s in (1, 2)]
        + [run("bp", s, 0.97, 4000.0, arch="mlp:2000,2000,2000", dataset="cifar10") for s in (1, 2)]
    )
    methods = method_stats(runs)
    table = paper_comparison(methods, bp_deltas(runs))
    mf = table.filter((pl.col("algorithm") == "mf") & (pl.col("dataset") == "cifar10")).row(0, named=True)
    assert mf["runs"] == 2 and mf["accuracy_pct"] == pytest.approx(98.0)
    assert mf["paper_accuracy_pct"] == pytest.approx(62.34)
    assert mf["energy_vs_bp_pct"] == pytest.approx(-50.0)
    # the paper: "MF CIFAR-10 used 40.8% less energy than BP" (3.17 vs 5.35 Wh in its logs)
    assert mf["paper_energy_vs_bp_pct"] == pytest.approx(-40.8, abs=0.1)
    assert mf["paper_energy_j"] == pytest.approx(3.17 * 3600)
    unrun = table.filter(pl.col("dataset") == "mnist")
    assert unrun["runs"].to_list() == [0] * unrun.height and unrun["accuracy_pct"].null_count() == unrun.height


def test_mnist_5k_runs_sit_next_to_the_papers_mnist_rows_labelled_as_a_subset():
    runs = frame(
        [run("mf", s, 0.95, arch="mlp:1000,1000", dataset="mnist-5k") for s in (1, 2)]
        + [run("bp", s, 0.94, arch="mlp:1000,1000", dataset="mnist-5k") for s in (1, 2)]
    )
    table = paper_comparison(method_stats(runs), bp_deltas(runs))
    mf = table.filter((pl.col("algorithm") == "mf") & (pl.col("arch") == "mlp:1000,1000"))
    row = mf.filter(pl.col("paper_dataset") == "mnist").row(0, named=True)
    assert row["dataset"] == "mnist-5k" and "5,000-image subset" in row["note"]
    assert row["accuracy_vs_bp_pp"] == pytest.approx(1.0) and row["paper_accuracy_vs_bp_pp"] == pytest.approx(0.09)
    other = table.filter(pl.col("paper_dataset") == "cifar10").row(0, named=True)
    assert other["note"] is None and other["runs"] == 0


def test_tables_from_run_files(tmp_path):
    paths = []
    for algorithm in ("bp", "mf"):
        for seed in (1, 2):
            d = tmp_path / algorithm / str(seed)
            d.mkdir(parents=True)
            status = "diverged" if (algorithm, seed) == ("mf", 2) else "ok"
            (d / "metrics.json").write_text(json.dumps(record(run(algorithm, seed, 0.9 + seed / 100, status=status))))
            (d / "history.csv").write_text(
                "epoch,stage,train_loss,val_loss,val_accuracy,epoch_time_s\n"
                "1,layer1,1.0,0.9,0.5,0.1\n2,layer1,0.8,0.5,0.6,0.1\n"
                "3,layer2,0.7,0.6,0.7,0.1\n4,layer2,0.6,0.4,0.8,0.1\n"
            )
            paths.append(d / "metrics.json")
    runs = read_metrics(paths)
    assert runs["min_val_loss"].to_list() == [0.4] * 4  # the last stage's minimum, not 0.5
    tables = build_tables(paths)
    written = write_tables(tables, tmp_path / "tables")
    assert {p.name for p in written} >= {"summary.csv", "methods.md", "deltas.tex", "paper.csv", "histories.csv"}
    assert tables.histories.height == 16 and tables.histories["seed"].n_unique() == 2
    md = (tmp_path / "tables" / "methods.md").read_text().splitlines()
    assert md[0].startswith("| algorithm | arch | dataset |") and len([r for r in md if r.startswith("|")]) == 2 + 2
    # below the table, the line that says which interval each metric has
    assert md[-1].startswith("mean ± sd [95% interval]") and "test accuracy: Wilson score interval" in md[-1]
    assert "; training time, " in md[-1] and "epochs" in md[-1] and ": t-interval on the log scale" in md[-1]
    assert "1 diverged" in (tmp_path / "tables" / "methods.md").read_text()
    tex = (tmp_path / "tables" / "methods.tex").read_text()
    assert r"\toprule" in tex and r"test accuracy (\%)" in tex


def test_ffs_validation_loss_is_not_compared_with_bps_cross_entropy(tmp_path):
    """FF's validation loss is its goodness BCE: "+1422%" against BP's cross-entropy compared
    two different losses. MF's, the cross-entropy of its last layer's scores, is compared."""
    from bpfree.report.tables import deltas_display

    paths = []
    for algorithm, loss in (("bp", 0.1), ("ff", 1.6), ("mf", 0.2)):
        for seed in (1, 2):
            d = tmp_path / algorithm / str(seed)
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps(record(run(algorithm, seed, 0.9))))
            (d / "history.csv").write_text(
                f"epoch,stage,train_loss,val_loss,val_accuracy,epoch_time_s\n1,train,1,{loss + seed / 100},0.9,1\n"
            )
            paths.append(d / "metrics.json")
    tables = build_tables(paths)
    kinds = dict(tables.summary.select("algorithm", "val_loss_kind").unique().iter_rows())
    assert kinds == {"bp": "cross-entropy", "mf": "cross-entropy", "ff": "FF goodness BCE, not a cross-entropy"}
    loss = {r["algorithm"]: r for r in tables.deltas.filter(pl.col("metric") == "min_val_loss").to_dicts()}
    ff = loss["ff"]
    assert math.isnan(ff["delta_pct"]) and math.isnan(ff["p_value"]) and ff["pairs"] == 2
    assert ff["method_mean"] == pytest.approx(1.615) and ff["bp_mean"] == pytest.approx(0.115)  # both still shown
    assert ff["note"].startswith("not comparable: ff's validation loss is the FF goodness BCE")
    assert loss["mf"]["delta_pct"] == pytest.approx(100 * (0.215 / 0.115 - 1))
    shown = deltas_display(tables.deltas).filter(pl.col("metric").str.starts_with("min. validation loss"))
    assert dict(zip(shown["algorithm"], shown["change vs bp"])) == {"ff": "not comparable", "mf": "+87.0%"}
    methods = tables.methods.filter(pl.col("algorithm") == "ff")
    assert methods["val_loss_kind"].to_list() == ["FF goodness BCE, not a cross-entropy"]


def test_paper_md_says_in_one_line_when_no_run_matches_the_papers_grid(tmp_path):
    """On the default digits grid paper.md was the paper's 26 rows beside 26 rows of dashes."""

    def write(root, arch, dataset):
        paths = []
        for algorithm in ("bp", "mf"):
            d = root / algorithm
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps(record(run(algorithm, 1, 0.9, arch=arch, dataset=dataset))))
            (d / "history.csv").write_text("epoch,stage,train_loss,val_loss,val_accuracy,epoch_time_s\n")
            paths.append(d / "metrics.json")
        write_tables(build_tables(paths), root / "tables")
        return (root / "tables" / "paper.md").read_text(), (root / "tables" / "paper.tex").read_text()

    md, tex = write(tmp_path / "digits", "mlp:8,8", "digits")
    rows = paper_results().height
    assert md.count("\n") == 1 and md.startswith(f"None of these runs matches one of the paper's {rows} configurations")
    assert tex.count("\n") == 1 and r"paper\_results.csv" in tex
    assert pl.read_csv(tmp_path / "digits" / "tables" / "paper.csv").height == rows  # the numbers stay in the CSV
    md, _ = write(tmp_path / "mnist", "mlp:1000,1000", "mnist")  # the paper's MF comparison on MNIST
    assert md.startswith("| algorithm |") and "| mf | mlp:1000,1000 | mnist | 1 |" in md


def test_deltas_table_shows_tiny_co2_masses_in_grams_not_zeros():
    from bpfree.report.tables import deltas_display

    rows = [run("bp", s, 0.9, 1.0) | {"co2_kg": 1.4e-7 + s * 1e-9} for s in (1, 2)]
    rows += [run("mf", s, 0.9, 1.0) | {"co2_kg": 0.9e-7 + s * 1e-9} for s in (1, 2)]
    shown = deltas_display(bp_deltas(frame(rows))).filter(pl.col("metric").str.starts_with("CO2"))
    assert shown["metric"].to_list() == ["CO2, CodeCarbon's (g, of CodeCarbon's energy)"]  # g, as every table
    assert shown["method"].to_list() == ["0.00009150"] and shown["bp"].to_list() == ["0.0001415"]


def test_methods_table_shows_co2_in_significant_digits():
    from bpfree.report.tables import methods_display

    rows = [run("mf", s, 0.9, 1.0) | {"co2_kg": c} for s, c in ((1, 1.0e-6), (2, 1.2e-6), (3, 1.1e-6))]
    shown = methods_display(method_stats(frame(rows)))["CO2, CodeCarbon's (g)"].to_list()
    assert shown[0].startswith("0.00110 ± 0.000100 [")  # grams: not "0.001 ± 0.000"


def test_co2_stands_beside_the_energy_it_was_computed_from():
    """A BP CNN on digits: CodeCarbon's own whole-machine energy 1,130 J against our 66.9 J.
    CodeCarbon's CO2 follows its energy (largely the run's time); ours, our energy at the grid
    intensity CodeCarbon applied (its CO2 over its energy), follows our energy column."""
    from bpfree.report.tables import deltas_display, footnote, methods_display, with_co2

    g_per_kwh = 369.0
    kg_per_j = g_per_kwh / 3.6e9

    def measured(algorithm, seed, energy, codecarbon):
        return run(algorithm, seed, 0.9, energy, source="rapl") | {
            "codecarbon_energy_j": codecarbon,
            "co2_kg": codecarbon * kg_per_j,
            "co2_country": "USA",
        }

    rows = [measured("bp", s, 66.9 + s, 1130.0 + s) for s in (1, 2)]
    rows += [measured("mf", s, 30.0 + s, 1000.0 + s) for s in (1, 2)]  # half the energy, nearly the time
    runs = with_co2(frame(rows))
    assert runs["grid_intensity_g_per_kwh"].to_list() == pytest.approx([g_per_kwh] * 4)
    assert runs["co2_ours_kg"].to_list() == pytest.approx([r["energy_j"] * kg_per_j for r in rows])
    deltas = {r["metric"]: r for r in bp_deltas(runs).to_dicts()}
    energy, ours = deltas["energy_j"], deltas["co2_ours_kg"]
    codecarbon, theirs = deltas["codecarbon_energy_j"], deltas["co2_kg"]
    assert ours["delta_pct"] == pytest.approx(energy["delta_pct"]) and ours["source"] == "rapl"
    assert theirs["delta_pct"] == pytest.approx(codecarbon["delta_pct"]) != pytest.approx(energy["delta_pct"])
    assert "follows codecarbon_energy_j" in theirs["note"]
    # the readable deltas: each CO2 right after the energy it is of, labelled
    shown = [r["metric"] for r in deltas_display(bp_deltas(runs)).to_dicts()]
    i = shown.index("energy (J, rapl)")
    assert shown[i : i + 4] == [
        "energy (J, rapl)",
        "CO2 of our energy (g, energy × CodeCarbon's grid intensity, rapl)",
        "CodeCarbon's energy (kJ, its whole-machine estimate)",
        "CO2, CodeCarbon's (g, of CodeCarbon's energy)",
    ]
    methods = method_stats(runs)
    row = methods_display(methods).to_dicts()[0]
    assert row["grid intensity, CodeCarbon's (g/kWh)"] == "369 (USA)"
    tables = Tables(runs, methods, bp_deltas(runs), pl.DataFrame(), pl.DataFrame())
    assert "USA 369 g/kWh" in footnote("deltas", tables) and "its CO2 over its own energy" in footnote("deltas", tables)


def test_tables_show_time_and_energy_in_the_unit_their_numbers_fill():
    """A study of minutes in min, not hours; 5,000 J in kJ; a table's unit is in its header."""
    from bpfree.report.tables import deltas_display, methods_display, summary_display

    rows = [run("bp", s, 0.9, 5_000.0 + s, time_s=300.0 + s) for s in (1, 2)]
    rows += [run("mf", s, 0.9, 4_000.0 + s, time_s=200.0 + s) for s in (1, 2)]
    runs = frame(rows)
    methods = methods_display(method_stats(runs)).to_dicts()
    assert methods[0]["time (min)"].startswith("5.03 ± ") and methods[0]["energy (kJ)"].startswith("5.00 ± ")
    summary = summary_display(runs).to_dicts()
    assert summary[0]["time (min)"] == "5.02" and summary[0]["energy (kJ)"] == "5.00 (nvml-counter)"
    deltas = {r["metric"]: r for r in deltas_display(bp_deltas(runs)).to_dicts()}
    assert deltas["training time (min)"]["bp"] == "5.025" and deltas["energy (kJ, nvml-counter)"]["method"] == "4.002"
    # a tiny run stays in seconds and joules
    tiny = frame([run("bp", s, 0.9, 0.4, time_s=0.1 * s) for s in (1, 2)])
    assert {"time (s)", "energy (J)"} <= set(methods_display(method_stats(tiny)).columns)
    # the unit is the means' (what the column is about), however far an interval reaches
    spread = method_stats(frame([run("bp", s, 0.9, time_s=t) for s, t in ((1, 20.0), (2, 50.0))]))
    assert spread["train_time_s_ci_high"].item() > 60 and "time (s)" in methods_display(spread).columns


def test_every_table_shows_memory_in_mib_and_co2_in_grams(tmp_path):
    """One memory unit (the runs measure MiB) and one CO2 unit in every readable table."""
    paths = []
    for algorithm in ("bp", "mf"):
        for seed in (1, 2):
            d = tmp_path / algorithm / str(seed)
            d.mkdir(parents=True)
            fields = run(algorithm, seed, 0.9, 10.0 + seed) | {
                "co2_kg": 1e-6 * seed,
                "peak_memory_mb": 800.0 + seed,
                "peak_memory_kind": "process-rss",
                "train_flops_per_sample": 1e4,
                "memory_breakdown_total_mb": 3.0,
                "memory_weights_mb": 3.0,
            }
            (d / "metrics.json").write_text(json.dumps(record(fields)))
            (d / "history.csv").write_text(
                "epoch,stage,train_loss,val_loss,val_accuracy,epoch_time_s\n1,train,1,1,0.9,1\n"
            )
            paths.append(d / "metrics.json")
    write_tables(build_tables(paths), tmp_path / "tables")
    seen = set()
    for table in sorted((tmp_path / "tables").glob("*.md")):
        text = table.read_text()
        assert not re.search(r"\bMB\b", text), f"{table.name} shows memory in MB"
        assert not re.search(r"CO2[^|]*\(kg", text), f"{table.name} shows CO2 in kg"
        seen |= {table.stem for unit in ("MiB", "CO2 (g)") if unit in text}
    assert {"summary", "methods", "deltas", "hardware"} <= seen


def test_hardware_and_to_target_tables_from_analysed_runs(tmp_path):
    from bpfree.report.hardware import hardware_table

    paths = []
    for algorithm, flops, memory in (("bp", 3.0e4, 4.0), ("ff", 9.0e4, 5.0)):
        for seed in (1, 2):
            d = tmp_path / algorithm / str(seed)
            d.mkdir(parents=True)
            fields = run(algorithm, seed, 0.9) | {
                "train_flops_per_sample": flops,
                "infer_flops_per_sample": flops / 3 * (10 if algorithm == "ff" else 1),
                "memory_breakdown_total_mb": memory + seed,  # means 5.5 and 6.5
                "memory_activations_mb": memory,
                "flops_by_stage": {"train": {"train_flops_per_sample": flops, "train_setup_flops_per_sample": 0.0}},
            }
            (d / "metrics.json").write_text(json.dumps(record(fields)))
            accuracies = (0.5, 0.8, 0.9) if algorithm == "bp" else (0.3, 0.6, 0.95)
            (d / "history.csv").write_text(
                "epoch,stage,train_loss,val_loss,val_accuracy,epoch_time_s,energy_j,energy_source,flops\n"
                + "".join(f"{e},train,1.0,0.5,{a},1.0,2.0,rapl,100.0\n" for e, a in enumerate(accuracies, 1))
            )
            paths.append(d / "metrics.json")
    hardware = hardware_table(read_metrics(paths), paths)
    ff = hardware.filter(pl.col("algorithm") == "ff").to_dicts()[0]
    assert ff["runs"] == 2 and ff["train_flops_vs_bp"] == 3.0 and ff["infer_flops_vs_bp"] == 30.0
    assert ff["memory_vs_bp"] == pytest.approx(6.5 / 5.5) and ff["train_flops_by_stage"] == "train 9e+04"
    tables = build_tables(paths, target_fraction=0.9)
    written = {p.name for p in write_tables(tables, tmp_path / "tables")}
    assert {"hardware.csv", "hardware.md", "hardware.tex", "to_target.csv", "to_target.md"} <= written
    target = tables.to_target.filter(pl.col("algorithm") == "ff")
    assert target["epoch"].to_list() == [3, 3] and target["energy_vs_bp"].to_list() == [1.0, 1.0]
    assert "(×3.00 bp)" in (tmp_path / "tables" / "hardware.md").read_text()


def test_hardware_table_shows_memory_in_mib_without_an_exponent():
    """CaFo's cache on full MNIST is about 3,800 MiB: "3.81e+03" is no way to show it."""
    from bpfree.report.hardware import hardware_display

    table = pl.DataFrame(
        {
            "algorithm": ["cafo-rand"],
            "arch": ["cnn:32,128,512"],
            "dataset": ["mnist"],
            "memory_cached_features_mb": [3_812.4],
        }
        | {"memory_breakdown_total_mb": [4_120.0], "peak_memory_mb": [4_500.0], "peak_memory_kind": ["torch-allocated"]}
    )
    row = hardware_display(table).row(0, named=True)
    assert row["memory MiB: weights / grads / optim. / activ. / cached / data"] == "– / – / – / – / 3812 / –"
    assert row["sum (MiB)"] == "4120" and row["measured peak (MiB)"] == "4500 (torch-allocated)"


def test_runs_without_the_analysis_give_an_empty_hardware_table(tmp_path):
    from bpfree.report.hardware import hardware_table

    assert hardware_table(frame([run("bp", 1, 0.9)])).is_empty()
