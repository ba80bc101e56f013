"""What the whole study costs, tuning included: epoch budgets, and the ``cost`` table.

The paper reports the energy of its final runs only; in its grid the tuning trials are most
of the compute. Here both are counted side by side.

- Epoch budgets: how many epochs one trial or run may train at most, every stage counted
  (MF trains one stage per layer, cafo-dfa a DFA stage before its predictors; each stage is
  capped by the early-stopping budget and by its own limit). ``bpfree plan`` multiplies
  them out before anything runs; hyperband takes a trial's budget as its largest resource.
- The ``cost`` table (``results/tables/cost.{csv,md,tex}``): per study (algorithm x dataset
  x architecture) and for the whole grid, tuning (trials complete/pruned/failed, epochs,
  time, energy, CO2) next to the final runs (runs, epochs, time, energy, CO2), and the share
  of time and energy that tuning takes. Tuning's records are each study's
  ``STUDY.trials.csv`` (written by ``bpfree tune``, one row per trial, every state).

Energies keep their source: a sum over trials or runs measured differently names every
source (``rapl+estimate``), so that an estimate is never read as a measurement. Each CO2
stands beside the energy it was computed from: tuning's and the runs' (``*_co2_ours_kg``) are
their energy times the grid intensity CodeCarbon applied to the same study's runs (its CO2
over its own energy: tuning has no CodeCarbon tracker per trial); the runs' CodeCarbon CO2
(``runs_co2_kg``) is of CodeCarbon's own whole-machine energy estimate
(``runs_codecarbon_energy_j``), beside it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl

from bpfree.core.errors import BpfreeError
from bpfree.core.outputs import TRIAL_COLUMNS
from bpfree.core.sources import combine_sources
from bpfree.report.formats import Unit, co2_text, energy_text, fixed, hours, percent, unit_for

KEYS = ["algorithm", "arch", "dataset"]


ALL = "(all)"  # the whole grid's row


STATES = ("complete", "pruned", "failed")


PHASES = ("tuning", "runs")


COST_COLUMNS = [
    *KEYS,
    "tuning_trials_complete",
    "tuning_trials_pruned",
    "tuning_trials_failed",
    "tuning_epochs",
    "tuning_time_s",
    "tuning_energy_j",
    "tuning_energy_source",
    "tuning_unmeasured_trials",
    "tuning_co2_kg",
    "tuning_co2_source",
    "runs",
    "runs_epochs",
    "runs_time_s",
    "runs_energy_j",
    "runs_energy_source",
    "runs_co2_ours_kg",
    "runs_codecarbon_energy_j",
    "runs_co2_kg",
    "total_time_s",
    "total_energy_j",
    "tuning_share_time",
    "tuning_share_energy",
]


CO2_SCALED = "its energy × CodeCarbon's grid intensity of the study's runs"


# -- the cost table ---------------------------------------------------------------------------
_TRIAL_NUMBERS = {"number": pl.Int64, "value": pl.Float64, "epochs": pl.Float64, "time_s": pl.Float64}
_TRIAL_NUMBERS |= {"train_time_s": pl.Float64, "energy_j": pl.Float64}
TRIAL_SCHEMA = {column: _TRIAL_NUMBERS.get(column, pl.Utf8) for column in TRIAL_COLUMNS}
OPTIONAL_TRIAL_COLUMNS = ("spec",)  # absent from the tables of an earlier bpfree: read as empty


def read_trials(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Every study's trial table (``STUDY.trials.csv``) in one frame; a table that is not
    one fails in one line naming the file."""
    frames = []
    for path in paths:
        try:
            frame = pl.read_csv(path, schema_overrides=TRIAL_SCHEMA, infer_schema_length=0, glob=False)
        except (OSError, pl.exceptions.PolarsError) as err:
            raise BpfreeError(f"cannot read the trial table {path}: {str(err).splitlines()[0]}") from None
        for column in OPTIONAL_TRIAL_COLUMNS:
            if column not in frame.columns:
                frame = frame.with_columns(pl.lit(None, dtype=TRIAL_SCHEMA[column]).alias(column))
        missing = sorted(set(TRIAL_SCHEMA) - set(frame.columns))
        if missing:
            raise BpfreeError(f"{path} is not a trial table (bpfree tune writes them): no {', '.join(missing)}")
        frames.append(frame.select(list(TRIAL_SCHEMA)))
    if not frames:
        return pl.DataFrame(schema=TRIAL_SCHEMA)
    return pl.concat(frames)


