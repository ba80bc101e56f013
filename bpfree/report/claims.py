"""The paper's claims, each tested against our runs: the ``claims`` table and ``fig_claims``.

The claims are data (``claims.yaml`` beside this file): per claim, the paper's words, the
runs' column compared, a difference or a ratio against the method's BP twin, the paper's side,
what hardware a verdict needs, and the rows of the paper's grid it covers. Each row's paper
value comes from the paper's own table (``bpfree/data/paper_results.csv``).

Per row, our runs are paired by seed with their twin's (same arch, dataset and seed): a
difference is the mean of the per-seed differences, a ratio the geometric mean of the per-seed
ratios, each with its 95% t-interval over seeds (a ratio's on the log scale). :data:`VERDICT_RULE`
says how an interval becomes a verdict; it is written once, here, and is the table's caption.

For every accuracy claim the verdict is also given against each of the twin's selection rules
(``test_accuracy_by_selection``: its last epoch, its lowest validation loss, its highest
validation accuracy), from the same runs: how much a verdict depends on which epoch the twin
is tested with.

No torch here: the table is built from run records."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

import polars as pl

from bpfree.core.errors import BpfreeError
from bpfree.core.io import loads_yaml
from bpfree.core.outputs import BASELINE
from bpfree.core.paper import SAME_AS
from bpfree.report.paper_table import paper_results

CONFIDENCE = 0.95
# the verdict rule, written once (the claims table's caption and docs/results.md quote it)
VERDICT_RULE = (
    "Verdict: holds where the paired 95% interval over seeds (t; ratios on the log scale) lies on the "
    "paper's side of zero (of 1 for a ratio), contradicted where it lies on the other side, not shown "
    "where it spans zero (or where there is one pair: no interval). Energy and CO2 claims need NVML energy "
    "and time claims runs timed on a GPU (the paper's A100): where only a CPU estimate or CPU time exists "
    "the verdict is 'needs a GPU (NVML)' and the figure stands beside it, never as a verdict."
)
HOLDS, CONTRADICTED, NOT_SHOWN = "holds", "contradicted", "not shown"
NEEDS_GPU, NOT_RUN, NOT_IN_GRID = "needs a GPU (NVML)", "not run here", "not in the paper's grid"
VERDICTS = (HOLDS, CONTRADICTED, NOT_SHOWN, NEEDS_GPU, NOT_RUN, NOT_IN_GRID)
# the twin's selection rules an accuracy verdict is also given under (bpfree.core.record.SELECTIONS)
TWIN_SELECTIONS = ("last", "min_val_loss", "max_val_accuracy")
NVML_SOURCES = ("nvml-counter", "nvml-polling", "nvml-polling-instant")


@dataclass(frozen=True)
class Claim:
    """One claim of the paper (an entry of claims.yaml)."""

    id: str
    words: str
    metric: str
    kind: str  # difference | ratio
    direction: str  # greater | less | sign (the paper's own difference decides, per row)
    needs: str  # none | gpu-energy | gpu-time
    paper: str | None  # the paper_results.csv column of the paper's value
    rows: tuple[tuple[str, str, str], ...]

    @property
    def unit(self) -> str:
        if self.kind == "ratio":
            return "x"
        return "pp" if self.metric.startswith("test_accuracy") else ""


@cache
def claims() -> tuple[Claim, ...]:
    text = resources.files("bpfree.report").joinpath("claims.yaml").read_text(encoding="utf-8")
    data = loads_yaml(text, "claims.yaml") or {}
    out = []
    for i, c in enumerate(data.get("claims") or []):
        try:
            claim = Claim(
                c["id"],
                c["words"],
                c["metric"],
                c["kind"],
                c["direction"],
                c["needs"],
                c.get("paper"),
                tuple(tuple(map(str, r)) for r in c["rows"]),
            )
        except (KeyError, TypeError) as err:
            raise BpfreeError(f"claims.yaml claims[{i}] is malformed: {err}") from None
        if claim.kind not in ("difference", "ratio") or claim.direction not in ("greater", "less", "sign"):
            raise BpfreeError(f"claims.yaml claims[{i}] ({claim.id}): unknown kind or direction")
        out.append(claim)
    return tuple(out)


# -- the paper's side ---------------------------------------------------------------------------
def paper_value(claim: Claim, algorithm: str, arch: str, dataset: str, paper: pl.DataFrame) -> float | None:
    """The paper's own comparison for one row (pp for an accuracy, a ratio otherwise), or None."""
    if claim.paper is None:
        return None

    def value(alg: str) -> float | None:
        row = paper.filter((pl.col("algorithm") == alg) & (pl.col("arch") == arch) & (pl.col("dataset") == dataset))
        if row.height != 1 or row[claim.paper][0] is None:
            return None
        return float(row[claim.paper][0])

    method, twin = value(algorithm), value(BASELINE)
    if method is None or twin is None:
        return None
    if claim.kind == "difference":
        return method - twin
    return method / twin if twin else None


