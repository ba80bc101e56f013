"""Cost to a target accuracy: what each run spent until its validation accuracy first reached
a target, the standard of training efficiency (MLPerf Training's time-to-train), next to the
paper's cost at the early-stopping point.

The target of a run is ``fraction`` (default 0.99: bpfree.core.outputs.TARGET_FRACTION) of the best validation accuracy its BP
twin (bp on the same architecture and dataset, same seed) reached in any epoch. For each
BP-free run and each twin: the first epoch at which the validation accuracy of the model
the run delivers reaches it, and the cumulative training time, energy and FLOPs up to and
including that epoch (validation included, as in the run's totals), from ``history.csv``.

- Only epochs of a run's last stage count as reaching it: an earlier stage's validation
  accuracy is not the delivered model's (MF's first layer alone, CaFo-dfa's auxiliary head),
  but the cost of every earlier stage is included.
- Energy per epoch comes from the meter's per-epoch windows. An epoch shorter than its
  counter's update period, or one without a reading, cannot carry its own energy (a reading
  would be 0 J or one update's worth, whatever the work): it is flagged, and the cumulative
  energy of a run with such an epoch before its target is left empty rather than
  understated. An energy whose source is an estimate is shown as such.
- A run that never reaches its target says so (``reached`` false, its best accuracy noted).

No torch here: ``bpfree aggregate`` builds the table from the CSVs."""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from bpfree.core.outputs import BASELINE, TARGET_FRACTION
from bpfree.core.sources import combine_sources
from bpfree.report.formats import fixed, unit_for

# How often a counter's reading moves (seconds): an epoch shorter than this cannot be told
# apart from no work. As bpfree.measure.energy (NVML_COUNTER_PERIOD_S; EnergyCounter.
# update_period_s), kept here so that aggregating imports no torch; tests/test_target.py
# checks the two agree. NVML's polled power is itself an average over about that long.
COUNTER_PERIOD_S = {"nvml-counter": 0.1, "nvml-polling": 0.1, "rapl": 0.001, "estimate": 0.0}

KEYS = ["algorithm", "arch", "dataset", "seed"]
COLUMNS = {
    "algorithm": pl.String,
    "arch": pl.String,
    "dataset": pl.String,
    "seed": pl.Int64,
    "status": pl.String,
    "target_fraction": pl.Float64,
    "bp_best_val_accuracy": pl.Float64,
    "target_val_accuracy": pl.Float64,
    "reached": pl.Boolean,
    "epoch": pl.Int64,
    "stage": pl.String,
    "val_accuracy": pl.Float64,
    "epochs_run": pl.Int64,
    "best_val_accuracy": pl.Float64,
    "time_s": pl.Float64,
    "energy_j": pl.Float64,
    "energy_source": pl.String,
    "flops": pl.Float64,
    "flagged_epochs": pl.Int64,
    "time_vs_bp": pl.Float64,
    "energy_vs_bp": pl.Float64,
    "flops_vs_bp": pl.Float64,
    "note": pl.String,
}


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def flagged(
    epoch_time_s: float | None, energy_j: float | None, source: str | None, counter_period_s: float | None = None
) -> bool:
    """An epoch whose energy cannot be its own: no reading, or 0 J, or shorter than its
    counter's update period (``counter_period_s``: the period the run's meter measured for
    its NVML counter, where it did; else the source's usual one)."""
    if energy_j is None or source is None or (energy_j <= 0 and "estimate" not in source):
        return True
    periods = {**COUNTER_PERIOD_S, **({"nvml-counter": counter_period_s} if counter_period_s else {})}
    period = max(periods.get(s, 0.0) for s in source.split("+"))
    return epoch_time_s is not None and epoch_time_s < period


def cumulative(history: pl.DataFrame, counter_period_s: float | None = None) -> list[dict[str, Any]]:
    """One run's epochs (in order) with the cost so far: ``cum_time_s``, ``cum_energy_j``
    (None from the first flagged epoch on), ``cum_flops`` (None without a ``flops`` column),
    ``flagged`` per epoch, and ``final_stage`` (the epoch belongs to the run's last stage)."""
    rows = history.sort("epoch").to_dicts()
    last_stage = rows[-1]["stage"] if rows else None
    time_s, energy, flops, unresolved = 0.0, 0.0, 0.0, False
    out = []
    for row in rows:
        time_s += _float(row.get("epoch_time_s")) or 0.0
        joules, source = _float(row.get("energy_j")), row.get("energy_source")
        bad = flagged(_float(row.get("epoch_time_s")), joules, source, counter_period_s)
        unresolved = unresolved or bad
        energy += joules or 0.0
        f = _float(row.get("flops"))
        flops = None if f is None or flops is None else flops + f
        out.append(
            row
            | {
                "cum_time_s": time_s,
                "cum_energy_j": None if unresolved else energy,
                "cum_flops": flops,
                "flagged": bad,
                "final_stage": row["stage"] == last_stage,
            }
        )
    return out


def _sources(rows: list[dict[str, Any]]) -> str | None:
    return combine_sources(r.get("energy_source") for r in rows)


def _best(rows: list[dict[str, Any]]) -> float | None:
    values = [v for r in rows if (v := _float(r.get("val_accuracy"))) is not None]
    return max(values) if values else None


