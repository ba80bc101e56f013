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
source (``rapl+estimate``), so that an estimate is never read as a measurement. Tuning has
no CodeCarbon tracker per trial; its CO2 is the tuning energy times the CO2 per joule of
the same study's final runs (measured by CodeCarbon on the same machine), and says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import polars as pl

from bpfree.core.errors import BpfreeError

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
    "runs_co2_kg",
    "total_time_s",
    "total_energy_j",
    "tuning_share_time",
    "tuning_share_energy",
]
CO2_SCALED = "scaled: the runs' CO2 per joule"


# -- epoch budgets --------------------------------------------------------------------------
def stage_budgets(
    algorithm: str, arch: Any, dataset: str, params: Mapping[str, Any] | None, max_epochs: int
) -> list[int]:
    """The most epochs each stage of one trial or run may train: the stage's own limit
    capped by the early-stopping budget, as ``bpfree.engine.loop.fit`` caps it. The stages
    follow the architecture's depth, not its widths, so a tiny model of the same depth is
    built to ask for them (nothing is trained, no data is read)."""
    from bpfree.algorithms import build_algorithm
    from bpfree.core.registry import DATASETS
    from bpfree.engine import catalog
    from bpfree.models import ArchSpec, parse_arch

    catalog.load()
    arch = parse_arch(arch) if isinstance(arch, str) else arch
    small = ArchSpec(arch.kind, tuple(min(w, 4) for w in arch.widths))
    info = DATASETS.get(dataset).info
    algo = build_algorithm(algorithm, small, info, dict(params or {}), device="cpu")
    return [min(stage.max_epochs or max_epochs, max_epochs) for stage in algo.stages()]


def _candidates(space: Any) -> list[dict[str, Any]]:
    """Parameter sets that bound a trial's epochs from above: every integer at its high end
    (an epoch count is one), every combination of categorical choices (at most 64 of them),
    floats at their low end (a learning rate changes no budget)."""
    if space is None:
        return [{}]
    from optuna.distributions import CategoricalDistribution, IntDistribution

    base, choices = dict(space.fixed), {}
    for name, dist in space.distributions.items():
        if isinstance(dist, CategoricalDistribution):
            choices[name] = list(dist.choices)
        elif isinstance(dist, IntDistribution):
            base[name] = dist.high
        else:
            base[name] = dist.low
    combos = list(itertools.islice(itertools.product(*choices.values()), 64))
    return [{**base, **dict(zip(choices, combo, strict=True))} for combo in combos]


def worst_case_epochs(algorithm: str, arch: Any, dataset: str, space: Any, max_epochs: int) -> int:
    """The most epochs one trial (``space``: a tuning.SearchSpace) or one run (``space``
    None: the algorithm's defaults) may train, every stage counted."""
    return max(sum(stage_budgets(algorithm, arch, dataset, params, max_epochs)) for params in _candidates(space))


# -- the cost table ---------------------------------------------------------------------------
TRIAL_SCHEMA = {
    "study": pl.Utf8,
    "algorithm": pl.Utf8,
    "arch": pl.Utf8,
    "dataset": pl.Utf8,
    "pruner": pl.Utf8,
    "number": pl.Int64,
    "state": pl.Utf8,
    "value": pl.Float64,
    "epochs": pl.Float64,
    "time_s": pl.Float64,
    "train_time_s": pl.Float64,
    "energy_j": pl.Float64,
    "energy_source": pl.Utf8,
    "reason": pl.Utf8,
    "params": pl.Utf8,
}


def read_trials(paths: Iterable[str | Path]) -> pl.DataFrame:
    """Every study's trial table (``STUDY.trials.csv``) in one frame; a table that is not
    one fails in one line naming the file."""
    frames = []
    for path in paths:
        try:
            frame = pl.read_csv(path, schema_overrides=TRIAL_SCHEMA, infer_schema_length=0, glob=False)
        except (OSError, pl.exceptions.PolarsError) as err:
            raise BpfreeError(f"cannot read the trial table {path}: {str(err).splitlines()[0]}") from None
        missing = sorted(set(TRIAL_SCHEMA) - set(frame.columns))
        if missing:
            raise BpfreeError(f"{path} is not a trial table (bpfree tune writes them): no {', '.join(missing)}")
        frames.append(frame.select(list(TRIAL_SCHEMA)))
    if not frames:
        return pl.DataFrame(schema=TRIAL_SCHEMA)
    return pl.concat(frames)