def _sources(values: Iterable[str | None]) -> str | None:
    return combine_sources(values)


def share(part: float | None, whole: float | None) -> float | None:
    if part is None or whole is None or whole <= 0:
        return None
    return part / whole


def _total(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _cost_row(keys: dict[str, str], trials: pl.DataFrame, runs: pl.DataFrame) -> dict[str, Any]:
    states = trials["state"].to_list() if trials.height else []
    t_energy = trials.filter(pl.col("energy_j").is_not_null()) if trials.height else trials
    tuning_energy = float(t_energy["energy_j"].sum()) if t_energy.height else None
    runs_energy = _total(runs["energy_j"].to_list()) if runs.height and "energy_j" in runs.columns else None
    runs_co2 = _total(runs["co2_kg"].to_list()) if runs.height and "co2_kg" in runs.columns else None
    cc_energy = None
    if runs.height and "codecarbon_energy_j" in runs.columns:
        cc_energy = _total(runs["codecarbon_energy_j"].to_list())
    # the grid intensity CodeCarbon applied (kg per J: its CO2 over its own energy, over the runs
    # that have both); CodeCarbon ran around every run, not every trial
    intensity = None
    if runs.height and {"co2_kg", "codecarbon_energy_j"} <= set(runs.columns):
        both = runs.filter(pl.col("co2_kg").is_not_null() & (pl.col("codecarbon_energy_j") > 0))
        intensity = share(_total(both["co2_kg"].to_list()), _total(both["codecarbon_energy_j"].to_list()))

    def co2_of(energy: float | None) -> float | None:
        return energy * intensity if energy is not None and intensity is not None else None

    tuning_co2 = co2_of(tuning_energy)
    tuning_time = float(trials["time_s"].fill_null(0.0).sum()) if trials.height else 0.0
    runs_time = float(runs["train_time_s"].fill_null(0.0).sum()) if runs.height else 0.0
    total_energy = _total([tuning_energy, runs_energy])
    return {
        **keys,
        "tuning_trials_complete": states.count("complete"),
        "tuning_trials_pruned": states.count("pruned"),
        "tuning_trials_failed": states.count("failed"),
        "tuning_epochs": int(trials["epochs"].fill_null(0).sum()) if trials.height else 0,
        "tuning_time_s": tuning_time,
        "tuning_energy_j": tuning_energy,
        "tuning_energy_source": _sources(trials["energy_source"].to_list()) if trials.height else None,
        "tuning_unmeasured_trials": trials.height - t_energy.height,
        "tuning_co2_kg": tuning_co2,
        "tuning_co2_source": CO2_SCALED if tuning_co2 is not None else None,
        "runs": runs.height,
        "runs_epochs": int(runs["epochs"].fill_null(0).sum()) if runs.height else 0,
        "runs_time_s": runs_time,
        "runs_energy_j": runs_energy,
        "runs_energy_source": _sources(runs["energy_source"].to_list())
        if runs.height and "energy_source" in runs.columns
        else None,
        "runs_co2_ours_kg": co2_of(runs_energy),
        "runs_codecarbon_energy_j": cc_energy,
        "runs_co2_kg": runs_co2,
        "total_time_s": tuning_time + runs_time,
        "total_energy_j": total_energy,
        "tuning_share_time": share(tuning_time, tuning_time + runs_time),
        "tuning_share_energy": share(tuning_energy, total_energy) if runs_energy is not None else None,
    }


def cost_table(runs: pl.DataFrame, trials: pl.DataFrame) -> pl.DataFrame:
    """One row per study (``KEYS``) that has runs or trials, then the whole grid's row
    (``(all)`` in every key). ``runs``: the summary table (one row per run, as
    ``aggregate.read_metrics`` reads it); ``trials``: :func:`read_trials`."""
    studies = set()
    for frame in (runs, trials):
        if frame.height:
            studies |= set(frame.select(KEYS).unique().iter_rows())
    rows = []
    for key in sorted(studies, key=lambda k: tuple(map(str, k))):
        keys = dict(zip(KEYS, key, strict=True))
        where = [pl.col(k) == v for k, v in keys.items()]
        rows.append(
            _cost_row(
                keys,
                trials.filter(*where) if trials.height else trials,
                runs.filter(*where) if runs.height else runs,
            )
        )
    grid = _cost_row(dict.fromkeys(KEYS, ALL), trials, runs)
    # the grid's CO2 of our energy is the studies' (each at its own runs' intensity)
    grid["tuning_co2_kg"] = _total(r["tuning_co2_kg"] for r in rows) if rows else None
    grid["runs_co2_ours_kg"] = _total(r["runs_co2_ours_kg"] for r in rows) if rows else None
    grid["tuning_co2_source"] = CO2_SCALED if grid["tuning_co2_kg"] is not None else None
    rows.append(grid)
    return pl.DataFrame(rows, schema=_schema(), orient="row") if rows else pl.DataFrame(schema=_schema())


def _schema() -> dict[str, Any]:
    text = {*KEYS, "tuning_energy_source", "tuning_co2_source", "runs_energy_source"}
    counts = {
        "tuning_trials_complete",
        "tuning_trials_pruned",
        "tuning_trials_failed",
        "tuning_epochs",
        "tuning_unmeasured_trials",
        "runs",
        "runs_epochs",
    }
    return {c: pl.Utf8 if c in text else pl.Int64 if c in counts else pl.Float64 for c in COST_COLUMNS}


def grid_total(cost: pl.DataFrame) -> dict[str, Any] | None:
    """The whole grid's row, or None."""
    rows = cost.filter(pl.col("algorithm") == ALL).to_dicts()
    return rows[0] if rows else None


def cost_display(cost: pl.DataFrame) -> pl.DataFrame:
    """The cost table for a reader: each time and energy in the unit it fills, energy with its
    source, CO2 in g beside the energy it is of, tuning's share in percent."""

    def codecarbon(r: dict[str, Any]) -> str:
        if r["runs_co2_kg"] is None:
            return "–"
        return f"{co2_text(r['runs_co2_kg'])} (of {energy_text(r['runs_codecarbon_energy_j'], None)})"

    rows = []
    for r in cost.to_dicts():
        rows.append(
            {
                "study": "whole grid" if r["algorithm"] == ALL else f"{r['algorithm']} {r['arch']} {r['dataset']}",
                "trials (c/p/f)": f"{r['tuning_trials_complete']}/{r['tuning_trials_pruned']}/"
                f"{r['tuning_trials_failed']}",
                "tuning epochs": str(r["tuning_epochs"]),
                "tuning time": hours(r["tuning_time_s"]),
                "tuning energy": energy_text(r["tuning_energy_j"], r["tuning_energy_source"]),
                "tuning CO2 (of that energy)": co2_text(r["tuning_co2_kg"]),
                "runs": str(r["runs"]),
                "run epochs": str(r["runs_epochs"]),
                "run time": hours(r["runs_time_s"]),
                "run energy": energy_text(r["runs_energy_j"], r["runs_energy_source"]),
                "run CO2 (of that energy)": co2_text(r["runs_co2_ours_kg"]),
                "run CO2, CodeCarbon's (of its energy)": codecarbon(r),
                "tuning share (time)": percent(r["tuning_share_time"]),
                "tuning share (energy)": percent(r["tuning_share_energy"]),
            }
        )
    return pl.DataFrame(rows)


def trials_csvs_of(paths: Iterable[str | Path]) -> list[Path]:
    """The trial tables that exist among ``paths`` (a study not tuned yet has none)."""
    return [Path(p) for p in paths if Path(p).is_file()]


# -- the figure ----------------------------------------------------------------------------------
PHASE_COLOURS = {"tuning": "#9467bd", "final runs": "#7f7f7f"}


def cost_units(cost: pl.DataFrame) -> tuple[Unit, Unit]:
    """fig_cost's time and energy units: those the largest study's bar (tuning and runs
    stacked) fills (:func:`bpfree.report.formats.unit_for`), the whole grid's row left out."""
    studies = cost.filter(pl.col("algorithm") != ALL)

    def totals(quantity: str) -> list[float]:
        pairs = zip(studies[f"tuning_{quantity}"].to_list(), studies[f"runs_{quantity}"].to_list(), strict=True)
        return [sum(v for v in pair if v is not None) for pair in pairs]

    return unit_for("time", totals("time_s")), unit_for("energy", totals("energy_j"))


def cost_long(cost: pl.DataFrame) -> pl.DataFrame:
    """One row per study, phase (tuning, final runs) and quantity (time and energy, each in
    the unit of :func:`cost_units`), the whole grid's row left out: what fig_cost stacks."""
    time_unit, energy_unit = cost_units(cost)
    rows = []
    for r in cost.filter(pl.col("algorithm") != ALL).to_dicts():
        label = f"{r['arch']} · {r['algorithm']}"
        for phase, prefix in (("tuning", "tuning"), ("final runs", "runs")):
            source = r[f"{prefix}_energy_source"]
            rows.append(
                {
                    "dataset": r["dataset"],
                    "algorithm": r["algorithm"],
                    "label": label,
                    "phase": phase,
                    "quantity": f"time ({time_unit.name})",
                    "value": time_unit.of(r[f"{prefix}_time_s"]),
                    "source": "wall clock",
                }
            )
            rows.append(
                {
                    "dataset": r["dataset"],
                    "algorithm": r["algorithm"],
                    "label": label,
                    "phase": phase,
                    "quantity": "energy",
                    "value": energy_unit.of(r[f"{prefix}_energy_j"]),
                    "source": source or "not measured",
                }
            )
    schema = {
        "dataset": pl.Utf8,
        "algorithm": pl.Utf8,
        "label": pl.Utf8,
        "phase": pl.Utf8,
        "quantity": pl.Utf8,
        "value": pl.Float64,
        "source": pl.Utf8,
    }
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    # one energy panel, titled with every source in it: an estimate never reads as measured
    sources = _sources(
        s for s in frame.filter(pl.col("quantity") == "energy")["source"].to_list() if s != "not measured"
    )
    label = f"energy ({energy_unit.name}, {sources or 'not measured'})"
    return frame.with_columns(
        pl.when(pl.col("quantity") == "energy").then(pl.lit(label)).otherwise("quantity").alias("quantity")
    )


def cost_chart(cost: pl.DataFrame | None, width: int = 360):
    """Stacked bars: tuning and final runs per study (each method next to its BP twin), time
    and energy side by side, one row of panels per dataset; the title gives the grid's total
    and tuning's share of it."""
    import altair as alt

    title = "What the study cost: tuning vs final runs"
    long = cost_long(cost) if cost is not None and cost.height else None
    if long is None or long.height == 0 or long["value"].drop_nulls().len() == 0:
        message = "no cost table (write it with bpfree aggregate)" if cost is None else "no runs or trials yet"
        return (
            alt.Chart(alt.Data(values=[{"message": message}]))
            .mark_text(fontSize=14)
            .encode(text="message:N")
            .properties(title=title, width=width, height=80)
        )
    total = grid_total(cost) or {}
    shares = [
        f"tuning: {percent(total.get('tuning_share_time'))} of the time",
        f"{percent(total.get('tuning_share_energy'))} of the energy" if total.get("tuning_energy_j") else None,
    ]
    # in the panels' units: a reader adds the bars up to the same numbers
    time_unit, energy_unit = cost_units(cost)
    grid = [
        f"{fixed(unit.of(total[column]))} {unit.name}"
        for unit, column in ((time_unit, "total_time_s"), (energy_unit, "total_energy_j"))
        if total.get(column) is not None
    ]
    subtitle = "; ".join(
        filter(None, [f"whole grid: {', '.join(grid)}" if grid else None, ", ".join(s for s in shares if s)])
    )
    # each method above its BP twin, as in the other figures
    long = long.with_columns((pl.col("algorithm") == "bp").alias("_bp")).sort(
        "dataset", "label", "_bp", maintain_order=True
    )
    order = list(dict.fromkeys(long["label"].to_list()))
    long = long.drop("_bp").filter(pl.col("value").is_not_null())
    chart = (
        alt.Chart(long)
        .mark_bar()
        .encode(
            y=alt.Y("label:N", sort=order, title=None, axis=alt.Axis(labelLimit=400)),
            x=alt.X("sum(value):Q", stack="zero", title=None),
            color=alt.Color(
                "phase:N",
                scale=alt.Scale(domain=list(PHASE_COLOURS), range=list(PHASE_COLOURS.values())),
                legend=alt.Legend(title=None),
            ),
            order=alt.Order("phase:N", sort="descending"),
            tooltip=["dataset:N", "label:N", "phase:N", "quantity:N", alt.Tooltip("value:Q", format=".4g"), "source:N"],
        )
        .properties(width=width)
    )
    return (
        chart.facet(
            row=alt.Row("dataset:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")),
            # sorted by the field itself ("time (...)" before "energy (...)"): Vega-Lite
            # orders a row x column facet's headers by a sort array (or a sort field) as the
            # values first appear in the data, but its cells by the array, so that a header
            # could name the other column's quantity (issue 25)
            column=alt.Column("quantity:N", title=None, sort="descending"),
        )
        .resolve_scale(x="independent", y="independent")
        .properties(title=alt.Title(title, subtitle=subtitle))
    )
