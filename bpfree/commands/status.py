"""``bpfree status``: where a workflow's grid stands, read from its results folder alone.

Read while the workflow runs, from any node that sees the shared filesystem: every file is
read, none is written or locked; no torch import, so quick on a grid of hundreds of runs. What
is read and how is :mod:`bpfree.progress.status` (the grid as the workflow expands it, each
study's journal, each run's folder); here: the arguments, ``bpfree plan``'s forecast for the
studies that measured nothing yet, the cost table's totals on a finished grid, and the display.

- per study: finished / planned trials (pruned and failed ones among them, and beside), the best
  value so far and its state: pending, running, waiting (a worker between trials, or none
  running), stale worker (a RUNNING trial whose worker is gone, as the next tuning worker
  decides: bpfree.progress.workers), damaged, done;
- per run: done (its metrics.json, with Snakemake's benchmark beside the run's own time),
  running (epoch n from its checkpoint), stopped, damaged, pending;
- the time and energy spent so far (each energy with its source) and an estimate of what
  remains from the measured seconds per epoch of finished work; where a study has measured
  nothing yet, ``bpfree plan``'s forecast (its worst-case epochs) instead;
- on a finished grid: done, with the cost table's totals (results/tables/cost.csv).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bpfree.commands.common import add_results_arguments, results_of
from bpfree.core.io import read_yaml
from bpfree.core.outputs import table_file
from bpfree.progress import status as progress
from bpfree.progress.status import Forecast, GridStatus
from bpfree.report.formats import energy_text, hours


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status",
        help="where a running (or finished) grid stands: studies, runs, time and energy so far, what remains",
        description=__doc__.split("\n\n")[0],
    )
    add_results_arguments(p, "for what is planned; without one, what the results folder holds")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    p.add_argument(
        "--no-forecast",
        action="store_true",
        help="skip bpfree plan's forecast for studies that measured nothing yet (it imports torch: seconds)",
    )
    p.set_defaults(func=run)


def grid_status(config_path: str | None, results: str | Path, forecast: bool = True) -> GridStatus:
    """The grid's status (bpfree.progress.status), with bpfree plan's forecast for the studies
    that measured nothing yet (``forecast``) and, on a finished grid, the cost table's totals."""
    grid = progress.grid_status(config_path, results)
    if grid.remaining.unmeasured_studies and forecast and grid.config is not None:
        # here, not at the top: keeps torch and polars out of the CLI's start-up
        from bpfree.workflow.forecast import plan_rows

        wanted = {
            (s.dataset, s.arch, s.algorithm) for s in grid.studies if s.study in grid.remaining.unmeasured_studies
        }
        grid.remaining.forecast = [
            Forecast(row["dataset"], str(row["arch"]), row["algorithm"], row["tuning_epochs"], row["runs_epochs"])
            for row in plan_rows(read_yaml(grid.config), results)
            if (row["dataset"], str(row["arch"]), row["algorithm"]) in wanted
        ]
    if grid.state == "done":
        from bpfree.report.cost import ALL  # here, not at the top: keeps polars out of the CLI's start-up

        grid.cost_table = progress.cost_totals(Path(table_file("cost", "csv", results=results)), ALL)
    return grid


# -- shown ----------------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def status_text(grid: GridStatus) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(grid.time))
    out = [f"bpfree status: {grid.results} (config: {grid.config or 'none; what is on disk'}) at {when}"]
    counts = grid.counts
    out.append(f"state: {grid.state}")
    out.append("")
    out.append("studies: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.studies.items())))
    rows = []
    for s in grid.studies:
        trials = f"{s.finished}/{'?' if s.planned is None else s.planned}"
        if s.planned == 0:
            trials = "no study"  # tuning off, or params: paper
        extra = [f"{s.pruned} pruned" if s.pruned else "", f"{s.failed} failed" if s.failed else ""]
        extra += [f"{s.running} running" if s.running else "", f"{s.stale} stale" if s.stale else ""]
        extra += [f"{s.queued} to run again" if s.queued else ""]
        bench = "–" if s.benchmark_s is None else hours(s.benchmark_s)
        rows.append(
            [
                s.study,
                s.state,
                trials + (f" ({', '.join(e for e in extra if e)})" if any(extra) else ""),
                "–" if s.best is None else f"{s.best:.4f}",
                hours(s.time_s) if s.time_s else "–",
                energy_text(s.energy_j, s.energy_source) if s.energy_j is not None else "–",
                bench,
            ]
        )
    out += _table(["study", "state", "trials", "best", "time", "energy", "job (benchmark)"], rows)
    out.append("")
    out.append("runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.runs.items())))
    rows = []
    for r in grid.runs:
        if r.state in ("running", "stopped"):
            cap = r.max_epochs_per_stage
            epochs = (
                f"epoch {r.epochs}"
                + (f" of at most {cap}" if cap else "")
                + (f" ({r.stage}{', per stage' if r.stage not in (None, 'train') else ''})" if r.stage else "")
            )
            if r.updated_s_ago is not None:
                epochs += f", {hours(r.updated_s_ago)} ago"
        else:
            epochs = str(r.epochs) if r.epochs else "–"
        bench = "–"
        if r.benchmark_s is not None:
            bench = hours(r.benchmark_s) + (
                f", {r.benchmark_max_rss_mb:.0f} MB" if r.benchmark_max_rss_mb is not None else ""
            )
        rows.append(
            [
                r.run,
                r.state,
                epochs,
                hours(r.time_s) if r.time_s else "–",
                energy_text(r.energy_j, r.energy_source) if r.energy_j is not None else "–",
                bench,
            ]
        )
    out += _table(["run", "state", "epochs", "time", "energy", "job (benchmark)"], rows)
    out.append("")
    problems = [(s.study, s.problem) for s in grid.studies if s.problem]
    problems += [(r.run, r.problem) for r in grid.runs if r.problem]
    if problems:
        out.append(f"damaged: {len(problems)}")
        out += [f"  {what}: {problem}" for what, problem in problems]
        out.append("")
    spent = grid.spent
    out.append(
        f"spent so far: {hours(spent.time_s)} (tuning {hours(spent.tuning_time_s)}, "
        f"runs {hours(spent.runs_time_s)}), energy {energy_text(spent.energy_j, spent.energy_source)}"
    )
    remaining = grid.remaining
    if grid.state == "done":
        cost = grid.cost_table
        if cost:
            out.append(
                f"done. cost table ({cost.file}): {hours(cost.total_time_s)} "
                f"(tuning {hours(cost.tuning_time_s)}, runs {hours(cost.runs_time_s)}), "
                f"energy {energy_text(cost.total_energy_j, cost.energy_source)}"
            )
        else:
            out.append("done. (no cost table yet: the aggregate rule writes results/tables/cost.csv)")
    else:
        line = f"remaining (estimate from measured s/epoch): about {hours(remaining.time_s)}"
        if remaining.unmeasured_studies:
            n = len(remaining.unmeasured_studies)
            line += f" for the {remaining.measured_studies} studies measured; {n} not measured yet"
            if remaining.forecast:
                epochs = sum(f.tuning_epochs + f.runs_epochs for f in remaining.forecast)
                line += f": at most {epochs:,} epochs more (bpfree plan's worst case)"
        out.append(line)
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> int:
    grid = grid_status(args.configfile, results_of(args.results, args.configfile), forecast=not args.no_forecast)
    if args.json:
        json.dump(asdict(grid), sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(status_text(grid))
    return 0
