"""Every figure true to its table: each one is rendered to SVG as ``bpfree figures``
renders it, read back panel by panel (headers, axes, the marks' data; tests/figure_readback.py)
and compared with the table it was drawn from, as written to disk by ``bpfree aggregate``'s
code. A panel under the wrong header, a value in another unit, a missing or extra method fails.
"""

from __future__ import annotations

import dataclasses
import math
import re

import polars as pl
import pytest
from figure_grid import GRID, write_grid
from figure_readback import UNITS, Axis, Figure, Label, assert_unit_fits, number, read_chart, unit_in

from bpfree.report.cost import ALL, COST_COLUMNS, _schema
from bpfree.report.figures import FIGURES, MEMORY_LABELS
from bpfree.report.tables import Tables, paper_comparison
from bpfree.workflow.grid import FIGURE_NAMES

DATASETS = sorted({d for d, _ in GRID})


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> Tables:
    return write_grid(tmp_path_factory.mktemp("grid"))


def draw(name: str, tables: Tables) -> Figure:
    return read_chart(FIGURES[name](tables))


def close(a: float, b: float, rel: float = 2e-3) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-9)


def same(shown: dict, expected: dict, what: str) -> None:
    """The same keys (no method missing or extra) and the same values (to display rounding)."""
    assert sorted(shown) == sorted(expected), f"{what}: drawn {sorted(shown)}, table {sorted(expected)}"
    for key, value in expected.items():
        assert close(shown[key], value), f"{what} {key}: drawn {shown[key]}, table {value}"


def label(row: dict) -> str:
    return f"{row['arch']} · {row['algorithm']}"


def test_every_figure_has_a_content_test():
    tested = {name.removeprefix("test_fig_").split("_shows")[0] for name in globals() if name.startswith("test_fig_")}
    assert tested == set(FIGURE_NAMES)


# -- the per-method figures: one panel per dataset, a mark per method --------------------------
# (column, quantity whose unit is picked from the numbers (None: accuracy, in %), axis title)
METHOD_FIGURES = {
    "accuracy": ("test_accuracy", None, "test accuracy (%)", "point"),
    "energy": ("energy_j", "energy", "GPU energy ({}, nvml-counter)", "bar"),
    "time": ("train_time_s", "time", "training time ({})", "bar"),
    "memory": ("peak_memory_mb", "memory", "peak memory ({}, torch-allocated)", "bar"),
}


def check_method_figure(name: str, tables: Tables, drawn_from: Tables | None = None) -> None:
    """Each dataset's panel holds every method's mean and its 95% interval, in one unit that
    the numbers fill, and the interval within the quantity's range (0-100% for accuracy,
    above 0 for a cost)."""
    column, quantity, title, kind = METHOD_FIGURES[name]
    figure = draw(name, drawn_from or tables)
    assert len(figure.panels) == len(DATASETS)
    units, drawn = set(), []
    for dataset in DATASETS:
        panel = figure.panel(dataset)
        axis = panel.axis("x")
        unit = "%" if quantity is None else unit_in(axis.title)
        units.add(unit)
        assert axis.title == title.format(unit)
        assert quantity is None or unit in UNITS[quantity], f"{name}: {quantity} in {unit!r}, not in {UNITS[quantity]}"
        size = 0.01 if quantity is None else UNITS[quantity][unit]
        shown = {m["label"]: number(m[axis.title]) for m in panel.marks_of(kind)}
        rows = tables.methods.filter(pl.col("dataset") == dataset).to_dicts()
        expected = {label(r): r[f"{column}_mean"] / size for r in rows}
        same(shown, expected, f"{name}, panel {dataset}")
        whiskers = {m["label"]: (number(m["low"]), number(m["high"])) for m in panel.marks_of("errorbar")}
        bounds = {label(r): (r[f"{column}_ci_low"] / size, r[f"{column}_ci_high"] / size) for r in rows}
        same({k: v[0] for k, v in whiskers.items()}, {k: v[0] for k, v in bounds.items()}, f"{name} {dataset} low")
        same({k: v[1] for k, v in whiskers.items()}, {k: v[1] for k, v in bounds.items()}, f"{name} {dataset} high")
        reach = list(expected.values()) + [high for _, high in bounds.values()]  # the axis spans the whiskers
        assert axis.fits(reach), f"{name} {dataset}: axis {axis.low}..{axis.high}"
        for method, (low, high) in whiskers.items():
            assert low <= shown[method] <= high, f"{name} {dataset} {method}: interval misses its mean"
            if quantity is None:
                assert 0 <= low and high <= 100, f"{name} {dataset} {method}: interval [{low}, {high}] beyond 0-100%"
            else:
                assert low > 0, f"{name} {dataset} {method}: interval [{low}, {high}] reaches below 0"
        drawn += list(shown.values())
    assert len(units) == 1, f"{name}: panels in different units {units}"
    if quantity is not None:
        assert_unit_fits(quantity, units.pop(), drawn)