def _sources(values: Iterable[str | None]) -> str | None:
    named = [v for v in dict.fromkeys(values) if v]
    return "+".join(sorted(named)) if named else None


def _share(part: float | None, whole: float | None) -> float | None:
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
    # tuning's CO2 at the runs' CO2 per joule (CodeCarbon ran around every run, not every trial)
    co2_per_j = _share(runs_co2, runs_energy)
    tuning_co2 = tuning_energy * co2_per_j if tuning_energy is not None and co2_per_j is not None else None
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
        "runs_co2_kg": runs_co2,
        "total_time_s": tuning_time + runs_time,
        "total_energy_j": total_energy,
        "tuning_share_time": _share(tuning_time, tuning_time + runs_time),
        "tuning_share_energy": _share(tuning_energy, total_energy) if runs_energy is not None else None,
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
    # the grid's CO2 is the studies' (each scaled at its own runs' rate)
    grid["tuning_co2_kg"] = _total(r["tuning_co2_kg"] for r in rows) if rows else None
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


# -- shown -------------------------------------------------------------------------------------
def _hours(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def _energy(joules: float | None, source: str | None) -> str:
    if joules is None:
        return "not measured"
    if joules >= 3.6e5:
        text = f"{joules / 3.6e6:.3f} kWh"
    else:
        text = f"{joules / 1e3:.2f} kJ" if joules >= 1e3 else f"{joules:.3g} J"
    return f"{text} ({source})" if source else text


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.0f}%"


def _co2(kg: float | None) -> str:
    return "–" if kg is None else f"{kg * 1e3:.2f} g"


def cost_display(cost: pl.DataFrame) -> pl.DataFrame:
    """The cost table for a reader: time in minutes or hours, energy in kJ or kWh with its
    source, tuning's share in percent."""
    rows = []
    for r in cost.to_dicts():
        rows.append(
            {
                "study": "whole grid" if r["algorithm"] == ALL else f"{r['algorithm']} {r['arch']} {r['dataset']}",
                "trials (c/p/f)": f"{r['tuning_trials_complete']}/{r['tuning_trials_pruned']}/"
                f"{r['tuning_trials_failed']}",
                "tuning epochs": str(r["tuning_epochs"]),
                "tuning time": _hours(r["tuning_time_s"]),
                "tuning energy": _energy(r["tuning_energy_j"], r["tuning_energy_source"]),
                "tuning CO2": _co2(r["tuning_co2_kg"]),
                "runs": str(r["runs"]),
                "run epochs": str(r["runs_epochs"]),
                "run time": _hours(r["runs_time_s"]),
                "run energy": _energy(r["runs_energy_j"], r["runs_energy_source"]),
                "run CO2": _co2(r["runs_co2_kg"]),
                "tuning share (time)": _percent(r["tuning_share_time"]),
                "tuning share (energy)": _percent(r["tuning_share_energy"]),
            }
        )
    return pl.DataFrame(rows)


def trials_csvs_of(paths: Iterable[str | Path]) -> list[Path]:
    """The trial tables that exist among ``paths`` (a study not tuned yet has none)."""
    return [Path(p) for p in paths if Path(p).is_file()]


# -- the figure ----------------------------------------------------------------------------------
PHASE_COLOURS = {"tuning": "#9467bd", "final runs": "#7f7f7f"}


