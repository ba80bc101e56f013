"""Every run's metrics.json (and history.csv) into the study's tables, with polars.

- ``summary``: one row per run.
- ``methods``: one row per (algorithm, arch, dataset): runs counted by status, and for each
  metric the mean, sd and 95% t-interval over the seeds whose run finished ("ok"). A metric
  measured in more than one way within a group (e.g. energy from the NVML counter in one
  run and an estimate in another) is not summarised: its sources are listed and noted.
- ``deltas``: each BP-free method against its BP twin (bp on the same arch and dataset),
  over seed-matched pairs: relative change of the means in percent, as the paper states
  them ("40.8% less energy" is -40.8), and a paired t-test (NaN, noted, below 2 pairs).
- ``paper``: ours next to the numbers of arXiv 2509.19063 (``paper_results.csv``).

Diverged runs are never dropped silently: they are counted and noted in every table."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from bpfree.core.io import write_text_atomic
from bpfree.core.outputs import BASELINE, HISTORIES, TABLE_NAMES, TARGET_FRACTION
from bpfree.report.claims import VERDICT_RULE, claims_display, claims_table
from bpfree.report.cost import cost_display, cost_table, read_trials
from bpfree.report.formats import estimate, fixed, latex_text, num, to_latex, to_markdown, unit_for, with_source
from bpfree.report.hardware import hardware_display, hardware_table
from bpfree.report.paper_table import paper_arch, paper_results  # noqa: F401  (paper_arch: re-exported)
from bpfree.report.runs import KEYS, RunFiles, read_histories, read_metrics, runs_of
from bpfree.report.target import to_target_display, to_target_table

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Metric:
    column: str  # as in metrics.json
    label: str
    unit: str  # of the column: s, J, MiB, kg (its quantity's base unit), or none
    source: str | None = None  # the column that says how it was measured
    percent: bool = False  # a fraction shown in percent (accuracy); deltas in points
    positive: bool = False  # never below 0 (a time, an energy, a count): its interval stays above 0
    quantity: str | None = None  # time, energy, memory, co2: shown in a unit picked from the numbers
    detail: str | None = None  # what it is, beside its unit in a title: "its whole-machine estimate"
    note: str | None = None  # said in each of its deltas' rows

    @property
    def interval(self) -> str:
        """How its 95% interval over seeds is computed (:func:`interval`)."""
        return "score" if self.percent else "log" if self.positive else "t"

    def shown_in(self, values: Iterable[float | None] = ()) -> tuple[str, float]:
        """The unit to show ``values`` (of this column) in, and the factor that takes them there:
        accuracy in %, a time or an energy in the unit its largest value fills
        (:func:`bpfree.report.formats.unit_for`), memory in MiB, CO2 in g."""
        if self.percent:
            return "%", 100.0
        if self.quantity:
            unit = unit_for(self.quantity, values)
            return unit.name, 1 / unit.size
        return self.unit, 1.0


METRICS = [
    Metric("test_accuracy", "test accuracy", "%", percent=True),
    Metric("train_time_s", "training time", "s", positive=True, quantity="time"),
    Metric("time_per_epoch_s", "time per epoch", "s", positive=True, quantity="time"),
    Metric("epochs", "epochs", "", positive=True),
    # its "source" is what the loss is (bpfree.report.runs.val_loss_kind): FF's goodness BCE and
    # CaFo's sum over blocks are no cross-entropy, and are not compared with BP's
    Metric("min_val_loss", "min. validation loss", "", source="val_loss_kind", positive=True),
    Metric("energy_j", "energy", "J", source="energy_source", positive=True, quantity="energy"),
    Metric("net_energy_j", "energy above idle", "J", source="energy_source", quantity="energy"),
    Metric("cpu_energy_j", "CPU energy", "J", source="cpu_energy_source", positive=True, quantity="energy"),
    # CO2 beside the energy it was computed from: ours, of the measured energy above, at the
    # grid intensity CodeCarbon used; CodeCarbon's, of its own whole-machine energy estimate
    Metric(
        "co2_ours_kg",
        "CO2 of our energy",
        "kg",
        source="energy_source",
        positive=True,
        quantity="co2",
        detail="energy × CodeCarbon's grid intensity",
    ),
    Metric(
        "codecarbon_energy_j",
        "CodeCarbon's energy",
        "J",
        positive=True,
        quantity="energy",
        detail="its whole-machine estimate",
    ),
    Metric(
        "co2_kg",
        "CO2, CodeCarbon's",
        "kg",
        positive=True,
        quantity="co2",
        detail="of CodeCarbon's energy",
        note="CodeCarbon's energy × grid intensity: follows codecarbon_energy_j (mostly time), not energy_j",
    ),
    Metric(
        "grid_intensity_g_per_kwh",
        "grid intensity",
        "g/kWh",
        source="co2_country",
        positive=True,
        detail="CodeCarbon's: its CO2 over its energy",
    ),
    Metric("peak_memory_mb", "peak memory", "MiB", source="peak_memory_kind", positive=True, quantity="memory"),
]


METRIC = {m.column: m for m in METRICS}


# what each interval is, for the tables' footnotes and the figures' subtitles (docs/measurement.md)
INTERVALS = {
    "score": "Wilson score interval with the seeds' effective sample size and Student's t",
    "log": "t-interval on the log scale",
    "t": "t-interval",
}


# -- per method ---------------------------------------------------------------------------
def present(runs: pl.DataFrame) -> list[Metric]:
    return [m for m in METRICS if m.column in runs.columns]


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    from scipy import stats  # here: the figures import this module and need no scipy

    return float(stats.t.ppf(0.5 + confidence / 2, n - 1))


def t_halfwidth(sd: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half the width of the t-interval for a mean of ``n`` values with sample sd ``sd``."""
    if n < 2 or sd is None or not math.isfinite(sd):
        return math.nan
    return t_quantile(n, confidence) * sd / math.sqrt(n)