def test_fig_accuracy_shows_each_methods_mean_per_dataset(tables):
    check_method_figure("accuracy", tables)


def test_fig_energy_shows_each_methods_mean_per_dataset(tables):
    check_method_figure("energy", tables)


def test_fig_time_shows_each_methods_mean_per_dataset(tables):
    check_method_figure("time", tables)


def test_fig_memory_shows_each_methods_mean_per_dataset(tables):
    check_method_figure("memory", tables)


def test_fig_pareto_shows_energy_and_accuracy_per_method(tables):
    figure = draw("pareto", tables)
    y = "test accuracy (%)"
    drawn = []
    for dataset in DATASETS:
        panel = figure.panel(dataset)
        x = panel.axis("x").title
        unit = unit_in(x)
        assert (x, panel.axis("y").title) == (f"GPU energy ({unit}, nvml-counter)", y)
        points = panel.marks_of("point")
        rows = tables.methods.filter(pl.col("dataset") == dataset).to_dicts()
        size = UNITS["energy"][unit]
        same({m["label"]: number(m[x]) for m in points}, {label(r): r["energy_j_mean"] / size for r in rows}, dataset)
        same(
            {m["label"]: number(m[y]) for m in points},
            {label(r): 100 * r["test_accuracy_mean"] for r in rows},
            dataset,
        )
        drawn += [number(m[x]) for m in points]
    assert_unit_fits("energy", unit, drawn)


# -- per-epoch figures: one panel per dataset and architecture, a line per run ------------------
def runs_of(history: pl.DataFrame, dataset: str) -> set[str]:
    rows = history.filter(pl.col("dataset") == dataset).select("algorithm", "seed").unique().rows()
    return {f"{a} seed {s}" for a, s in rows}


def test_fig_val_loss_shows_every_runs_curve_in_its_panel(tables):
    figure = draw("val_loss", tables)
    history = tables.histories
    for dataset in DATASETS:
        panel = figure.panel(f"{dataset} · mlp:1000,1000")
        lines = panel.marks_of("line")
        assert {m["run"] for m in lines} == runs_of(history, dataset)
        first = history.filter(pl.col("dataset") == dataset, pl.col("epoch") == 1)
        expected = {f"{r['algorithm']} seed {r['seed']}": r["val_loss"] for r in first.to_dicts()}
        same({m["run"]: number(m["val_loss"]) for m in lines}, expected, f"val_loss {dataset}, epoch 1")
        axis = panel.axis("y")
        losses = history.filter(pl.col("dataset") == dataset)["val_loss"]
        assert axis.scale == "log" and axis.low <= losses.min() * 1.01 and axis.high >= losses.max() * 0.99
    # FF's loss is no cross-entropy: the figure says so beside BP's and MF's
    said = " ".join(figure.subtitles)  # a subtitle's lines, joined
    assert "the losses differ (bp, mf: cross-entropy;" in said and "ff: FF goodness BCE, not a cross-entropy" in said


def test_fig_to_target_shows_cumulative_energy_and_the_target(tables):
    figure = draw("to_target", tables)
    y = "validation accuracy (%)"
    history = tables.histories.sort("epoch").with_columns(
        pl.col("energy_j").cum_sum().over("dataset", "algorithm", "seed").alias("cum")
    )
    drawn = []
    for dataset in DATASETS:
        panel = figure.panel(f"{dataset} · mlp:1000,1000")
        x = panel.axis("x").title
        unit = unit_in(x)
        assert (x, panel.axis("y").title) == (f"energy so far ({unit}, nvml-counter) (log)", y)
        size = UNITS["energy"][unit]
        shown = {(m["run"], int(m["epoch"])): (number(m[x]), number(m[y])) for m in panel.marks_of("point")}
        rows = history.filter(pl.col("dataset") == dataset).to_dicts()
        expected = {
            (f"{r['algorithm']} seed {r['seed']}", r["epoch"]): (r["cum"] / size, 100 * r["val_accuracy"]) for r in rows
        }
        same({k: v[0] for k, v in shown.items()}, {k: v[0] for k, v in expected.items()}, f"{dataset} energy")
        same({k: v[1] for k, v in shown.items()}, {k: v[1] for k, v in expected.items()}, f"{dataset} accuracy")
        (rule,) = panel.marks_of("rule")
        target = tables.to_target.filter(pl.col("dataset") == dataset)["target_val_accuracy"].mean()
        assert close(number(rule["Mean of target"]), 100 * target)
        drawn += [v[0] for v in shown.values()]
    assert_unit_fits("energy", unit, drawn)


