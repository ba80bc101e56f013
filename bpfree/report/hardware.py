"""The ``hardware`` table: per method, FLOPs per sample, achieved FLOP/s, energy per FLOP (where
energy was measured), memory by part and the fit's time split, from each run's metrics.json."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from bpfree.core.outputs import BASELINE, MEMORY_PARTS
from bpfree.core.record import read_record
from bpfree.report.formats import fixed, num, with_source
from bpfree.report.runs import KEYS, RunFiles

# -- where compute, memory and time go (bpfree.engine.analysis) -----------------------------------
HARDWARE_MEANS = [
    "train_flops_per_sample",
    "infer_flops_per_sample",
    "run_flops",
    "achieved_flops_per_s",
    "energy_per_flop_j",
    *(f"memory_{part}_mb" for part in MEMORY_PARTS),
    "memory_breakdown_total_mb",
    "peak_memory_mb",
    "train_time_s",
    "time_data_s",
    "time_compute_s",
    "time_eval_s",
    "time_checkpoint_s",
    "time_measurement_s",
    "time_other_s",
]


def _stage_flops(paths: Iterable[str | Path]) -> dict[tuple, str]:
    """Per (algorithm, arch, dataset): each stage's training FLOPs per sample of one epoch,
    with what it does once (caches) in brackets, from the first analysed run's record."""
    out: dict[tuple, str] = {}
    for item in paths:
        record = item.record if isinstance(item, RunFiles) else read_record(item)
        key = (record.algorithm, record.arch, record.dataset)
        if key in out or not record.flops_by_stage:
            continue
        parts = []
        for stage, entry in record.flops_by_stage.items():
            entry = entry if isinstance(entry, dict) else {}
            flops, once = entry.get("train_flops_per_sample"), entry.get("train_setup_flops_per_sample")
            flops = flops if isinstance(flops, (int, float)) else math.nan
            once = once if isinstance(once, (int, float)) else 0.0
            parts.append(f"{stage} {flops:.3g}" + (f" (+{once:.3g} once)" if once else ""))
        out[key] = "; ".join(parts)
    return out


def hardware_table(runs: pl.DataFrame, metrics_paths: Iterable[str | Path] = ()) -> pl.DataFrame:
    """One row per (algorithm, arch, dataset): means over its ok, analysed runs of FLOPs per
    sample, FLOPs of the run, achieved FLOP/s, energy per FLOP (where measured), memory by
    part next to the measured peak, and the time split; ``*_vs_bp``: ratio to the BP twin."""
    columns = [c for c in HARDWARE_MEANS if c in runs.columns]
    if "train_flops_per_sample" not in columns:
        return pl.DataFrame({k: [] for k in KEYS}, schema={k: pl.String for k in KEYS})
    analysed = runs.filter((pl.col("status") == "ok") & pl.col("train_flops_per_sample").is_not_null())
    firsts = [c for c in ("memory_breakdown_stage", "memory_breakdown_source", "peak_memory_kind") if c in runs.columns]
    sources = [c for c in ("energy_per_flop_source",) if c in runs.columns]
    table = (
        analysed.group_by(KEYS)
        .agg(
            pl.len().alias("runs"),
            *(pl.col(c).cast(pl.Float64).mean() for c in columns),
            *(pl.col(c).drop_nulls().first() for c in firsts),
            *(pl.col(c).drop_nulls().unique().sort().str.join(", ") for c in sources),
        )
        .sort("dataset", "arch", "algorithm")
    )
    twin = table.filter(pl.col("algorithm") == BASELINE).select(
        "arch",
        "dataset",
        *(
            pl.col(c).alias(f"_{c}")
            for c in ("train_flops_per_sample", "infer_flops_per_sample", "memory_breakdown_total_mb")
            if c in table.columns
        ),
    )
    table = table.join(twin, on=["arch", "dataset"], how="left").with_columns(
        (pl.col("train_flops_per_sample") / pl.col("_train_flops_per_sample")).alias("train_flops_vs_bp"),
        (pl.col("infer_flops_per_sample") / pl.col("_infer_flops_per_sample")).alias("infer_flops_vs_bp"),
        (pl.col("memory_breakdown_total_mb") / pl.col("_memory_breakdown_total_mb")).alias("memory_vs_bp"),
    )
    stages = _stage_flops(metrics_paths)
    table = table.with_columns(
        pl.Series(
            "train_flops_by_stage",
            [stages.get((a, r, d)) for a, r, d in table.select(KEYS).iter_rows()],
            dtype=pl.String,
        )
    )
    return table.select([c for c in table.columns if not c.startswith("_")])


def hardware_display(table: pl.DataFrame) -> pl.DataFrame:
    def sci(value) -> str:
        return "–" if value is None else f"{value:.3g}"

    def vs(row, column) -> str:
        value = row.get(column)
        return "" if row["algorithm"] == BASELINE or value is None else f" (×{value:.2f} bp)"

    def share(row, column) -> str:
        total = row.get("train_time_s")
        value = row.get(column)
        return "–" if not total or value is None else f"{100 * value / total:.0f}"

    rows = []
    for r in table.iter_rows(named=True):
        energy_per_flop = r.get("energy_per_flop_j")
        memory = " / ".join(fixed(r.get(f"memory_{part}_mb"), 3) for part in MEMORY_PARTS)
        rows.append(
            {
                "algorithm": r["algorithm"],
                "arch": r["arch"],
                "dataset": r["dataset"],
                "train FLOPs/sample": sci(r.get("train_flops_per_sample")) + vs(r, "train_flops_vs_bp"),
                "by stage (one epoch)": r.get("train_flops_by_stage") or "–",
                "inference FLOPs/sample": sci(r.get("infer_flops_per_sample")) + vs(r, "infer_flops_vs_bp"),
                "GFLOP/s": num((r.get("achieved_flops_per_s") or math.nan) / 1e9, 2),
                "pJ/FLOP": "not measured"
                if energy_per_flop is None
                else f"{energy_per_flop * 1e12:.3g} ({r.get('energy_per_flop_source')})",
                "memory MiB: weights / grads / optim. / activ. / cached / data": memory,
                "sum (MiB)": fixed(r.get("memory_breakdown_total_mb"), 3) + vs(r, "memory_vs_bp"),
                "measured peak (MiB)": with_source(num(r.get("peak_memory_mb"), 0), r.get("peak_memory_kind")),
                "time %: data / compute / eval / ckpt / meas. / other": " / ".join(
                    share(r, f"time_{part}_s")
                    for part in ("data", "compute", "eval", "checkpoint", "measurement", "other")
                ),
            }
        )
    return pl.DataFrame(rows)