def score_interval(mean: float, sd: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A ``confidence`` interval for the mean ``mean`` of ``n`` fractions in [0, 1] (accuracies
    over seeds) with sample sd ``sd``: Wilson's score interval, with the seeds' effective
    sample size n_eff = m(1 - m) / (sd^2 / n) (the Bernoulli trials that would give the mean
    this variance) and Student's t quantile (n - 1 degrees of freedom) in place of z. It
    inverts |m - p| <= t sqrt(p(1 - p) / n_eff): it lies within [0, 1], always holds the mean,
    and tends to the t-interval when the spread is small against m(1 - m). (NaN, NaN) below
    two values; (m, m) when they are all equal."""
    if n < 2 or sd is None or not math.isfinite(sd):
        return math.nan, math.nan
    q = mean * (1 - mean)
    if sd == 0 or q <= 0:  # no spread (a mean of 0 or 1 has none either)
        return mean, mean
    t = t_quantile(n, confidence)
    v = sd * sd / n  # the mean's variance; v / q = 1 / n_eff
    a = t * t * v / q
    centre = (mean + a / 2) / (1 + a)
    half = t / (1 + a) * math.sqrt(v + a * v / (4 * q))  # sqrt(p(1-p)/n_eff + t^2/(4 n_eff^2))
    return max(0.0, centre - half), min(1.0, centre + half)  # max/min: rounding only


def log_interval(values: list[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The t-interval of the values' logarithms, back-transformed: above 0, wider upwards,
    as a positive quantity's spread is. With two to four values it always holds their mean
    (the t quantile is at least n - 1, the largest a value's distance from the log-mean can
    be in sds of the logs). Values must be > 0; (NaN, NaN) below two."""
    n = len(values)
    if n < 2:
        return math.nan, math.nan
    logs = [math.log(v) for v in values]
    centre = sum(logs) / n
    sd = math.sqrt(sum((x - centre) ** 2 for x in logs) / (n - 1))
    half = t_halfwidth(sd, n, confidence)
    return math.exp(centre - half), math.exp(centre + half)


def interval(metric: Metric, values: list[float], confidence: float = CONFIDENCE) -> tuple[tuple[float, float], str]:
    """The 95% interval of the mean of ``values`` as ``metric`` asks for it (``Metric.interval``)
    and the kind actually used: a positive quantity with a value <= 0 gets the t-interval."""
    n = len(values)
    mean = sum(values) / n if n else math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else math.nan
    kind = metric.interval
    if kind == "log" and any(v <= 0 for v in values):
        kind = "t"
    if kind == "score":
        return score_interval(mean, sd, n, confidence), kind
    if kind == "log":
        return log_interval(values, confidence), kind
    half = t_halfwidth(sd, n, confidence)
    return (mean - half, mean + half), kind


def method_stats(runs: pl.DataFrame) -> pl.DataFrame:
    """Per (algorithm, arch, dataset): run counts, then ``<metric>_{n,mean,sd,ci_low,ci_high}``
    over the ok runs, and each measured metric's source column."""
    ok = pl.col("status") == "ok"
    aggs = [
        pl.len().alias("runs"),
        ok.sum().alias("ok"),
        (pl.col("status") == "diverged").sum().alias("diverged"),
        pl.col("seed").filter(ok).sort().cast(pl.String).str.join(",").alias("seeds"),
    ]
    metrics = present(runs)
    for m in metrics:
        value = pl.col(m.column).cast(pl.Float64)
        value = value.filter(ok & value.is_not_null() & value.is_finite())
        aggs += [
            value.count().alias(f"{m.column}_n"),
            value.mean().alias(f"{m.column}_mean"),
            value.std(ddof=1).alias(f"{m.column}_sd"),
            value.alias(f"_{m.column}_values"),
        ]
    for source in dict.fromkeys(m.source for m in metrics if m.source in runs.columns):
        measured_by = pl.col(source).filter(ok).drop_nulls()
        aggs += [
            measured_by.unique().sort().str.join(", ").alias(source),
            measured_by.n_unique().alias(f"_{source}_count"),
        ]
    groups = runs.group_by(KEYS).agg(aggs).sort("dataset", "arch", "algorithm")

    notes = [[] for _ in range(groups.height)]
    for i, row in enumerate(groups.iter_rows(named=True)):
        if row["ok"] < row["runs"]:
            notes[i].append(
                f"{row['runs'] - row['ok']} of {row['runs']} runs not ok "
                f"({row['diverged']} diverged); statistics over the ok runs"
            )
    columns = {}
    for m in metrics:
        mean, sd, n = (groups[f"{m.column}_{s}"].to_list() for s in ("mean", "sd", "n"))
        mixed = (
            [count > 1 for count in groups[f"_{m.source}_count"].to_list()]
            if m.source in groups.columns
            else [False] * groups.height
        )
        values = groups[f"_{m.column}_values"].to_list()
        low, high = [None] * groups.height, [None] * groups.height
        for i in range(groups.height):
            if mixed[i] and mean[i] is not None:
                notes[i].append(f"{m.column} not summarised: measured by {groups[m.source][i]}")
                mean[i] = sd[i] = None
            elif n[i] == 1:
                sd[i] = math.nan  # one value has no spread: undefined, not missing
            if mean[i] is not None:
                (low[i], high[i]), kind = interval(m, values[i])
                if kind != m.interval:
                    notes[i].append(f"{m.column}: a value <= 0, so a {INTERVALS[kind]}")
        columns |= {
            f"{m.column}_mean": mean,
            f"{m.column}_sd": sd,
            f"{m.column}_ci_low": low,
            f"{m.column}_ci_high": high,
        }
    groups = groups.with_columns(
        [pl.Series(name, values, dtype=pl.Float64) for name, values in columns.items()]
        + [pl.Series("note", ["; ".join(n) for n in notes], dtype=pl.String)]
    )
    order = [*KEYS, "runs", "ok", "diverged", "seeds"]
    for m in metrics:
        order += [f"{m.column}_{s}" for s in ("n", "mean", "sd", "ci_low", "ci_high")]
        if m.source in groups.columns and m.source not in order:
            order.append(m.source)
    return groups.select(order + ["note"])


# -- against the BP twin ------------------------------------------------------------------
DELTA_COLUMNS = {
    "algorithm": pl.String,
    "arch": pl.String,
    "dataset": pl.String,
    "metric": pl.String,
    "unit": pl.String,
    "source": pl.String,
    "pairs": pl.Int64,
    "method_mean": pl.Float64,
    "bp_mean": pl.Float64,
    "delta": pl.Float64,
    "delta_pct": pl.Float64,
    "t_stat": pl.Float64,
    "p_value": pl.Float64,
    "note": pl.String,
}


def paired_delta(method: list[float], bp: list[float]) -> dict[str, float | str]:
    """Seed-matched values of a method and its BP twin -> difference of means, relative
    change in percent of the BP mean, and the paired t-test (NaN below 2 pairs)."""
    from scipy import stats

    n = len(method)
    if n == 0:
        return {
            "pairs": 0,
            "method_mean": math.nan,
            "bp_mean": math.nan,
            "delta": math.nan,
            "delta_pct": math.nan,
            "t_stat": math.nan,
            "p_value": math.nan,
            "note": "no seed-matched pair of ok runs",
        }
    method_mean, bp_mean = sum(method) / n, sum(bp) / n
    delta = method_mean - bp_mean
    note = ""
    if n < 2:
        t_stat = p_value = math.nan
        note = f"{n} seed-matched pair: no paired test (needs >= 2)"
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            result = stats.ttest_rel(method, bp)
        t_stat, p_value = float(result.statistic), float(result.pvalue)
        if not math.isfinite(t_stat):
            note = "paired differences are all equal: no paired test"
    return {
        "pairs": n,
        "method_mean": method_mean,
        "bp_mean": bp_mean,
        "delta": delta,
        "delta_pct": 100 * delta / bp_mean if bp_mean else math.nan,
        "t_stat": t_stat,
        "p_value": p_value,
        "note": note,
    }


def bp_deltas(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per (BP-free method, arch, dataset, metric): the method against bp."""
    ok = runs.filter(pl.col("status") == "ok")
    methods = ok.filter(pl.col("algorithm") != BASELINE)
    twins = ok.filter(pl.col("algorithm") == BASELINE).drop("algorithm")
    pairs = methods.join(twins, on=["arch", "dataset", "seed"], suffix="_bp")
    every = runs.filter(pl.col("algorithm") != BASELINE)
    rows = []
    for (algorithm, arch, dataset), group in every.group_by(KEYS, maintain_order=True):
        matched = pairs.filter(
            (pl.col("algorithm") == algorithm) & (pl.col("arch") == arch) & (pl.col("dataset") == dataset)
        )
        unpaired = group["seed"].n_unique() - matched.height
        if matched.height == 0:  # e.g. every run diverged: one row says so, not none
            diverged = int((group["status"] == "diverged").sum())
            row = paired_delta([], [])
            row["note"] += f" ({diverged} of {group.height} runs diverged)"
            rows.append(
                {
                    "algorithm": algorithm,
                    "arch": arch,
                    "dataset": dataset,
                    "metric": "test_accuracy",
                    "unit": METRIC["test_accuracy"].unit,
                    "source": None,
                }
                | row
            )
            continue
        for m in present(runs):
            a, b = matched[m.column].cast(pl.Float64), matched[f"{m.column}_bp"].cast(pl.Float64)
            keep = a.is_not_null() & b.is_not_null() & a.is_finite() & b.is_finite()
            a, b = a.filter(keep).to_list(), b.filter(keep).to_list()
            if not a and not (matched.height and matched[m.column].is_not_null().any()):
                continue  # not measured for this method
            source = None
            sources = set()
            if m.source in matched.columns:
                picked = matched.filter(keep)
                sources = set(picked[m.source].to_list()) | set(picked[f"{m.source}_bp"].to_list())
                source = ", ".join(sorted(str(s) for s in sources))
            if len(sources) > 1 and m.column == "min_val_loss":
                kinds = [", ".join(sorted(set(picked[c].to_list()))) for c in (m.source, f"{m.source}_bp")]
                source = " vs ".join(kinds)
                row = paired_delta([], [])
                row["pairs"], row["method_mean"], row["bp_mean"] = len(a), sum(a) / len(a), sum(b) / len(b)
                row["note"] = f"not comparable: {algorithm}'s validation loss is the {kinds[0]}; bp's the {kinds[1]}"
            elif len(sources) > 1:
                row = paired_delta([], [])
                row["note"] = f"not compared: measured by {source}"
            else:
                row = paired_delta(a, b)
            if unpaired:
                extra = f"{unpaired} seed(s) without an ok pair (diverged or missing)"
                row["note"] = "; ".join(filter(None, [row["note"], extra]))
            row["note"] = "; ".join(filter(None, [m.note, row["note"]]))
            rows.append(
                {
                    "algorithm": algorithm,
                    "arch": arch,
                    "dataset": dataset,
                    "metric": m.column,
                    "unit": m.unit,
                    "source": source,
                }
                | row
            )
    return pl.DataFrame(rows, schema=DELTA_COLUMNS).sort("dataset", "arch", "algorithm")


# -- against the paper --------------------------------------------------------------------
# our datasets that stand in for one of the paper's: a subset of it, compared with its rows
PAPER_STAND_INS = {"mnist-5k": "mnist"}


SUBSET_NOTES = {"mnist-5k": "5,000-image subset of MNIST: compare the changes vs BP, not accuracies"}


def _with_bp_change(frame: pl.DataFrame, column: str, name: str, points: bool) -> pl.DataFrame:
    """Add ``name``: each row's ``column`` against the bp row of its arch and dataset
    (difference for accuracy in points, relative change in percent otherwise)."""
    twin = frame.filter(pl.col("algorithm") == BASELINE).select("arch", "dataset", pl.col(column).alias("_bp"))
    change = pl.col(column) - pl.col("_bp") if points else 100 * (pl.col(column) / pl.col("_bp") - 1)
    return (
        frame.join(twin, on=["arch", "dataset"], how="left")
        .with_columns(pl.when(pl.col("algorithm") != BASELINE).then(change).alias(name))
        .drop("_bp")
    )


def paper_comparison(methods: pl.DataFrame, deltas: pl.DataFrame) -> pl.DataFrame:
    """Every row of the paper next to our numbers for the same (algorithm, arch, dataset)
    (empty where we did not run it), and each side's change against its BP twin."""
    paper = paper_results().select(
        *KEYS,
        pl.col("architecture").alias("paper_arch"),
        pl.col("test_accuracy_pct").alias("paper_accuracy_pct"),
        pl.col("test_accuracy_sd").alias("paper_accuracy_sd"),
        pl.col("train_time_s").alias("paper_time_s"),
        (pl.col("gpu_energy_wh") * 3600).alias("paper_energy_j"),
        pl.col("peak_memory_mib").alias("paper_memory_mib"),
        (pl.col("co2_g") / 1000).alias("paper_co2_kg"),
        pl.col("gpu").alias("paper_gpu"),
    )
    paper = _with_bp_change(paper, "paper_accuracy_pct", "paper_accuracy_vs_bp_pp", points=True)
    paper = _with_bp_change(paper, "paper_time_s", "paper_time_vs_bp_pct", points=False)
    paper = _with_bp_change(paper, "paper_energy_j", "paper_energy_vs_bp_pct", points=False)
    paper = paper.rename({"dataset": "paper_dataset"})

    def col(name: str, scale: float = 1.0) -> pl.Expr:
        if name in methods.columns:
            return (pl.col(name) * scale).alias(name)
        return pl.lit(None, dtype=pl.Float64).alias(name)

    ours = methods.select(
        *KEYS,
        pl.col("ok").alias("runs"),
        col("test_accuracy_mean", 100).alias("accuracy_pct"),
        col("test_accuracy_sd", 100).alias("accuracy_sd"),
        col("train_time_s_mean").alias("time_s"),
        col("energy_j_mean").alias("energy_j"),
        (pl.col("energy_source") if "energy_source" in methods.columns else pl.lit(None, dtype=pl.String)).alias(
            "energy_source"
        ),
        col("peak_memory_mb_mean").alias("memory_mb"),
        col("co2_kg_mean").alias("co2_kg"),
    )
    change = {
        "test_accuracy": ("accuracy_vs_bp_pp", "delta", 100),
        "train_time_s": ("time_vs_bp_pct", "delta_pct", 1),
        "energy_j": ("energy_vs_bp_pct", "delta_pct", 1),
    }
    for metric, (name, column, scale) in change.items():
        picked = deltas.filter(pl.col("metric") == metric).select(*KEYS, (pl.col(column) * scale).alias(name))
        ours = ours.join(picked, on=KEYS, how="left")
    # a subset of one of the paper's datasets (mnist-5k) is compared with the paper's rows for
    # the whole dataset: a row each, labelled, the changes against each BP twin the comparable part
    ours = ours.with_columns(pl.col("dataset").replace(PAPER_STAND_INS).alias("paper_dataset"))
    table = paper.join(ours, on=["algorithm", "arch", "paper_dataset"], how="left").with_columns(
        pl.col("runs").fill_null(0),
        pl.coalesce("dataset", "paper_dataset").alias("dataset"),
        pl.col("dataset").replace_strict(SUBSET_NOTES, default=None, return_dtype=pl.String).alias("note"),
    )
    order = [
        *KEYS,
        "paper_dataset",
        "note",
        "paper_arch",
        "runs",
        "accuracy_pct",
        "accuracy_sd",
        "paper_accuracy_pct",
        "paper_accuracy_sd",
        "accuracy_vs_bp_pp",
        "paper_accuracy_vs_bp_pp",
        "time_s",
        "paper_time_s",
        "time_vs_bp_pct",
        "paper_time_vs_bp_pct",
        "energy_j",
        "energy_source",
        "paper_energy_j",
        "energy_vs_bp_pct",
        "paper_energy_vs_bp_pct",
        "memory_mb",
        "paper_memory_mib",
        "co2_kg",
        "paper_co2_kg",
        "paper_gpu",
    ]
    return table.select(order)


def _values(frame: pl.DataFrame, *columns: str) -> list[float | None]:
    """Every value of ``columns`` in ``frame`` (those it has): what a unit is picked from."""
    return [v for c in columns if c in frame.columns for v in frame[c].cast(pl.Float64).to_list()]


def summary_display(runs: pl.DataFrame) -> pl.DataFrame:
    time_unit, time_scale = METRIC["train_time_s"].shown_in(_values(runs, "train_time_s"))
    energy_unit, energy_scale = METRIC["energy_j"].shown_in(_values(runs, "energy_j"))
    rows = []
    for r in runs.iter_rows(named=True):
        rows.append(
            {
                "algorithm": r["algorithm"],
                "arch": r["arch"],
                "dataset": r["dataset"],
                "seed": str(r["seed"]),
                "status": r["status"],
                "test accuracy (%)": num(r.get("test_accuracy"), 2, 100),
                # the same run's weights chosen by each selection rule (single-stage runs only)
                "test acc., last epoch (%)": num(r.get("test_accuracy_last"), 2, 100),
                "test acc., min. val. loss (%)": num(r.get("test_accuracy_min_val_loss"), 2, 100),
                "test acc., max. val. acc. (%)": num(r.get("test_accuracy_max_val_accuracy"), 2, 100),
                "epochs": str(r.get("epochs", "–")),
                f"time ({time_unit})": fixed(r.get("train_time_s"), 3, time_scale),
                f"energy ({energy_unit})": with_source(
                    fixed(r.get("energy_j"), 3, energy_scale), r.get("energy_source")
                ),
                "peak memory (MiB)": with_source(num(r.get("peak_memory_mb"), 0), r.get("peak_memory_kind")),
            }
        )
    return pl.DataFrame(rows)


def methods_display(methods: pl.DataFrame) -> pl.DataFrame:
    # (column, label, decimals: None for three significant digits, "mean" for the mean alone:
    # the grid intensity is the country's, the same for every run, not a measurement)
    shown = [
        ("test_accuracy", "test accuracy", 2),
        ("train_time_s", "time", None),
        ("epochs", "epochs", 1),
        ("min_val_loss", "min. val. loss", None),
        ("energy_j", "energy", None),
        ("co2_ours_kg", "CO2 of that energy", None),
        ("codecarbon_energy_j", "CodeCarbon's energy", None),
        ("co2_kg", "CO2, CodeCarbon's", None),
        ("grid_intensity_g_per_kwh", "grid intensity, CodeCarbon's", "mean"),
        ("peak_memory_mb", "peak memory", 0),
    ]
    shown = [item for item in shown if f"{item[0]}_mean" in methods.columns]
    units = {}
    for column, label, _ in shown:
        unit, scale = METRIC[column].shown_in(_values(methods, f"{column}_mean"))
        units[column] = (f"{label} ({unit})" if unit else label, scale)
    rows = []
    for r in methods.iter_rows(named=True):
        row = {k: r[k] for k in KEYS} | {"runs (ok/diverged)": f"{r['runs']} ({r['ok']}/{r['diverged']})"}
        for column, _, digits in shown:
            if f"{column}_mean" in r:
                header, scale = units[column]
                source = r.get(METRIC[column].source) if METRIC[column].source else None
                value = fixed(r[f"{column}_mean"], 3, scale) if digits == "mean" else estimate(r, column, digits, scale)
                row[header] = with_source(value, source)
        rows.append(row | {"note": r["note"]})
    return pl.DataFrame(rows)


def metric_title(metric: Metric, source: str | None = None, unit: str | None = None) -> str:
    """``energy (kJ, nvml-counter)``: the label, with unit (``unit``, else the column's), what
    it is and how it was measured."""
    detail = ", ".join(filter(None, [metric.unit if unit is None else unit, metric.detail, source]))
    return f"{metric.label} ({detail})" if detail else metric.label


# the deltas' readable tables keep to these; the CSV has every measured metric. Each CO2 right
# after the energy it was computed from.
HEADLINE = [
    "test_accuracy",
    "train_time_s",
    "epochs",
    "min_val_loss",
    "energy_j",
    "co2_ours_kg",
    "codecarbon_energy_j",
    "co2_kg",
    "peak_memory_mb",
]


def deltas_display(deltas: pl.DataFrame) -> pl.DataFrame:
    order = {name: i for i, name in enumerate(HEADLINE)}
    shown = (
        deltas.filter(pl.col("metric").is_in(HEADLINE))
        .with_columns(pl.col("metric").replace_strict(order, return_dtype=pl.Int64).alias("_order"))
        .sort("dataset", "arch", "algorithm", "_order")
    )
    units = {
        name: METRIC[name].shown_in(_values(shown.filter(pl.col("metric") == name), "method_mean", "bp_mean"))
        for name in HEADLINE
    }
    rows = []
    for r in shown.iter_rows(named=True):
        metric = METRIC[r["metric"]]
        unit, scale = units[r["metric"]]
        change = (
            f"{num(r['delta'], 2, 100, sign=True)} pp" if metric.percent else f"{num(r['delta_pct'], 1, sign=True)}%"
        )
        source = r["source"]
        if (r["note"] or "").startswith(("not comparable", "not compared")):
            change = r["note"].split(":")[0]
            source = None if r["note"].startswith("not comparable") else source  # the note says what each is
        rows.append(
            {
                "algorithm": r["algorithm"],
                "arch": r["arch"],
                "dataset": r["dataset"],
                "metric": metric_title(metric, source, unit),
                "pairs": str(r["pairs"]),
                "method": fixed(r["method_mean"], 4, scale),
                "bp": fixed(r["bp_mean"], 4, scale),
                "change vs bp": change,
                "paired t-test p": num(r["p_value"], 3),
                "note": r["note"],
            }
        )
    return pl.DataFrame(rows)


def paper_display(paper: pl.DataFrame) -> pl.DataFrame | str:
    """Ours next to the paper, row by row; one line where none of our runs matches a row."""
    if int(paper["runs"].sum()) == 0:
        return (
            f"None of these runs matches one of the paper's {paper.height} configurations (algorithm, "
            "architecture, dataset; bpfree/data/paper_results.csv): nothing to compare. "
            "config/paper.yaml runs the paper's grid; paper.csv holds the paper's numbers."
        )
    time_unit, time_scale = METRIC["train_time_s"].shown_in(_values(paper, "time_s", "paper_time_s"))
    energy_unit, energy_scale = METRIC["energy_j"].shown_in(_values(paper, "energy_j", "paper_energy_j"))
    rows = []
    for r in paper.iter_rows(named=True):
        rows.append(
            {
                "algorithm": r["algorithm"],
                "arch": r["arch"],
                "dataset": r["dataset"] + (f" (vs paper's {r['paper_dataset']})" if r["note"] else ""),
                "runs": str(r["runs"]),
                "accuracy % (ours)": num(r["accuracy_pct"]),
                "accuracy % (paper)": num(r["paper_accuracy_pct"]),
                "vs bp pp (ours)": num(r["accuracy_vs_bp_pp"], sign=True),
                "vs bp pp (paper)": num(r["paper_accuracy_vs_bp_pp"], sign=True),
                f"time {time_unit} (ours)": fixed(r["time_s"], 3, time_scale),
                f"time {time_unit} (paper)": fixed(r["paper_time_s"], 3, time_scale),
                "time vs bp % (ours)": num(r["time_vs_bp_pct"], 1, sign=True),
                "time vs bp % (paper)": num(r["paper_time_vs_bp_pct"], 1, sign=True),
                f"energy {energy_unit} (ours)": with_source(fixed(r["energy_j"], 3, energy_scale), r["energy_source"]),
                f"energy {energy_unit} (paper, GPU NVML)": fixed(r["paper_energy_j"], 3, energy_scale),
                "energy vs bp % (ours)": num(r["energy_vs_bp_pct"], 1, sign=True),
                "energy vs bp % (paper)": num(r["paper_energy_vs_bp_pct"], 1, sign=True),
            }
        )
    return pl.DataFrame(rows)


def co2_footnote(runs: pl.DataFrame) -> str | None:
    """Where the CO2 columns come from, with the grid intensity each country's runs had."""
    if "grid_intensity_g_per_kwh" not in runs.columns or not runs["grid_intensity_g_per_kwh"].is_not_null().any():
        return None
    country = "co2_country" if "co2_country" in runs.columns else None
    seen = (
        runs.filter(pl.col("grid_intensity_g_per_kwh").is_not_null())
        .group_by(country or pl.lit("?"))
        .agg(pl.col("grid_intensity_g_per_kwh").mean())
    )
    where = ", ".join(f"{c or 'country not recorded'} {fixed(g)} g/kWh" for c, g in sorted(seen.iter_rows()))
    return (
        "CO2 in g, each beside the energy it is of: ours is that energy × the grid intensity CodeCarbon "
        f"applied to the same run ({where}; its CO2 over its own energy: offline, the country's intensity "
        "from CodeCarbon's own tables); CodeCarbon's is its own whole-machine energy estimate × that intensity"
    )


def footnote(name: str, tables: Tables) -> str | None:
    """The lines below a readable table: which interval each metric has (``methods``), and
    where the CO2 comes from (``methods``, ``deltas``, ``cost``)."""
    lines = []
    if name == "methods":
        kinds: dict[str, list[str]] = {}
        for m in METRICS:
            if f"{m.column}_mean" in tables.methods.columns and m.column != "grid_intensity_g_per_kwh":
                kinds.setdefault(m.interval, []).append(m.label)
        parts = [f"{', '.join(labels)}: {INTERVALS[kind]}" for kind, labels in kinds.items()]
        lines.append("mean ± sd [95% interval] over the seeds' ok runs; " + "; ".join(parts) + " (docs/measurement.md)")
    if name in ("methods", "deltas", "cost"):
        lines.append(co2_footnote(tables.summary))
    if name == "claims":
        lines.append(VERDICT_RULE)
    return "\n\n".join(line for line in lines if line) or None


@dataclass
class Tables:
    """The study's tables: built by :func:`build_tables` from the runs, or read back from their
    CSV files by :func:`bpfree.report.figures.read_tables` to draw the figures."""

    summary: pl.DataFrame  # one row per run
    methods: pl.DataFrame
    deltas: pl.DataFrame
    paper: pl.DataFrame
    histories: pl.DataFrame
    cost: pl.DataFrame | None = None  # tuning next to the final runs (bpfree.report.cost)
    hardware: pl.DataFrame | None = None  # FLOPs, memory by part, time split per method (bpfree.engine.analysis)
    to_target: pl.DataFrame | None = None  # each run's cost to a target accuracy (bpfree.report.target)
    claims: pl.DataFrame | None = None  # each claim of the paper against our runs (bpfree.report.claims)


def with_co2(runs: pl.DataFrame) -> pl.DataFrame:
    """The runs with the grid intensity CodeCarbon used (``grid_intensity_g_per_kwh``: its CO2
    over its own energy, g per kWh; offline it is the intensity of ``co2_country`` from the
    tables CodeCarbon ships) and ``co2_ours_kg``: the run's measured (or estimated) energy
    ``energy_j`` at that intensity, the CO2 of the energy the tables show beside it."""
    if not {"co2_kg", "codecarbon_energy_j"} <= set(runs.columns):
        return runs
    kg_per_j = pl.when(pl.col("codecarbon_energy_j") > 0).then(pl.col("co2_kg") / pl.col("codecarbon_energy_j"))
    derived = [(kg_per_j * 3.6e9).alias("grid_intensity_g_per_kwh")]
    if "energy_j" in runs.columns:
        derived.append((pl.col("energy_j") * kg_per_j).alias("co2_ours_kg"))
    return runs.with_columns(derived)


def build_tables(
    metrics_paths: list[str | Path] | list[RunFiles],
    trials_paths: list[str | Path] = (),
    *,
    target_fraction: float = TARGET_FRACTION,
) -> Tables:
    """``trials_paths``: the studies' trial tables (``STUDY.trials.csv``) for the cost table."""

    given = runs_of(metrics_paths)  # read and checked once
    runs = with_co2(read_metrics(given))
    methods = method_stats(runs)
    deltas = bp_deltas(runs)
    tables = Tables(runs, methods, deltas, paper_comparison(methods, deltas), read_histories(given))
    tables.cost = cost_table(runs, read_trials(trials_paths))

    tables.hardware = hardware_table(runs, given)
    tables.to_target = to_target_table(runs, tables.histories, target_fraction)
    tables.claims = claims_table(runs)
    return tables


def write_tables(tables: Tables, out_dir: str | Path) -> list[Path]:
    """``NAME.csv`` (every number), ``NAME.md`` and ``NAME.tex`` (formatted) for summary,
    methods, deltas and paper; ``histories.csv``."""

    out_dir = Path(out_dir)
    written = []
    for name, shown in TABLES.items():
        frame = getattr(tables, name)
        if frame is None:
            continue
        readable = shown(frame) if frame.height else pl.DataFrame({"note": ["(no rows)"]})
        note = footnote(name, tables) if frame.height else None
        if isinstance(readable, str):  # a table with nothing to show says so in one line
            markdown, latex = readable + "\n", latex_text(readable) + "\n"
        else:
            markdown, latex = to_markdown(readable, note), to_latex(readable, note)
        for ext, text in (("csv", frame.write_csv()), ("md", markdown), ("tex", latex)):
            write_text_atomic(out_dir / f"{name}.{ext}", text)
            written.append(out_dir / f"{name}.{ext}")
    write_text_atomic(out_dir / HISTORIES, tables.histories.write_csv())
    return written + [out_dir / HISTORIES]


# Every table, in the order written: NAME -> what makes its readable NAME.md and NAME.tex
# (NAME.csv holds every number). The one registry of tables, as FIGURES is of figures:
# bpfree.core.outputs.TABLE_NAMES names the same tables for the workflow's outputs.
TABLES: dict[str, Callable[[pl.DataFrame], pl.DataFrame | str]] = {
    "summary": summary_display,
    "methods": methods_display,
    "deltas": deltas_display,
    "paper": paper_display,
    "cost": cost_display,
    "hardware": hardware_display,
    "to_target": to_target_display,
    "claims": claims_display,
}
# the tables every aggregate writes (the others are there when their inputs are)
REQUIRED_TABLES = ("summary", "methods", "deltas", "paper")
assert list(TABLES) == TABLE_NAMES, "bpfree.core.outputs.TABLE_NAMES names the workflow's table outputs"