def test_fig_power_shows_each_epochs_energy_over_its_time(tables):
    figure = draw("power", tables)
    y = "mean GPU power per epoch (W, nvml-counter)"
    for dataset in DATASETS:
        panel = figure.panel(f"{dataset} · mlp:1000,1000")
        assert panel.axis("y").title == y
        shown = {(m["algorithm"], int(m["epoch"])): number(m[y]) for m in panel.marks_of("point")}
        lowest = tables.histories.filter(pl.col("dataset") == dataset, pl.col("seed") == 1).to_dicts()
        expected = {(r["algorithm"], r["epoch"]): r["energy_j"] / r["epoch_time_s"] for r in lowest}
        same(shown, expected, f"power {dataset}")


# -- the hardware figures --------------------------------------------------------------------------
def test_fig_flops_shows_training_and_inference_per_method_under_their_headers(tables):
    figure = draw("flops", tables)
    panels = {"training (per sample per epoch, run average)": "train", "inference (per sample)": "infer"}
    assert len(figure.panels) == len(DATASETS) * len(panels)
    for dataset in DATASETS:
        rows = tables.hardware.filter(pl.col("dataset") == dataset).to_dicts()
        for header, part in panels.items():
            panel = figure.panel(dataset, header)
            shown = {m["label"]: number(m["FLOPs per sample"]) for m in panel.marks_of("bar")}
            expected = {label(r): r[f"{part}_flops_per_sample"] for r in rows}
            same(shown, expected, f"flops {dataset} {header}")
            assert panel.axis("x").fits(list(expected.values()))


def test_fig_memory_breakdown_shows_each_part_and_the_measured_peak(tables):
    figure = draw("memory_breakdown", tables)
    for dataset in DATASETS:
        panel = figure.panel(dataset)
        rows = tables.hardware.filter(pl.col("dataset") == dataset).to_dicts()
        x = panel.axis("x").title
        assert x == "MiB (tensor sizes; the stage that holds the most)"
        shown = {(m["label"], m["part"]): number(m[x]) for m in panel.marks_of("bar")}  # as stacked
        expected = {(label(r), name): r[f"memory_{part}_mb"] for r in rows for part, name in MEMORY_LABELS.items()}
        same(shown, expected, f"memory_breakdown {dataset}")
        peaks = {m["peak_text"] for m in panel.marks_of("text")}
        assert peaks == {f"measured peak {round(r['peak_memory_mb'])} MiB (torch-allocated)" for r in rows}
        totals = [sum(v for (lab, _), v in expected.items() if lab == label(r)) for r in rows]
        assert panel.axis("x").fits(totals)


# -- ours vs the paper -------------------------------------------------------------------------------
def test_fig_paper_shows_ours_next_to_the_papers_per_quantity(tables):
    figure = draw("paper", tables)
    quantities = {
        "test accuracy (%)": ("accuracy_pct", "paper_accuracy_pct"),
        "accuracy vs BP twin (points)": ("accuracy_vs_bp_pp", "paper_accuracy_vs_bp_pp"),
        "training time vs BP twin (%)": ("time_vs_bp_pct", "paper_time_vs_bp_pct"),
        "energy vs BP twin (%)": ("energy_vs_bp_pct", "paper_energy_vs_bp_pct"),
    }
    table = tables.paper.with_columns(
        (pl.col("algorithm") + " · " + pl.col("arch") + " · " + pl.col("dataset")).alias("row")
    ).to_dicts()
    assert len(figure.panels) == len(quantities)
    for header, (ours, theirs) in quantities.items():
        panel = figure.panel(header)
        shown = {(m["row"], m["source"]): number(m["value"]) for m in panel.marks_of("point")}
        expected = {(r["row"], "ours"): r[ours] for r in table if r[ours] is not None}
        expected |= {(r["row"], "paper"): r[theirs] for r in table if r[theirs] is not None}
        same(shown, expected, f"paper, {header}")
        assert any(source == "ours" for _, source in expected)  # the grid matched some paper rows