def paper_side(claim: Claim, value: float | None) -> str | None:
    """``greater`` or ``less``: the claim's own direction, or (``sign``) the paper's value's."""
    if claim.direction != "sign":
        return claim.direction
    if value is None:
        return None
    centre = 1.0 if claim.kind == "ratio" else 0.0
    return "greater" if value > centre else "less" if value < centre else None


# -- our side -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimate:
    pairs: int
    value: float | None  # mean difference (pp for accuracies) or geometric-mean ratio
    low: float | None
    high: float | None
    seeds: tuple[int, ...] = ()


def _t(n: int) -> float:
    from scipy import stats  # here: only the claims table needs scipy

    return float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1))


def paired_estimate(kind: str, pairs: list[tuple[int, float, float]], scale: float = 1.0) -> Estimate:
    """``pairs``: (seed, method, twin) with both finite. A difference is method - twin (times
    ``scale``); a ratio method / twin (both must be > 0), estimated on the log scale."""
    seeds = tuple(sorted(s for s, _, _ in pairs))
    if kind == "ratio":
        values = [math.log(a / b) for _, a, b in pairs if a > 0 and b > 0]
    else:
        values = [(a - b) * scale for _, a, b in pairs]
    n = len(values)
    if n == 0:
        return Estimate(0, None, None, None, seeds)
    mean = sum(values) / n
    low = high = None
    if n >= 2:
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
        half = _t(n) * sd / math.sqrt(n)
        low, high = mean - half, mean + half
    if kind == "ratio":
        exp = math.exp
        return Estimate(
            n, exp(mean), exp(low) if low is not None else None, exp(high) if high is not None else None, seeds
        )
    return Estimate(n, mean, low, high, seeds)


def verdict(kind: str, side: str | None, estimate: Estimate) -> str:
    """:data:`VERDICT_RULE`: where the interval lies against zero (1 for a ratio)."""
    if estimate.pairs == 0:
        return NOT_RUN
    if side is None or estimate.low is None or estimate.high is None:
        return NOT_SHOWN
    centre = 1.0 if kind == "ratio" else 0.0
    above, below = estimate.low > centre, estimate.high < centre
    if not above and not below:
        return NOT_SHOWN
    return HOLDS if (above and side == "greater") or (below and side == "less") else CONTRADICTED


COLUMNS = {
    "claim": pl.String,
    "words": pl.String,
    "algorithm": pl.String,
    "arch": pl.String,
    "dataset": pl.String,
    "paper_dataset": pl.String,
    "metric": pl.String,
    "kind": pl.String,
    "unit": pl.String,
    "paper_side": pl.String,
    "paper_value": pl.Float64,
    "pairs": pl.Int64,
    "seeds": pl.String,
    "value": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "source": pl.String,
    "verdict": pl.String,
    **{f"value_twin_{s}": pl.Float64 for s in TWIN_SELECTIONS},
    **{f"ci_low_twin_{s}": pl.Float64 for s in TWIN_SELECTIONS},
    **{f"ci_high_twin_{s}": pl.Float64 for s in TWIN_SELECTIONS},
    **{f"verdict_twin_{s}": pl.String for s in TWIN_SELECTIONS},
    "note": pl.String,
}


