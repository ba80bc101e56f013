"""What a workflow job costs before and after its training: a benchmark that prints the figures.

    python scripts/fixed_costs.py [--repeats 3] [--json OUT]

Each repeat runs, in fresh processes (as the workflow's jobs are):

- ``start-up``: a Python process importing what ``bpfree train`` imports before it trains
  (bpfree's run engine, torch), and nothing else;
- ``first optimiser``: the first ``torch.optim`` optimiser a process builds (it imports
  torch._dynamo: every train job pays it once, inside its warm-up or its hardware analysis);
- ``data (digits)``: loading and splitting the default config's dataset onto the device;
- ``hardware analysis``, ``CodeCarbon start``, ``CodeCarbon stop``, ``idle baseline``: as the
  run's own metrics.json records them;
- ``train job``: a whole ``bpfree train`` of a 3-epoch MF run on digits (the default grid's
  smallest), against its own training time (``train_time_s``): the difference is the job's
  fixed cost;
- ``spec job``: a whole ``bpfree spec`` (the workflow runs one per run).

Every figure is the median over the repeats, wall-clock seconds on this machine; a busy machine
inflates them all (run it on a quiet one)."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = r"""
import time, json, sys
t0 = time.perf_counter()
import torch
import bpfree.engine.run  # what bpfree train imports before it trains
t1 = time.perf_counter()
from bpfree.data import load_splits
data = load_splits("digits", root="data", seed=1, device=torch.device("cpu"))
t2 = time.perf_counter()
torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
t3 = time.perf_counter()
print(json.dumps({"imports_s": t1 - t0, "data_s": t2 - t1, "first_optimiser_s": t3 - t2}))
"""


def wall(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return elapsed, proc


def one_repeat(work: Path) -> dict[str, float]:
    figures: dict[str, float] = {}
    figures["python start (interpreter only)"], _ = wall([sys.executable, "-c", "pass"])
    figures["start-up (interpreter + imports)"], probe = wall([sys.executable, "-c", PROBE])
    inside = json.loads(probe.stdout)
    figures["  of which imports (torch, bpfree's engine)"] = inside["imports_s"]
    figures["data (digits, onto the device)"] = inside["data_s"]
    figures["first optimiser (torch._dynamo import)"] = inside["first_optimiser_s"]
    run = work / f"run-{time.monotonic_ns()}"
    subject = ["--algorithm", "mf", "--dataset", "digits", "--seed", "1", "--arch", "mlp:64", "--device", "cpu"]
    figures["spec job (bpfree spec)"], _ = wall(
        [sys.executable, "-m", "bpfree", "spec", *subject, "--out", str(work / "spec.yaml")]
    )
    job, _ = wall([sys.executable, "-m", "bpfree", "train", *subject, "--max-epochs", "3", "--out", str(run)])
    metrics = json.loads((run / "metrics.json").read_text())
    measured = metrics.get("measurement") or {}
    figures["train job (bpfree train, 3 epochs of MF on digits)"] = job
    figures["  its training (train_time_s)"] = metrics["train_time_s"]
    figures["  its test pass (test_time_s)"] = metrics.get("test_time_s") or 0.0
    figures["  its hardware analysis (hardware_analysis_s)"] = metrics.get("hardware_analysis_s") or 0.0
    figures["  its CodeCarbon start"] = measured.get("codecarbon_start_s") or 0.0
    figures["  its CodeCarbon stop"] = measured.get("codecarbon_stop_s") or 0.0
    figures["  its idle baseline (settle + idle window)"] = (measured.get("idle_settle_s") or 0.0) + (
        measured.get("idle_measured_s") or 0.0
    )
    figures["  its fixed cost (job - training - test)"] = (
        job - metrics["train_time_s"] - (metrics.get("test_time_s") or 0.0)
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the medians here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    with tempfile.TemporaryDirectory() as tmp:
        repeats = [one_repeat(Path(tmp)) for _ in range(args.repeats)]
    medians = {k: statistics.median(r[k] for r in repeats) for k in repeats[0]}
    width = max(map(len, medians))
    print(f"fixed costs of a job, median of {args.repeats} (s, wall clock, this machine):")
    for name, value in medians.items():
        print(f"  {name:<{width}}  {value:7.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"repeats": args.repeats, "median_s": medians}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
