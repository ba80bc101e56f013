"""The study's figures, drawn with Altair from the tables ``bpfree aggregate`` writes, and
saved as SVG and PNG (vl-convert, offline) and as interactive, self-contained HTML.

Each figure is a function ``tables -> alt.Chart`` in ``FIGURES``; its name is also its
workflow target (``snakemake --cores 1 fig_<name>``). Measured quantities carry in their
axis title how they were measured (``GPU energy (J, nvml-counter)``, ``energy (J,
estimate)``); a figure whose quantity no run measured says so instead of being left out."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import altair as alt
import polars as pl

from bpfree.core.errors import BpfreeError
from bpfree.core.io import write_bytes_atomic, write_text_atomic
from bpfree.core.outputs import BASELINE, FIGURE_NAMES, MEMORY_PARTS
from bpfree.report.claims import claims_chart
from bpfree.report.cost import cost_chart
from bpfree.report.formats import unit_for
from bpfree.report.tables import INTERVALS, METRIC, REQUIRED_TABLES, TABLES, Tables, metric_title
from bpfree.report.target import cumulative

# one colour per algorithm in every figure; bp, the reference, in grey
PALETTE = {"bp": "#7f7f7f", "ff": "#1f77b4", "mf": "#ff7f0e", "cafo-rand": "#2ca02c", "cafo-dfa": "#d62728"}
SPARE_COLOURS = ["#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
WIDTH = 360
DEVICE_NAMES = {"gpu": "GPU", "cuda": "GPU", "cpu": "CPU"}


def read_tables(directory: str | Path) -> Tables:
    """Every table of ``TABLES`` whose CSV is there (the required ones must be) and the histories."""
    directory = Path(directory)
    frames = {}
    for name in (*TABLES, "histories"):
        path = directory / f"{name}.csv"
        if not path.exists():
            if name in (*REQUIRED_TABLES, "histories"):
                raise BpfreeError(f"{path} is missing; write the tables first (bpfree aggregate --out-dir)")
            continue
        frames[name] = pl.read_csv(path, infer_schema_length=None, glob=False)
    return Tables(**frames)


# -- shared pieces ------------------------------------------------------------------------
def colour(algorithms: list[str]) -> alt.Color:
    domain = sorted(set(algorithms), key=lambda a: (a != BASELINE, a))
    spare = iter(SPARE_COLOURS * 4)
    return alt.Color(
        "algorithm:N",
        scale=alt.Scale(domain=domain, range=[PALETTE.get(a) or next(spare) for a in domain]),
        legend=alt.Legend(title="algorithm"),
    )


def with_label(frame: pl.DataFrame) -> pl.DataFrame:
    """``label`` = ``arch · algorithm``, ordered so each method sits above its BP twin."""
    return (
        frame.with_columns(
            (pl.col("arch") + " · " + pl.col("algorithm")).alias("label"),
            (pl.col("algorithm") == BASELINE).alias("_is_bp"),
        )
        .sort("dataset", "arch", "_is_bp", "algorithm")
        .drop("_is_bp")
    )


def measured_title(
    column: str, frame: pl.DataFrame, device: pl.DataFrame | None = None, unit: str | None = None
) -> str:
    """The axis title of a measured metric, with its unit (``unit``, else the column's) and
    source(s): ``GPU energy (kJ, nvml-counter)``."""
    metric = METRIC[column]
    sources = []
    if metric.source and metric.source in frame.columns:
        for value in frame[metric.source].drop_nulls().unique().sort().to_list():
            sources += [s.strip() for s in str(value).split(",")]
    sources = sorted(set(sources))
    title = metric_title(metric, ", ".join(sources) or None, unit)
    if column != "energy_j":
        return title
    # which device's energy: the runs' energy_device (bpfree.measure: "gpu" or "cpu")
    kinds = set()
    if device is not None and "energy_device" in device.columns:
        kinds = {DEVICE_NAMES.get(k, k) for k in device["energy_device"].drop_nulls().to_list()}
    elif sources and all(s.startswith("nvml") for s in sources):
        kinds = {"GPU"}
    return f"{kinds.pop()} {title}" if len(kinds) == 1 else title


def not_measured(title: str, message: str) -> alt.Chart:
    """A figure whose quantity no run has: it says why instead of being empty."""
    return (
        alt.Chart(alt.Data(values=[{"message": message}]))
        .mark_text(fontSize=14, align="center")
        .encode(text="message:N")
        .properties(title=title, width=WIDTH, height=80)
    )


def has_values(frame: pl.DataFrame, column: str) -> bool:
    return column in frame.columns and frame[column].drop_nulls().drop_nans().len() > 0


def method_chart(tables: Tables, column: str, title: str, bars: bool) -> alt.Chart:
    """Mean over seeds of ``column`` per method with its 95% interval, each method next to its
    BP twin, one panel per dataset, in one unit picked from the numbers (accuracy in %). Bars
    from zero for costs; points for accuracy."""
    methods = tables.methods
    mean = f"{column}_mean"
    if not has_values(methods, mean):
        return not_measured(title, f"no run measured {METRIC[column].label} ({column} absent)")
    unit, scale = METRIC[column].shown_in(methods[mean].to_list())  # the unit the bars (points) fill
    axis = measured_title(column, methods, tables.summary, unit)
    data = (
        with_label(methods)
        .with_columns(
            (pl.col(mean) * scale).alias("mean"),
            (pl.col(f"{column}_ci_low") * scale).alias("low"),
            (pl.col(f"{column}_ci_high") * scale).alias("high"),
            (pl.col("ok").cast(pl.String) + " of " + pl.col("runs").cast(pl.String)).alias("ok runs"),
            # a method whose runs diverged says so where it is drawn, not only in the tables
            pl.when(pl.col("diverged") > 0)
            .then(pl.format("{} ({} of {} diverged)", "label", "diverged", "runs"))
            .otherwise("label")
            .alias("label"),
        )
        .select("dataset", "arch", "algorithm", "label", "mean", "low", "high", "ok runs", "note")
    )
    y = alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelLimit=400))
    x = alt.X("mean:Q", title=axis, scale=alt.Scale(zero=bars))
    tooltip = [
        "algorithm:N",
        "arch:N",
        "dataset:N",
        alt.Tooltip("mean:Q", format=".4g"),
        alt.Tooltip("low:Q", format=".4g", title="95% interval low"),
        alt.Tooltip("high:Q", format=".4g", title="95% interval high"),
        "ok runs:N",
        "note:N",
    ]
    base = alt.Chart().encode(y=y)
    mark = base.mark_bar(opacity=0.85) if bars else base.mark_point(filled=True, size=70)
    layers = [
        mark.encode(x=x, color=colour(data["algorithm"].to_list()), tooltip=tooltip),
        base.mark_errorbar(ticks=True, color="black").encode(x=alt.X("low:Q", title=axis), x2="high:Q"),
    ]
    return (
        alt.layer(*layers, data=data)
        .properties(width=WIDTH)
        .facet(row=alt.Row("dataset:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")))
        .resolve_scale(x="independent", y="independent")
        .properties(
            title=alt.Title(
                title, subtitle=f"mean over the seeds' ok runs; whiskers: 95% {INTERVALS[METRIC[column].interval]}"
            )
        )
    )


# -- the figures --------------------------------------------------------------------------
def accuracy(tables: Tables) -> alt.Chart:
    return method_chart(tables, "test_accuracy", "Test accuracy, each method vs its BP twin", bars=False)


def energy(tables: Tables) -> alt.Chart:
    return method_chart(tables, "energy_j", "Training energy per method", bars=True)


def time(tables: Tables) -> alt.Chart:
    return method_chart(tables, "train_time_s", "Training time per method", bars=True)


def memory(tables: Tables) -> alt.Chart:
    return method_chart(tables, "peak_memory_mb", "Peak memory per method", bars=True)


def pareto_front(points: pl.DataFrame, cost: str, gain: str) -> pl.DataFrame:
    """The points no other point beats on both (lower ``cost``, higher ``gain``), per dataset."""
    front = []
    for group in points.sort("dataset", cost, pl.col(gain), descending=[False, False, True]).partition_by(
        "dataset", maintain_order=True
    ):
        best = float("-inf")
        for row in group.iter_rows(named=True):
            if row[gain] > best:
                front.append(row)
                best = row[gain]
    return pl.DataFrame(front, schema=points.schema)


def pareto(tables: Tables) -> alt.Chart:
    """Energy against accuracy per method (training time if no run measured energy), with
    the Pareto front: the methods nothing beats on both."""
    methods = tables.methods
    cost = "energy_j" if has_values(methods, "energy_j_mean") else "train_time_s"
    if not has_values(methods, f"{cost}_mean") or not has_values(methods, "test_accuracy_mean"):
        return not_measured("Energy vs accuracy", "no run with both accuracy and a cost measured")
    unit, scale = METRIC[cost].shown_in(methods[f"{cost}_mean"].to_list())
    cost_title = measured_title(cost, methods, tables.summary, unit)
    subtitle = "mean over seeds; line: Pareto front (lower cost and higher accuracy)"
    if cost != "energy_j":
        subtitle += "; energy not measured, training time instead"
    points = (
        with_label(methods)
        .select(
            "dataset",
            "arch",
            "algorithm",
            "label",
            (pl.col(f"{cost}_mean") * scale).alias("cost"),
            (100 * pl.col("test_accuracy_mean")).alias("accuracy"),
        )
        .drop_nulls(["cost", "accuracy"])
    )
    front = pareto_front(points, "cost", "accuracy").select("dataset", "label", pl.lit(True).alias("front"))
    points = points.join(front, on=["dataset", "label"], how="left").with_columns(pl.col("front").fill_null(False))
    x = alt.X("cost:Q", title=cost_title, scale=alt.Scale(zero=False, nice=True))
    y = alt.Y("accuracy:Q", title="test accuracy (%)", scale=alt.Scale(zero=False))
    dots = (
        alt.Chart()
        .mark_point(filled=True, size=90)
        .encode(
            x=x,
            y=y,
            color=colour(points["algorithm"].to_list()),
            shape=alt.Shape("arch:N", title="architecture"),
            tooltip=[
                "label:N",
                alt.Tooltip("cost:Q", format=".4g", title=cost_title),
                alt.Tooltip("accuracy:Q", format=".2f"),
                "front:N",
            ],
        )
    )
    line = (
        alt.Chart()
        .transform_filter("datum.front")
        .mark_line(color="black", strokeDash=[4, 3], interpolate="step-after")
        .encode(x=x, y=y, order="cost:Q")
    )
    return (
        alt.layer(line, dots, data=points)
        .properties(width=WIDTH, height=260)
        .facet(column=alt.Column("dataset:N", title=None))
        .resolve_scale(x="independent", y="independent")
        .properties(
            title=alt.Title("Energy vs accuracy" if cost == "energy_j" else "Cost vs accuracy", subtitle=subtitle)
        )
    )


def val_loss(tables: Tables) -> alt.Chart:
    """Validation loss per epoch of every run (one line per seed), each method next to its
    BP twin: where each reaches its minimum, the paper's "more favourable minimum" claim."""
    history = tables.histories
    if not has_values(history, "val_loss"):
        return not_measured("Validation loss per epoch", "no run history with val_loss")
    data = history.select(
        "dataset",
        "arch",
        "algorithm",
        "seed",
        "epoch",
        "stage",
        "val_loss",
        (pl.col("dataset") + " · " + pl.col("arch")).alias("panel"),
        (pl.col("algorithm") + " seed " + pl.col("seed").cast(pl.String)).alias("run"),
    ).filter(pl.col("val_loss").is_finite())
    pick = alt.selection_point(fields=["algorithm"], bind="legend")
    lines = (
        alt.Chart()
        .mark_line(strokeWidth=1.5)
        .encode(
            x=alt.X("epoch:Q", title="epoch (over all stages)", axis=alt.Axis(format="d", tickMinStep=1)),
            y=alt.Y(
                "val_loss:Q",
                title="validation loss (of the stage being trained; log)",
                scale=alt.Scale(type="log", nice=False, padding=8),
            ),
            color=colour(data["algorithm"].to_list()),
            detail="run:N",
            opacity=alt.condition(pick, alt.value(0.9), alt.value(0.1)),
            tooltip=["run:N", "stage:N", "epoch:Q", alt.Tooltip("val_loss:Q", format=".4f")],
        )
        .add_params(pick)
    )
    panels = data["panel"].n_unique()
    subtitle = ["one line per seed; click a legend entry to pick a method"]
    # what each method's loss is: FF's goodness BCE or CaFo's sum over blocks is no cross-entropy
    summary = tables.summary
    if "val_loss_kind" in summary.columns:
        kinds = summary.filter(pl.col("algorithm").is_in(data["algorithm"].unique().to_list()))
        kinds = kinds.group_by("val_loss_kind").agg(pl.col("algorithm").unique().sort()).sort("val_loss_kind")
        if kinds.height > 1:
            said = "; ".join(f"{', '.join(a)}: {k}" for k, a in kinds.sort("algorithm").iter_rows())
            subtitle.append(f"the losses differ ({said}): compare where each reaches its minimum, not their values")
    return (
        alt.layer(lines, data=data)
        .properties(width=WIDTH * 3 // 4, height=200)
        .facet(facet=alt.Facet("panel:N", title=None), columns=min(panels, 3))
        .resolve_scale(y="independent")
        .properties(title=alt.Title("Validation loss per epoch", subtitle=subtitle))
    )


def paper(tables: Tables) -> alt.Chart:
    """Our numbers next to the paper's for the same method, architecture and dataset."""
    table = tables.paper
    ours_any = int(table["runs"].sum()) > 0
    rows = table.with_columns((pl.col("algorithm") + " · " + pl.col("arch") + " · " + pl.col("dataset")).alias("row"))
    panels = [
        ("accuracy_pct", "paper_accuracy_pct", "test accuracy (%)"),
        ("accuracy_vs_bp_pp", "paper_accuracy_vs_bp_pp", "accuracy vs BP twin (points)"),
        ("time_vs_bp_pct", "paper_time_vs_bp_pct", "training time vs BP twin (%)"),
        ("energy_vs_bp_pct", "paper_energy_vs_bp_pct", "energy vs BP twin (%)"),
    ]
    long = (
        pl.concat(
            [
                rows.select(
                    "row",
                    "runs",
                    pl.lit(title).alias("quantity"),
                    pl.col(ours).cast(pl.Float64).alias("ours"),
                    pl.col(theirs).cast(pl.Float64).alias("paper"),
                )
                for ours, theirs, title in panels
            ]
        )
        .unpivot(index=["row", "runs", "quantity"], on=["ours", "paper"], variable_name="source", value_name="value")
        .drop_nulls("value")
    )
    sources = (
        sorted(s for s in table["energy_source"].drop_nulls().unique().to_list())
        if ("energy_source" in table.columns)
        else []
    )
    subtitle = "ours: mean over seeds on this machine; paper: arXiv 2509.19063, A100, GPU energy by NVML polling" + (
        f"; our energy: {', '.join(sources)}" if sources else ""
    )
    if not ours_any:
        subtitle = "none of our runs matches a configuration of the paper: the paper's numbers alone"
    order = rows["row"].to_list()
    # the legend names only the sources drawn: no "ours" entry without a mark
    drawn = [source for source in ("ours", "paper") if source in long["source"].to_list()]
    symbols = {"ours": ("#d62728", "circle"), "paper": ("#4c4c4c", "diamond")}
    y = alt.Y("row:N", sort=order, title=None, axis=alt.Axis(labelLimit=400))
    dots = (
        alt.Chart()
        .mark_point(filled=True, size=70)
        .encode(
            y=y,
            x=alt.X("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("source:N", scale=alt.Scale(domain=drawn, range=[symbols[s][0] for s in drawn])),
            shape=alt.Shape("source:N", scale=alt.Scale(domain=drawn, range=[symbols[s][1] for s in drawn])),
            tooltip=["row:N", "source:N", alt.Tooltip("value:Q", format=".2f"), "runs:Q"],
        )
    )
    # 0 on the "vs BP" panels: as good / as costly as the BP twin
    same_as_bp = (
        alt.Chart()
        .transform_filter("indexof(datum.quantity, 'vs BP') >= 0")
        .transform_aggregate(groupby=["quantity"])
        .transform_calculate(zero="0")
        .mark_rule(color="#999999", strokeDash=[3, 3])
        .encode(x="zero:Q")
    )
    return (
        alt.layer(same_as_bp, dots, data=long)
        .properties(width=WIDTH // 2)
        .facet(column=alt.Column("quantity:N", title=None, sort=[p[2] for p in panels]))
        .resolve_scale(x="independent")
        .properties(title=alt.Title("Ours vs the paper", subtitle=subtitle))
    )


def cost(tables: Tables) -> alt.Chart:
    return cost_chart(tables.cost, WIDTH)


# -- where compute, memory and energy go (bpfree.engine.analysis, bpfree.report.target) ----------------------
MEMORY_LABELS = {  # one per part of bpfree.core.outputs.MEMORY_PARTS, in its order (checked below)
    "weights": "weights (and buffers)",
    "gradients": "gradients",
    "optimizer": "optimiser state",
    "activations": "activations kept for backward",
    "cached_features": "cached features",
    "data": "data on the device",
}
if tuple(MEMORY_LABELS) != MEMORY_PARTS:
    raise AssertionError(f"MEMORY_LABELS must name each of {MEMORY_PARTS}, in order")


def flops(tables: Tables) -> alt.Chart:
    """Training and inference FLOPs per sample of each method next to its BP twin (log)."""
    title = "FLOPs per sample, each method vs its BP twin"
    table = tables.hardware
    if table is None or not has_values(table, "train_flops_per_sample"):
        return not_measured(title, "no run was analysed (measurement.hardware_analysis off, or older runs)")
    quantities = {
        "train_flops_per_sample": "training (per sample per epoch, run average)",
        "infer_flops_per_sample": "inference (per sample)",
    }
    data = (
        with_label(table)
        .unpivot(index=["dataset", "arch", "algorithm", "label"], on=list(quantities), variable_name="q")
        .with_columns(pl.col("q").replace_strict(quantities).alias("quantity"))
        .drop_nulls("value")
    )
    bars = (
        alt.Chart()
        .mark_bar(opacity=0.85)
        .encode(
            y=alt.Y("label:N", sort=None, title=None, axis=alt.Axis(labelLimit=400)),
            x=alt.X("value:Q", title="FLOPs per sample", axis=alt.Axis(format="~s")),
            color=colour(data["algorithm"].to_list()),
            tooltip=["label:N", "quantity:N", alt.Tooltip("value:Q", format=".3s")],
        )
    )
    return (
        alt.layer(bars, data=data)
        .properties(width=WIDTH * 2 // 3)
        .facet(
            row=alt.Row("dataset:N", title=None),
            column=alt.Column("quantity:N", title=None, sort="descending"),  # training first (see cost.cost_chart)
        )
        .resolve_scale(x="independent", y="independent")
        .properties(
            title=alt.Title(
                title,
                subtitle="matrix products and convolutions counted by torch's FlopCounterMode on the algorithms' "
                "own training and prediction code; mean over seeds",
            )
        )
    )


def memory_breakdown(tables: Tables) -> alt.Chart:
    """Memory by part (stacked) of each method's largest stage, the measured peak beside it."""
    title = "Memory by part, each method vs its BP twin"
    table = tables.hardware
    if table is None or not has_values(table, "memory_breakdown_total_mb"):
        return not_measured(title, "no run was analysed (measurement.hardware_analysis off, or older runs)")
    labelled = with_label(table)
    order = labelled["label"].to_list()
    parts = (
        labelled.unpivot(
            index=["dataset", "label", "memory_breakdown_stage"],
            on=[f"memory_{p}_mb" for p in MEMORY_PARTS],
            variable_name="part",
            value_name="mb",
        )
        .with_columns(pl.col("part").str.strip_prefix("memory_").str.strip_suffix("_mb").replace_strict(MEMORY_LABELS))
        .drop_nulls("mb")
    )
    peaks = labelled.select(
        "dataset", "label", *(c for c in ("peak_memory_mb", "peak_memory_kind") if c in labelled.columns)
    )
    # by dataset too: the same arch and method on two datasets share a label
    parts = parts.join(peaks, on=["dataset", "label"], how="left")
    y = alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=400))
    layers = [
        alt.Chart()
        .mark_bar()
        .encode(
            y=y,
            x=alt.X("sum(mb):Q", title="MiB (tensor sizes; the stage that holds the most)"),
            color=alt.Color("part:N", sort=list(MEMORY_LABELS.values()), title="held by"),
            order=alt.Order("part:N"),
            tooltip=["label:N", "memory_breakdown_stage:N", "part:N", alt.Tooltip("mb:Q", format=".2f")],
        )
    ]
    subtitle = "bars: weights, gradients, optimiser state, saved activations, caches and data, from tensor sizes"
    if has_values(parts, "peak_memory_mb"):
        # the measured peak as text at each bar's end: a process's RSS holds the Python and
        # torch runtime too (hundreds of MiB) and would dwarf the bars on the same axis
        parts = parts.with_columns(
            pl.format(
                "measured peak {} MiB ({})", pl.col("peak_memory_mb").round(0).cast(pl.Int64), "peak_memory_kind"
            ).alias("peak_text")
        )
        layers.append(
            alt.Chart()
            .mark_text(align="left", dx=4, fontSize=10, color="#444444")
            # grouped by the text (one per bar): Vega's max of a string is undefined
            .encode(y=y, x="sum(mb):Q", text="peak_text:N")
        )
        subtitle += "; text: the measured total peak of the run"
    else:
        subtitle += "; no measured peak"
    return (
        alt.layer(*layers, data=parts)
        .properties(width=WIDTH)
        .facet(row=alt.Row("dataset:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")))
        .resolve_scale(x="independent", y="independent")
        .properties(title=alt.Title(title, subtitle=subtitle))
    )


def _estimated(histories: pl.DataFrame) -> bool:
    """True where some epoch's energy is an estimate or missing: plot against time instead."""
    if not has_values(histories, "energy_j") or "energy_source" not in histories.columns:
        return True
    sources = histories["energy_source"]
    return bool(sources.is_null().any() or sources.str.contains("estimate").any())


def to_target_figure(tables: Tables) -> alt.Chart:
    """Validation accuracy against cumulative energy (time where energy is an estimate) of
    each run's last stage, with the target line and where each run first reached it."""

    title = "Validation accuracy vs cost, to the target"
    history = tables.histories
    if not has_values(history, "val_accuracy"):
        return not_measured(title, "no run history with val_accuracy")
    by_time = _estimated(history)
    cost = "cum_time_s" if by_time else "cum_energy_j"
    rows = []
    for _, run in history.group_by(["algorithm", "arch", "dataset", "seed"], maintain_order=True):
        rows += [r for r in cumulative(run) if r["final_stage"]]
    curves = pl.DataFrame(rows, infer_schema_length=None).select(
        "algorithm",
        "arch",
        "dataset",
        "seed",
        "epoch",
        "stage",
        (pl.col("val_accuracy") * 100).alias("accuracy"),
        pl.col(cost).alias("cost"),
        (pl.col("dataset") + " · " + pl.col("arch")).alias("panel"),
        (pl.col("algorithm") + " seed " + pl.col("seed").cast(pl.String)).alias("run"),
    )
    curves = curves.drop_nulls("cost").filter(pl.col("accuracy").is_finite())
    if curves.is_empty():
        return not_measured(title, "no epoch with both a validation accuracy and a cost")
    unit = unit_for("time" if by_time else "energy", curves["cost"].to_list())
    curves = curves.with_columns(pl.col("cost") / unit.size)
    if by_time:
        cost_title = f"training time so far ({unit.name})"
    else:
        sources = sorted(history["energy_source"].drop_nulls().unique().to_list())
        cost_title = f"energy so far ({unit.name}, {', '.join(sources)})"
    x = alt.X("cost:Q", title=cost_title + " (log)", scale=alt.Scale(type="log"))
    y = alt.Y("accuracy:Q", title="validation accuracy (%)", scale=alt.Scale(zero=False))
    pick = alt.selection_point(fields=["algorithm"], bind="legend")
    layers = [
        alt.Chart()
        .mark_line(point=alt.OverlayMarkDef(size=12))
        .encode(
            x=x,
            y=y,
            color=colour(curves["algorithm"].to_list()),
            detail="run:N",
            opacity=alt.condition(pick, alt.value(0.9), alt.value(0.1)),
            tooltip=["run:N", "stage:N", "epoch:Q", alt.Tooltip("cost:Q", format=".4g"), "accuracy:Q"],
        )
        .add_params(pick)
    ]
    target = tables.to_target
    subtitle = "last stage's epochs; x includes every earlier stage"
    if target is not None and has_values(target, "target_val_accuracy"):
        lines = (
            target.group_by("dataset", "arch")
            .agg((pl.col("target_val_accuracy").mean() * 100).alias("target"), pl.col("target_fraction").first())
            .with_columns((pl.col("dataset") + " · " + pl.col("arch")).alias("panel"))
        )
        curves = curves.join(lines.select("panel", "target"), on="panel", how="left")
        layers.append(
            alt.Chart()
            .mark_rule(color="black", strokeDash=[4, 3])
            .encode(y="mean(target):Q", tooltip=["mean(target):Q"])
        )
        fraction = lines["target_fraction"].drop_nulls()
        if len(fraction):
            subtitle = (
                f"dashed: target, {100 * fraction[0]:.0f}% of the BP twin's best validation accuracy "
                f"(mean over seeds); {subtitle}"
            )
    if by_time:
        subtitle += "; energy not measured per epoch (estimate or missing): time instead"
    panels = curves["panel"].n_unique()
    return (
        alt.layer(*layers, data=curves)
        .properties(width=WIDTH * 3 // 4, height=220)
        .facet(facet=alt.Facet("panel:N", title=None), columns=min(panels, 3))
        .resolve_scale(x="independent", y="independent")
        .properties(title=alt.Title(title, subtitle=subtitle))
    )


def power(tables: Tables) -> alt.Chart:
    """GPU power over time of one run per method (each epoch's energy over its time), only
    where a GPU's energy was measured (NVML); otherwise a panel that says none was."""
    title = "GPU power over time, one run per method"
    history = tables.histories
    sources = (
        sorted(history["energy_source"].drop_nulls().unique().to_list()) if "energy_source" in history.columns else []
    )
    measured = history.filter(pl.col("energy_source").str.starts_with("nvml")) if sources else history.clear()
    if measured.is_empty() or not has_values(measured, "energy_j"):
        seen = ", ".join(sources) or "none"
        return not_measured(title, f"no GPU power was measured in these runs (energy sources: {seen})")
    first_seed = measured.group_by("algorithm", "arch", "dataset").agg(pl.col("seed").min())
    data = (
        measured.join(first_seed, on=["algorithm", "arch", "dataset", "seed"])
        .sort("epoch")
        .with_columns(
            (pl.col("energy_j") / pl.col("epoch_time_s")).alias("power_w"),
            pl.col("epoch_time_s").cum_sum().over("algorithm", "arch", "dataset").alias("time_s"),
            (pl.col("dataset") + " · " + pl.col("arch")).alias("panel"),
        )
        .filter(pl.col("power_w").is_finite())
    )
    lines = (
        alt.Chart()
        .mark_line(point=alt.OverlayMarkDef(size=12), interpolate="step-before")
        .encode(
            x=alt.X("time_s:Q", title="time in the fit (s, validation included)"),
            y=alt.Y("power_w:Q", title=f"mean GPU power per epoch (W, {', '.join(sources)})"),
            color=colour(data["algorithm"].to_list()),
            tooltip=["algorithm:N", "seed:Q", "epoch:Q", "stage:N", alt.Tooltip("power_w:Q", format=".1f")],
        )
    )
    return (
        alt.layer(lines, data=data)
        .properties(width=WIDTH, height=200)
        .facet(facet=alt.Facet("panel:N", title=None), columns=2)
        .resolve_scale(x="independent")
        .properties(title=alt.Title(title, subtitle="each epoch's measured energy over its time; lowest seed"))
    )


def claims(tables: Tables) -> alt.Chart:
    """Each claim of the paper: our paired estimate and interval, the paper's value, the verdict
    (bpfree.report.claims)."""
    if tables.claims is None or tables.claims.height == 0:
        return not_measured("The paper's claims, tested", "no claims table (bpfree aggregate writes it)")
    return claims_chart(tables.claims)


# the least room (px) between two tick labels of a quantitative axis: Vega drops every other
# label until they are this far apart (its default, 0, let "1,000" and "1,200" touch)
LABEL_SEPARATION = 6


def legible(figure: Callable[[Tables], alt.Chart]) -> Callable[[Tables], alt.Chart]:
    """``figure`` with its quantitative axes' tick labels kept apart (``LABEL_SEPARATION``)."""

    def draw(tables: Tables) -> alt.Chart:
        return figure(tables).configure_axisQuantitative(labelOverlap=True, labelSeparation=LABEL_SEPARATION)

    draw.__doc__ = figure.__doc__
    return draw


FIGURES: dict[str, Callable[[Tables], alt.Chart]] = {
    name: legible(figure)
    for name, figure in {
        "accuracy": accuracy,
        "energy": energy,
        "time": time,
        "pareto": pareto,
        "val_loss": val_loss,
        "memory": memory,
        "paper": paper,
        "cost": cost,
        "flops": flops,
        "memory_breakdown": memory_breakdown,
        "to_target": to_target_figure,
        "power": power,
        "claims": claims,
    }.items()
}
assert list(FIGURES) == FIGURE_NAMES, "bpfree.core.outputs.FIGURE_NAMES names the workflow's targets"


def save(chart: alt.Chart, stem: str | Path) -> list[Path]:
    """``STEM.svg``, ``STEM.png`` (2x) and a self-contained ``STEM.html``, written atomically."""
    stem = Path(stem)
    written = []
    for fmt in ("svg", "png", "html"):
        buffer = io.BytesIO() if fmt == "png" else io.StringIO()
        options = {"scale_factor": 2} if fmt == "png" else {"inline": True} if fmt == "html" else {}
        chart.save(buffer, format=fmt, **options)
        path = stem.with_suffix(f".{fmt}")
        if fmt == "png":
            write_bytes_atomic(path, buffer.getvalue())
        else:
            write_text_atomic(path, buffer.getvalue())
        written.append(path)
    return written


def draw(name: str, tables: Tables, out_dir: str | Path) -> list[Path]:
    if name not in FIGURES:
        raise BpfreeError(f"unknown figure {name!r}; valid: {', '.join(FIGURES)}")
    return save(FIGURES[name](tables), Path(out_dir) / name)