def _pairs(runs: pl.DataFrame, algorithm: str, arch: str, dataset: str, column: str, twin_column: str):
    ok = runs.filter((pl.col("status") == "ok") & (pl.col("arch") == arch) & (pl.col("dataset") == dataset))
    method = ok.filter(pl.col("algorithm") == algorithm)
    twin = ok.filter(pl.col("algorithm") == BASELINE)
    if column not in method.columns or twin_column not in twin.columns:
        return [], method, twin
    joined = method.select("seed", pl.col(column).cast(pl.Float64).alias("_a")).join(
        twin.select("seed", pl.col(twin_column).cast(pl.Float64).alias("_b")), on="seed"
    )
    pairs = [
        (int(s), float(a), float(b))
        for s, a, b in joined.iter_rows()
        if a is not None and b is not None and math.isfinite(a) and math.isfinite(b)
    ]
    return pairs, method, twin


def _sources(frame: pl.DataFrame, column: str) -> set[str]:
    return set(frame[column].drop_nulls().to_list()) if column in frame.columns else set()


def claims_table(runs: pl.DataFrame) -> pl.DataFrame:
    """One row per claim x row of the paper's grid (ours where we ran it, a stand-in dataset
    such as mnist-5k for mnist), and one per method we ran that no claim covers (not in the
    paper's grid). ``runs``: one row per run (bpfree.report.runs.read_metrics)."""
    paper = paper_results()
    ran = {(a, r, d) for a, r, d in runs.select("algorithm", "arch", "dataset").unique().iter_rows()}
    stand_ins = {paper_dataset: ours for ours, paper_dataset in SAME_AS.items()}
    covered: set[tuple[str, str, str]] = set()
    rows = []
    for claim in claims():
        for algorithm, arch, dataset in claim.rows:
            ours = dataset
            if (algorithm, arch, dataset) not in ran and (algorithm, arch, stand_ins.get(dataset)) in ran:
                ours = stand_ins[dataset]
            covered.add((algorithm, arch, ours))
            rows.append(_claim_row(claim, algorithm, arch, dataset, ours, runs, paper))
    for algorithm, arch, dataset in sorted(ran):
        if algorithm != BASELINE and (algorithm, arch, dataset) not in covered:
            rows.append(
                {
                    "claim": "-",
                    "words": "no claim of the paper covers this configuration",
                    "algorithm": algorithm,
                    "arch": arch,
                    "dataset": dataset,
                    "paper_dataset": None,
                    "verdict": NOT_IN_GRID,
                    "note": f"{dataset} {arch}: not a row of the paper's grid",
                }
            )
    return pl.DataFrame([{k: r.get(k) for k in COLUMNS} for r in rows], schema=COLUMNS)


def _claim_row(
    claim: Claim, algorithm: str, arch: str, dataset: str, ours: str, runs: pl.DataFrame, paper: pl.DataFrame
) -> dict[str, Any]:
    value_paper = paper_value(claim, algorithm, arch, dataset, paper)
    side = paper_side(claim, value_paper)
    scale = 100.0 if claim.unit == "pp" else 1.0
    pairs, method, twin = _pairs(runs, algorithm, arch, ours, claim.metric, claim.metric)
    estimate = paired_estimate(claim.kind, pairs, scale)
    notes = []
    if ours != dataset:
        notes.append(f"on {ours}, standing in for {dataset}")
    source = None
    result = verdict(claim.kind, side, estimate)
    if claim.needs == "gpu-energy":
        sources = _sources(method, "energy_source") | _sources(twin, "energy_source")
        source = ", ".join(sorted(sources)) or None
        if estimate.pairs and not sources <= set(NVML_SOURCES):
            result = NEEDS_GPU
            label = "CodeCarbon's estimate" if claim.metric == "co2_kg" else f"energy source {source}"
            notes.append(f"{label}: shown, not a verdict")
    elif claim.needs == "gpu-time":
        devices = _sources(method, "device") | _sources(twin, "device")
        source = ", ".join(sorted(devices)) or None
        if estimate.pairs and not all(d.startswith("cuda") for d in devices):
            result = NEEDS_GPU
            notes.append(f"timed on {source}, not a GPU: shown, not a verdict")
    if side is None and estimate.pairs:
        notes.append("the paper gives no direction for this row")
    own_side = paper_side(replace(claim, direction="sign"), value_paper)
    if claim.direction != "sign" and own_side is not None and own_side != claim.direction:
        notes.append(f"the paper's own row is on the other side of its claim ({fmt(value_paper, claim.unit)})")
    if claim.metric == "min_val_loss" and algorithm == "ff":
        notes.append("FF's validation loss is a goodness BCE, not a CE: not comparable")
    row: dict[str, Any] = {
        "claim": claim.id,
        "words": claim.words,
        "algorithm": algorithm,
        "arch": arch,
        "dataset": ours,
        "paper_dataset": dataset,
        "metric": claim.metric,
        "kind": claim.kind,
        "unit": claim.unit,
        "paper_side": side,
        "paper_value": value_paper,
        "pairs": estimate.pairs,
        "seeds": ",".join(map(str, estimate.seeds)),
        "value": estimate.value,
        "ci_low": estimate.low,
        "ci_high": estimate.high,
        "source": source,
        "verdict": result,
    }
    if claim.metric == "test_accuracy":  # against each of the twin's selection rules, same runs
        for rule in TWIN_SELECTIONS:
            by_rule, _, _ = _pairs(runs, algorithm, arch, ours, claim.metric, f"test_accuracy_{rule}")
            other = paired_estimate(claim.kind, by_rule, scale)
            row[f"value_twin_{rule}"] = other.value
            row[f"ci_low_twin_{rule}"] = other.low
            row[f"ci_high_twin_{rule}"] = other.high
            row[f"verdict_twin_{rule}"] = verdict(claim.kind, side, other) if other.pairs else None
    row["note"] = "; ".join(notes) or None
    return row