def cost_long(cost: pl.DataFrame) -> pl.DataFrame:
    """One row per study, phase (tuning, final runs) and quantity (time in hours, energy in
    kWh), the whole grid's row left out: what fig_cost stacks."""
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
                    "quantity": "time (h)",
                    "value": r[f"{prefix}_time_s"] / 3600 if r[f"{prefix}_time_s"] is not None else None,
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
                    "value": r[f"{prefix}_energy_j"] / 3.6e6 if r[f"{prefix}_energy_j"] is not None else None,
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
    label = f"energy (kWh, {sources})" if sources else "energy (kWh, not measured)"
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
        f"tuning: {_percent(total.get('tuning_share_time'))} of the time",
        f"{_percent(total.get('tuning_share_energy'))} of the energy" if total.get("tuning_energy_j") else None,
    ]
    subtitle = (
        f"whole grid: {_hours(total.get('total_time_s'))}, "
        f"{_energy(total.get('total_energy_j'), None)}; " + ", ".join(s for s in shares if s)
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
            # sorted by the field itself ("time (h)" before "energy (kWh, ...)"): Vega-Lite
            # orders a row x column facet's headers by a sort array (or a sort field) as the
            # values first appear in the data, but its cells by the array, so that a header
            # could name the other column's quantity (issue 25)
            column=alt.Column("quantity:N", title=None, sort="descending"),
        )
        .resolve_scale(x="independent", y="independent")
        .properties(title=alt.Title(title, subtitle=subtitle))
    )


# -- the forecast (bpfree plan) -------------------------------------------------------------------
def plan_rows(config: Mapping[str, Any], results: str | Path = "results") -> list[dict[str, Any]]:
    """One row per planned study: its worst-case epochs in tuning (trials x a trial's epoch
    budget, every stage counted) and in its final runs (seeds x a run's budget), and the
    seconds per epoch measured by earlier runs (``RESULTS/runs/.../metrics.json``) and
    trials (``RESULTS/tuning/.../study.trials.csv``) of the same study, where there are any.
    ``config``: a workflow config as read from its file; it is checked as the Snakefile
    checks it, and the studies and runs come from the same planner."""
    from bpfree.core.paper import paper_row
    from bpfree.core.record import read_record
    from bpfree.tuning.study import search_space
    from bpfree.workflow.grid import arch_to_slug, check_config, expand_runs, expand_studies, study_params

    checked = check_config(dict(config))
    plain = checked.model_dump(mode="json")
    tuning = checked.tuning
    run_budget = checked.early_stopping.max_epochs
    trial_budget = min(tuning.max_epochs or run_budget, run_budget)
    runs = expand_runs(plain)
    results = Path(results)
    rows = []
    modes = study_params(checked)
    for study in expand_studies(plain):
        mode = modes.get(study)
        tuned = tuning.n_trials > 0 and mode == "tuned"  # a paper study has none
        n_trials = tuning.n_trials if tuned else 0
        space = search_space(study.algorithm, tuning.search_spaces) if tuned else None
        seeds = [r for r in runs if r.study == study]
        where = f"{study.dataset}/{arch_to_slug(study.arch)}/{study.algorithm}"
        per_trial = worst_case_epochs(study.algorithm, study.arch, study.dataset, space, trial_budget) if space else 0
        if mode == "paper":  # the paper's row: its own stage lengths and budget
            row = paper_row(study.algorithm, study.arch, study.dataset)
            per_run = sum(
                stage_budgets(study.algorithm, study.arch, study.dataset, row.params, row.early_stopping.max_epochs)
            )
        else:
            per_run = worst_case_epochs(study.algorithm, study.arch, study.dataset, space, run_budget)
        # earlier measurements of this study: seconds per epoch, and on what device
        run_rates, devices = [], set()
        for path in sorted((results / "runs" / where).glob("seed*/metrics.json")):
            try:
                record = read_record(path)
            except BpfreeError:
                continue  # another bpfree's record: no estimate from it
            if record.epochs > 0 and record.time_per_epoch_s > 0:
                run_rates.append(record.time_per_epoch_s)
                devices.add(record.device)
        trial_rate = None
        table = results / "tuning" / where / "study.trials.csv"
        if table.is_file():
            try:
                trials = read_trials([table])
            except BpfreeError:
                trials = None
            if trials is not None and trials.height:
                epochs = float(trials["epochs"].fill_null(0).sum())
                seconds = float(trials["time_s"].fill_null(0.0).sum())
                trial_rate = seconds / epochs if epochs > 0 else None
        run_rate = sum(run_rates) / len(run_rates) if run_rates else None
        rows.append(
            {
                "dataset": study.dataset,
                "arch": study.arch,
                "algorithm": study.algorithm,
                "trials": n_trials,
                "trial_epochs": per_trial,
                "tuning_epochs": n_trials * per_trial,
                "runs": len(seeds),
                "run_epochs": per_run,
                "runs_epochs": len(seeds) * per_run,
                "s_per_epoch_tuning": trial_rate if trial_rate is not None else run_rate,
                "s_per_epoch_runs": run_rate if run_rate is not None else trial_rate,
                "measured_on": ", ".join(sorted(devices)) or ("earlier trials" if trial_rate else None),
            }
        )
    return rows