# -- what the study cost: time and energy under their own headers --------------------------------
def cost_panels(figure: Figure, cost: pl.DataFrame) -> None:
    """Every (dataset, quantity) panel's stacked bars against cost.csv, under "time (UNIT)" and
    "energy (UNIT, SOURCE)", each in the unit its largest bar fills; the subtitle's whole-grid
    totals in the same units."""
    studies = cost.filter(pl.col("algorithm") != ALL).to_dicts()
    datasets = sorted({r["dataset"] for r in studies})
    assert len(figure.panels) == 2 * len(datasets)
    units, bars = {}, {"time": [], "energy": []}
    for panel in figure.panels:
        (dataset,) = [h for h in panel.headers if h in datasets]
        (header,) = [h for h in panel.headers if h != dataset]
        what = "time" if header.startswith("time (") else "energy"
        assert header.startswith(f"{what} ("), header
        units.setdefault(what, set()).add(unit_in(header))
        scale = UNITS[what][unit_in(header)]
        quantity = "time_s" if what == "time" else "energy_j"
        shown = {(m["label"], m["phase"]): number(m["Sum of value"]) for m in panel.marks_of("bar")}
        rows = [r for r in studies if r["dataset"] == dataset]
        expected = {
            (label(r), phase): r[f"{prefix}_{quantity}"] / scale
            for r in rows
            for phase, prefix in (("tuning", "tuning"), ("final runs", "runs"))
            if r[f"{prefix}_{quantity}"] is not None
        }
        same(shown, expected, f"cost, panel {dataset} / {header}")
        totals = [sum(v for (lab, _), v in expected.items() if lab == label(r)) for r in rows]
        bars[what] += totals
        axis = panel.axis("x")
        assert axis.fits(totals), f"cost {dataset} / {header}: axis to {axis.high}, largest study {max(totals)}"
    for what, found in units.items():
        assert len(found) == 1, f"cost: {what} in {found}"
        assert_unit_fits(what, next(iter(found)), bars[what])
    if cost.filter(pl.col("algorithm") == ALL).is_empty():
        return
    (subtitle,) = figure.subtitles
    grid = cost.filter(pl.col("algorithm") == ALL).row(0, named=True)
    shown = dict(re.findall(r"([\d.]+) (s|min|h|J|kJ|kWh)\b", subtitle.split(";")[0])[i][::-1] for i in range(2))
    for what, column in (("time", "total_time_s"), ("energy", "total_energy_j")):
        (unit,) = units[what]
        assert unit in shown, f"cost: the subtitle ({subtitle!r}) gives the grid's {what} in another unit than {unit}"
        assert close(float(shown[unit]), grid[column] / UNITS[what][unit], rel=5e-3), subtitle


def test_fig_cost_shows_time_and_energy_under_their_headers(tables):
    cost_panels(draw("cost", tables), tables.cost)


def default_grid_cost(tmp_path) -> pl.DataFrame:
    """The cost table of config/config.yaml's grid on digits (the seven studies that showed
    issue 25's swap), written and read back as cost.csv: tuning dearer than the runs, energy
    an estimate, seconds against microwatt-hours."""
    rows = []
    for i, (algorithm, arch) in enumerate(
        [
            ("ff", "mlp:256,256,256"),
            ("bp", "mlp:256,256,256"),
            ("mf", "mlp:256,256"),
            ("bp", "mlp:256,256"),
            ("cafo-rand", "cnn:32,128,512"),
            ("cafo-dfa", "cnn:32,128,512"),
            ("bp", "cnn:32,128,512"),
        ]
    ):
        row = dict.fromkeys(COST_COLUMNS)
        row |= {"algorithm": algorithm, "arch": arch, "dataset": "digits", "runs": 3}
        row |= {"tuning_time_s": 30.0 + i, "runs_time_s": 10.0 + i, "tuning_energy_j": 120.0 + i, "runs_energy_j": 40.0}
        row |= {"tuning_energy_source": "estimate", "runs_energy_source": "estimate"}
        rows.append(row)
    path = tmp_path / "cost.csv"
    pl.DataFrame(rows, schema=_schema(), orient="row").write_csv(path)
    return pl.read_csv(path, infer_schema_length=None)


def test_fig_cost_shows_time_and_energy_under_their_headers_on_the_default_grid(tmp_path, tables):
    cost = default_grid_cost(tmp_path)
    cost_panels(draw("cost", dataclasses.replace(tables, cost=cost)), cost)


# -- every figure: legible ticks, no legend entry without a mark ---------------------------------------
def unmatched(tables: Tables) -> Tables:
    """The same tables where none of our runs matches a configuration of the paper (the default
    digits grid): the paper table holds the paper's numbers alone."""
    methods = tables.methods.clear().with_columns(pl.col(r"^.*_(mean|sd|ci_low|ci_high)$").cast(pl.Float64))
    return dataclasses.replace(tables, paper=paper_comparison(methods, tables.deltas.clear()))