def to_target_table(runs: pl.DataFrame, histories: pl.DataFrame, fraction: float = TARGET_FRACTION) -> pl.DataFrame:
    """One row per run that has a history: its cost to the target (see the module's text)."""
    if histories.is_empty() or "val_accuracy" not in histories.columns:
        return pl.DataFrame(schema=COLUMNS)
    status = {tuple(r[k] for k in KEYS): r.get("status") for r in runs.select(*KEYS, "status").to_dicts()}
    periods = (
        {tuple(r[k] for k in KEYS): r["counter_period_s"] for r in runs.select(*KEYS, "counter_period_s").to_dicts()}
        if "counter_period_s" in runs.columns
        else {}
    )
    curves = {
        tuple(key): cumulative(group, periods.get(tuple(key)))
        for key, group in histories.group_by(KEYS, maintain_order=True)
    }
    rows = []
    for key in sorted(curves, key=lambda k: (k[2], k[1], k[0] != BASELINE, k[0], k[3])):
        algorithm, arch, dataset, seed = key
        curve = curves[key]
        final = [r for r in curve if r["final_stage"]]
        twin = curves.get((BASELINE, arch, dataset, seed))
        twin_best = _best(twin) if twin is not None and status.get((BASELINE, arch, dataset, seed)) == "ok" else None
        row: dict[str, Any] = {
            "algorithm": algorithm,
            "arch": arch,
            "dataset": dataset,
            "seed": seed,
            "status": status.get(key),
            "target_fraction": fraction,
            "bp_best_val_accuracy": twin_best,
            "target_val_accuracy": None if twin_best is None else fraction * twin_best,
            "reached": None,
            "epochs_run": len(curve),
            "best_val_accuracy": _best(final),
            "energy_source": _sources(curve),
            "note": "",
        }
        if twin_best is None:
            row["note"] = f"no ok BP twin with seed {seed}: no target"
            rows.append(row)
            continue
        target = row["target_val_accuracy"]
        hit = next((r for r in final if (_float(r.get("val_accuracy")) or -1.0) >= target), None)
        row["reached"] = hit is not None
        if hit is None:
            best = row["best_val_accuracy"]
            row["note"] = (
                f"never reached {100 * target:.2f}% in {len(curve)} epochs (best "
                f"{'–' if best is None else f'{100 * best:.2f}%'})"
            )
            rows.append(row)
            continue
        spent = [r for r in curve if r["epoch"] <= hit["epoch"]]
        short = sum(r["flagged"] for r in spent)
        row |= {
            "epoch": hit["epoch"],
            "stage": hit["stage"],
            "val_accuracy": _float(hit["val_accuracy"]),
            "time_s": hit["cum_time_s"],
            "energy_j": hit["cum_energy_j"],
            "energy_source": _sources(spent),
            "flops": hit["cum_flops"],
            "flagged_epochs": short,
        }
        if short:
            row["note"] = (
                f"{short} epoch(s) without their own energy reading (shorter than the counter's update "
                "period, or no reading): energy to target not given"
            )
        rows.append(row)
    table = pl.DataFrame(
        rows, schema={k: v for k, v in COLUMNS.items() if k not in ("time_vs_bp", "energy_vs_bp", "flops_vs_bp")}
    )
    twins = table.filter(pl.col("algorithm") == BASELINE).select(
        "arch", "dataset", "seed", *(pl.col(c).alias(f"_{c}") for c in ("time_s", "energy_j", "flops"))
    )
    table = table.join(twins, on=["arch", "dataset", "seed"], how="left")
    table = table.with_columns(
        (pl.col(c) / pl.col(f"_{c}")).alias(f"{c.removesuffix('_s').removesuffix('_j')}_vs_bp")
        for c in ("time_s", "energy_j", "flops")
    ).drop("_time_s", "_energy_j", "_flops")
    return table.select(list(COLUMNS))


def to_target_display(table: pl.DataFrame) -> pl.DataFrame:
    """The readable table: one row per run, costs with the twin's ratio beside them."""

    def num(value, digits=1, scale=1.0):
        return "–" if value is None else f"{value * scale:.{digits}f}"

    def sci(value):
        return "–" if value is None else f"{value:.3g}"

    # one unit per column, the one its largest value fills
    time_unit = unit_for("time", table["time_s"].to_list())
    energy_unit = unit_for("energy", table["energy_j"].to_list())

    def ratio(value):
        return "" if value is None else f" (×{value:.2f} bp)"

    rows = []
    for r in table.iter_rows(named=True):
        reached = {True: "yes", False: "no", None: "–"}[r["reached"]]
        energy = "–" if r["energy_j"] is None else fixed(energy_unit.of(r["energy_j"]))
        if r["energy_j"] is not None and r["energy_source"]:
            energy += f" ({r['energy_source']})"
        rows.append(
            {
                "algorithm": r["algorithm"],
                "arch": r["arch"],
                "dataset": r["dataset"],
                "seed": str(r["seed"]),
                "target val. acc. (%)": num(r["target_val_accuracy"], 2, 100),
                "reached": reached,
                "epoch": "–" if r["epoch"] is None else f"{r['epoch']} of {r['epochs_run']}",
                f"time ({time_unit.name})": ("–" if r["time_s"] is None else fixed(time_unit.of(r["time_s"])))
                + ("" if r["algorithm"] == BASELINE else ratio(r["time_vs_bp"])),
                f"energy ({energy_unit.name})": energy
                + ("" if r["algorithm"] == BASELINE else ratio(r["energy_vs_bp"])),
                "FLOPs": sci(r["flops"]) + ("" if r["algorithm"] == BASELINE else ratio(r["flops_vs_bp"])),
                "note": r["note"],
            }
        )
    return pl.DataFrame(rows)