# -- shown ------------------------------------------------------------------------------------------
def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if unit == "pp":
        return f"{value:+.2f} pp"
    if unit == "x":
        return f"{value:.3g}x"
    return f"{value:+.4g}"


def interval(low: float | None, high: float | None, unit: str) -> str:
    if low is None or high is None:
        return "–"
    if unit == "x":
        return f"[{low:.3g}, {high:.3g}]"
    return f"[{low:+.2f}, {high:+.2f}]" if unit == "pp" else f"[{low:+.4g}, {high:+.4g}]"


def claims_display(table: pl.DataFrame) -> pl.DataFrame:
    """The claims table as read: one line per claim and row, the paper's value beside ours."""
    rows = []
    for r in table.iter_rows(named=True):
        unit = r["unit"] or ""
        shown = {
            "claim": r["claim"],
            "the paper says": r["words"],
            "method": r["algorithm"],
            "arch": r["arch"],
            "dataset": r["dataset"],
            "paper": fmt(r["paper_value"], unit),
            "ours": fmt(r["value"], unit),
            "95% interval": interval(r["ci_low"], r["ci_high"], unit),
            "pairs": str(r["pairs"] or 0),
            "verdict": r["verdict"],
        }
        by_rule = [r.get(f"verdict_twin_{s}") for s in TWIN_SELECTIONS]
        values = [fmt(r.get(f"value_twin_{s}"), unit) for s in TWIN_SELECTIONS]
        shown["ours, twin tested at last / min val. loss / max val. acc."] = " / ".join(values) if any(by_rule) else "–"
        shown["verdict, twin tested at last / min val. loss / max val. acc."] = (
            " / ".join(v or "–" for v in by_rule) if any(by_rule) else "–"
        )
        shown["note"] = r["note"] or ""
        rows.append(shown)
    return pl.DataFrame(rows)


# -- the figure -------------------------------------------------------------------------------------
VERDICT_COLOURS = {
    HOLDS: "#2ca02c",
    CONTRADICTED: "#d62728",
    NOT_SHOWN: "#ff7f0e",
    NEEDS_GPU: "#9e9e9e",
}
PANELS = {
    "pp": "test accuracy: method − BP twin (points)",
    "": "min. validation loss: method − BP twin",
    "x": "method against its BP twin (% change; ratio − 1)",
}


def _label(r: dict[str, Any]) -> str:
    return f"{r['claim']} · {r['algorithm']} {r['arch']} · {r['dataset']}"


def shown_value(value: float | None, unit: str) -> float | None:
    """What fig_claims plots: a difference as it is, a ratio as its % change (100 (r − 1))."""
    if value is None:
        return None
    return 100.0 * (value - 1.0) if unit == "x" else value