def test_no_figure_has_tick_labels_that_run_into_each_other(tables):
    """fig_paper's time axis drew "1,000" and "1,200" touching ("1,0001,200") on 180 px."""
    for variant in (tables, unmatched(tables)):
        for name in FIGURES:
            for panel in draw(name, variant).panels:
                for axis in panel.axes:
                    assert not axis.crowded(), f"fig_{name} {panel.headers} {axis.orient}: {axis.crowded()} touch"


def test_no_legend_entry_without_a_mark(tables):
    """fig_paper listed "ours" in its legend where none of our runs matched the paper."""
    for variant in (tables, unmatched(tables)):
        for name in FIGURES:
            figure = draw(name, variant)
            drawn = {value for panel in figure.panels for mark in panel.marks for value in mark.values()}
            for legend in figure.legends:
                empty = [v for v in legend.values if v not in drawn]
                assert not empty, f"fig_{name}: legend {legend.title!r} lists {empty}, drawn nowhere"
    paper = draw("paper", unmatched(tables))
    assert [legend.values for legend in paper.legends] == [["paper"]]


def test_a_wrong_figure_fails_its_check(tables):
    """The checks can fail: a method dropped from the table, energies in kJ, a five-minute study
    in hours or 280 J in kWh do not pass."""
    dropped = dataclasses.replace(
        tables, methods=tables.methods.filter(pl.col("algorithm") != "ff"), cost=None, hardware=None, to_target=None
    )
    with pytest.raises(AssertionError, match="drawn"):
        check_method_figure("energy", tables, drawn_from=dropped)
    kilo = tables.cost.with_columns(pl.col("tuning_energy_j", "runs_energy_j") / 1000)
    with pytest.raises(AssertionError):
        cost_panels(draw("cost", dataclasses.replace(tables, cost=kilo)), tables.cost)
    with pytest.raises(AssertionError, match="a smaller unit fits"):
        assert_unit_fits("time", "h", [0.05, 0.01])
    with pytest.raises(AssertionError, match="kJ fits"):
        assert_unit_fits("energy", "J", [1500.0])
    # fig_paper's time labels as the old figure drew them, 25.7 px apart on a 180 px axis
    touching = Axis(
        "x",
        None,
        "linear",
        labels=[Label(t, x, 15, "middle", 10) for t, x in (("800", 115.71), ("1,000", 141.43), ("1,200", 167.14))],
    )
    assert touching.crowded() == [("1,000", "1,200")]


# -- the paper's claims ---------------------------------------------------------------------------
def test_fig_claims_shows_each_claims_estimate_and_the_papers_value(tables):
    """Each kind of quantity in its own panel; every row of the claims table with a value is
    there with our estimate, its interval and its verdict, and the paper's value beside it; a
    ratio shown as its % change; the rows with nothing to plot named in the subtitle."""
    from bpfree.report.claims import PANELS, shown_value

    figure = draw("claims", tables)
    claims = tables.claims
    plotted = claims.filter(pl.col("value").is_not_null()).to_dicts()
    assert plotted, "the grid ran some of the paper's configurations"
    units = {r["unit"] or "" for r in plotted}
    assert sorted(p.headers[0] for p in figure.panels) == sorted(PANELS[u] for u in units)
    for r in plotted:
        label = f"{r['claim']} · {r['algorithm']} {r['arch']} · {r['dataset']}"
        panel = figure.panel(PANELS[r["unit"] or ""])
        (ours,) = [m for m in panel.marks_of("point") if m["label"] == label and m["mark"].startswith("ours")]
        assert close(number(ours["value"]), shown_value(r["value"], r["unit"] or ""))
        assert ours["verdict"] == r["verdict"]
        if r["ci_low"] is not None:
            (rule,) = [m for m in panel.marks_of("rule") if m.get("label") == label]
            assert close(number(rule["low"]), shown_value(r["ci_low"], r["unit"] or ""))
            assert close(number(rule["high"]), shown_value(r["ci_high"], r["unit"] or ""))
        papers = [m for m in panel.marks_of("point") if m["label"] == label and m["mark"] == "the paper's value"]
        if r["paper_value"] is None:
            assert not papers
        else:
            assert close(number(papers[0]["value"]), shown_value(r["paper_value"], r["unit"] or ""))
    subtitle = " ".join(figure.subtitles)
    for r in claims.filter(pl.col("value").is_null()).to_dicts():
        assert f"{r['arch']} on {r['dataset']}" in subtitle and r["verdict"] in subtitle