def plan_text(rows: list[dict[str, Any]], name: str) -> str:
    """The forecast as a reader sees it: phase totals first, then one line per study."""

    def seconds(row: dict[str, Any], phase: str) -> float | None:
        rate = row[f"s_per_epoch_{phase}"]
        return None if rate is None else rate * row[f"{phase}_epochs"]

    def total(phase: str) -> tuple[int, float | None, int]:
        epochs = sum(r[f"{phase}_epochs"] for r in rows)
        timed = [seconds(r, phase) for r in rows if r[f"s_per_epoch_{phase}"] is not None]
        return epochs, (sum(timed) if timed else None), len(timed)

    studies = len(rows)
    n_runs = sum(r["runs"] for r in rows)
    trials = rows[0]["trials"] if rows else 0
    lines = [
        f"{name}: {studies} studies, {n_runs} final runs; worst case (every stage of every trial and run "
        "at its epoch budget, no early stop, no pruning; pruned and failed trials come on top of N complete):",
        f"{'phase':<8} {'what':<34} {'epochs (worst case)':>20} {'time (from measured s/epoch)':>30}",
    ]
    for phase, what in (("tuning", f"{studies} studies x {trials} trials"), ("runs", f"{n_runs} runs")):
        epochs, secs, known = total(phase)
        estimate = "no earlier results" if secs is None else f"{_hours(secs)} ({known} of {studies} studies measured)"
        lines.append(f"{phase:<8} {what:<34} {epochs:>20,} {estimate:>30}")
    t_epochs, t_secs, _ = total("tuning")
    r_epochs, r_secs, _ = total("runs")
    share = _percent(_share(t_epochs, t_epochs + r_epochs))
    lines.append(f"{'total':<8} {'tuning: ' + share + ' of the epochs':<34} {t_epochs + r_epochs:>20,}")
    lines.append("")
    lines.append(
        f"{'dataset':<14} {'arch':<24} {'algorithm':<10} {'trial ep':>8} {'tuning ep':>10} "
        f"{'run ep':>7} {'runs ep':>8} {'s/epoch':>8} {'est. time':>10}"
    )
    for r in rows:
        secs = [s for s in (seconds(r, "tuning"), seconds(r, "runs")) if s is not None]
        rate = r["s_per_epoch_runs"] if r["s_per_epoch_runs"] is not None else r["s_per_epoch_tuning"]
        lines.append(
            f"{r['dataset']:<14} {r['arch']:<24} {r['algorithm']:<10} {r['trial_epochs']:>8} "
            f"{r['tuning_epochs']:>10,} {r['run_epochs']:>7} {r['runs_epochs']:>8,} "
            f"{'–' if rate is None else f'{rate:.3g}':>8} {_hours(sum(secs)) if secs else '–':>10}"
        )
    devices = sorted({r["measured_on"] for r in rows if r["measured_on"]})
    if devices:
        lines.append(f"seconds per epoch measured on: {'; '.join(devices)} (another device runs at another speed)")
    return "\n".join(lines) + "\n"