def claims_chart(table: pl.DataFrame):
    """Each claim's paired difference (or a ratio's % change) with its 95% interval (a rule),
    our estimate (a dot coloured by its verdict) and the paper's own value (a diamond), against
    zero, one panel per kind of quantity; the rows with nothing to plot (not run here, not in
    the paper's grid) are named in the subtitle."""
    import altair as alt  # here: the table is built without altair

    marks = []
    order = []
    for r in table.filter(pl.col("value").is_not_null()).iter_rows(named=True):
        unit, label = r["unit"] or "", _label(r)
        order.append(label)
        panel = PANELS[unit]
        marks.append(
            {
                "panel": panel,
                "label": label,
                "value": shown_value(r["value"], unit),
                "low": shown_value(r["ci_low"], unit),
                "high": shown_value(r["ci_high"], unit),
                "verdict": r["verdict"],
                "mark": OURS,
            }
        )
        if r["paper_value"] is not None:
            marks.append({"panel": panel, "label": label, "value": shown_value(r["paper_value"], unit), "mark": PAPERS})
    schema = {
        "panel": pl.String,
        "label": pl.String,
        "value": pl.Float64,
        "low": pl.Float64,
        "high": pl.Float64,
        "verdict": pl.String,
        "mark": pl.String,
    }
    data = pl.DataFrame(marks, schema=schema)
    subtitle = _wrap(VERDICT_RULE)
    unplotted = _unplotted(table)
    if unplotted:
        subtitle += _wrap("Nothing to plot: " + "; ".join(unplotted) + ".")
    title = alt.Title("The paper's claims, tested", subtitle=subtitle)
    if data.height == 0:
        return (
            alt.Chart(alt.Data(values=[{"message": "no run of the paper's grid: nothing to plot"}]))
            .mark_text(align="left")
            .encode(text="message:N")
            .properties(width=420, title=title)
        )
    x = alt.X("value:Q", title=None, scale=alt.Scale(zero=True))
    y = alt.Y("label:N", title=None, sort=order, axis=alt.Axis(labelLimit=420))
    present = [m for m in MARKS if m in set(data["mark"])]  # a legend entry only for a mark drawn
    shape = alt.Shape("mark:N", scale=alt.Scale(domain=present, range=[MARKS[m] for m in present]), title=None)
    verdicts = [v for v in VERDICT_COLOURS if v in set(data["verdict"].drop_nulls())]
    ours = alt.datum.mark == OURS
    layers = [
        alt.Chart().mark_rule(color="black", strokeDash=[4, 3]).encode(x=alt.datum(0)),
        alt.Chart()
        .transform_filter(ours)
        .mark_rule()
        .encode(x=alt.X("low:Q"), x2="high:Q", y=y, color=_verdict_colour(alt, verdicts)),
        alt.Chart()
        .transform_filter(ours)
        .mark_point(filled=True, size=70)
        .encode(
            x=x,
            y=y,
            color=_verdict_colour(alt, verdicts),
            shape=shape,
            tooltip=["label", "value", "low", "high", "verdict"],
        ),
        alt.Chart()
        .transform_filter(alt.datum.mark == PAPERS)
        .mark_point(filled=False, size=90, color="black")
        .encode(x=x, y=y, shape=shape, tooltip=["label", "value"]),
    ]
    return (
        alt.layer(*layers, data=data)
        .properties(width=420)
        .facet(
            row=alt.Row(
                "panel:N", title=None, sort=list(PANELS.values()), header=alt.Header(labelAngle=0, labelAlign="left")
            )
        )
        .resolve_scale(x="independent", y="independent")
        .properties(title=title)
    )


OURS, PAPERS = "ours (95% interval)", "the paper's value"
MARKS = {OURS: "circle", PAPERS: "diamond"}


def _unplotted(table: pl.DataFrame) -> list[str]:
    """One line per claim, method and verdict of the rows without a value: ``mf-accuracy · mf:
    not run here on mnist, cifar10, cifar100``."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for r in table.filter(pl.col("value").is_null()).iter_rows(named=True):
        where = f"{r['arch']} on {r['dataset']}"
        grouped.setdefault((r["claim"], r["algorithm"], r["verdict"]), []).append(where)
    return [
        f"{claim} · {algorithm}: {verdict} ({', '.join(where)})"
        for (claim, algorithm, verdict), where in grouped.items()
    ]


def _verdict_colour(alt, verdicts):
    return alt.Color(
        "verdict:N",
        scale=alt.Scale(domain=list(VERDICT_COLOURS), range=list(VERDICT_COLOURS.values())),
        legend=alt.Legend(title="verdict"),
    )


def _wrap(text: str, width: int = 110) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line]
