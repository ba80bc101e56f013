#!/usr/bin/env python3
"""Check the energy measurement on a real GPU.

Measures how often NVML's energy counter moves, runs a steady matmul load, then every
registered algorithm (bp, ff, mf, cafo-rand, cafo-dfa, whichever exist) for a short
MNIST-shaped run on synthetic data (no download), each through the same measured path as
``bpfree train`` (idle baseline, fit, test window), and prints per run: energy by NVML's
total-energy counter and by power polling side by side, idle power, net energy, allocator and
NVML device peaks, time; then one line on whether counter and polling agree. Before each idle
baseline it waits (at most --settle-s) for the board's power to stop falling after the
previous load. Runs that would end past --budget-s are skipped, and said so: with the defaults
the whole check takes about 3-4 minutes on one GPU (docs/gpu.md). On a machine without a CUDA
GPU it says so and exits with status 0; ``--device cpu`` runs the same path on the CPU (no GPU
figures: a check that the script works, in seconds).

    timeout 300 python scripts/gpu_check.py [--seconds 10] [--idle-seconds 5] [--settle-s 10]
        [--poll-interval 0.1] [--algorithms bp,mf] [--budget-s 270] [--out DIR]   (DIR: $OUT)

Imports torch, numpy, PyYAML and bpfree's own modules (and pynvml, CodeCarbon where present).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a bare checkout too

AGREEMENT = 0.05  # counter and polling within 5% of each other count as agreeing
RUN_OVERHEAD_S = 12.0  # per algorithm besides --seconds, --idle-seconds and settling: warm-up fit, CodeCarbon, test


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=10.0, help="target length of each measured run")
    p.add_argument("--idle-seconds", type=float, default=5.0, help="idle baseline before each run")
    p.add_argument(
        "--settle-s", type=float, default=10.0, help="at most this long, wait for the power to settle before idle"
    )
    p.add_argument(
        "--budget-s", type=float, default=270.0, help="skip runs that would end later than this (s since start)"
    )
    p.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (the script's path only, no GPU figures)")
    p.add_argument("--poll-interval", type=float, default=0.1, help="NVML power polling interval (s)")
    p.add_argument("--algorithms", help="comma-separated subset (default: every registered one)")
    p.add_argument("--train-size", type=int, default=50_000, help="synthetic training samples (MNIST: 50k)")
    p.add_argument("--eval-size", type=int, default=10_000, help="synthetic validation and test samples (each)")
    p.add_argument("--no-codecarbon", action="store_true", help="skip CodeCarbon")
    p.add_argument("--out", default=os.environ.get("OUT"), help="write gpu_check.json and CodeCarbon CSVs here")
    return p.parse_args(argv)


def synthetic_mnist(device, n_train: int, n_eval: int = 10_000, seed: int = 0):
    """MNIST-shaped splits (1x28x28, 10 classes, normalised scale) that can be learned: each
    class is a fixed random prototype plus noise."""
    import torch

    from bpfree.data import DataSplits, Split
    from bpfree.registry import DATASETS

    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randn(10, 1, 28, 28, generator=g)

    def split(n: int) -> Split:
        y = torch.randint(0, 10, (n,), generator=g)
        x = 0.7 * prototypes[y] + torch.randn(n, 1, 28, 28, generator=g)
        return Split(x.to(device), y.to(device))

    return DataSplits(DATASETS.get("mnist").info, split(n_train), split(n_eval), split(n_eval))


def row_from(name: str, arch: str, time_s: float, window, measurement, extra: dict) -> dict:
    """One line of the table from a window (``measurement``: anything with ``.idle``)."""
    gpu = window.of("gpu")
    counter, polled = gpu.by_source.get("nvml-counter"), gpu.by_source.get("nvml-polling")
    peaks = window.peaks_mb
    return {
        "run": name,
        "arch": arch,
        "time_s": time_s,
        "energy_source": gpu.source,
        "counter_j": counter,
        "polled_j": polled,
        "polled_vs_counter": (polled - counter) / counter if counter and polled is not None else None,
        "idle_power_w": gpu.idle_power_w,
        "net_j": gpu.net_joules,
        "cpu_j": window.of("cpu").joules,
        "cpu_source": window.of("cpu").source,
        "allocated_peak_mb": peaks.get("torch-allocated"),
        "reserved_peak_mb": peaks.get("torch-reserved"),
        "device_used_peak_mb": peaks.get("nvml-device-used"),
        "problems": list(window.problems) + (list(measurement.idle.problems) if measurement.idle else []),
        **extra,
    }


def matmul_reference(device, settings, seconds: float, settle_s: float) -> dict:
    """A steady load: the board's power is flat, so polling lag matters least here."""
    import torch

    from bpfree.measure import Meter

    size = 8192 if device.type == "cuda" else 256
    a = torch.randn(size, size, device=device)
    (a @ a).sum().item()  # cuBLAS warm
    with Meter.for_device(device, settings) as meter:
        meter.measure_idle(settings.idle_seconds, settle_max_s=settle_s)
        meter.begin_window("matmul")
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < seconds:
            for _ in range(10):
                a @ a
            sync(device)
            n += 10
        window = meter.end_window("matmul")
    flops = 2 * size**3 * n
    return row_from(
        "(matmul reference)",
        f"{size}^2",
        window.time_s,
        window,
        meter,
        {"epochs": None, "test_accuracy": None, "tflops": flops / window.time_s / 1e12},
    )


def check_algorithm(name: str, data, device, settings, args) -> dict:
    from bpfree.algorithms import build_algorithm
    from bpfree.run import measured_fit
    from bpfree.training import EarlyStopping, fit, seed_everything

    # warm-up (CUDA/cuBLAS/cuDNN set-up) with one epoch per stage, which also sizes the run
    seed_everything(0)
    warm = build_algorithm(name, None, data.info, epoch_params(name, 1), device=device, seed=0)
    t0 = time.perf_counter()
    fit(warm, data, EarlyStopping(max_epochs=1), seed=0)
    sync(device)
    one_epoch_s = time.perf_counter() - t0
    del warm
    epochs = max(1, min(100, round(args.seconds / max(one_epoch_s, 1e-3))))
    waited, settled = settle(device, settings, args.settle_s)  # the warm-up fit was a load

    seed_everything(1)
    algo = build_algorithm(name, None, data.info, epoch_params(name, epochs), device=device, seed=1)
    policy = EarlyStopping(max_epochs=epochs, patience=epochs + 1)  # run the budget out
    out = Path(args.out) / name if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    result, test_acc, measurement = measured_fit(algo, data, policy, seed=1, settings=settings, out=out)
    return row_from(
        name,
        str(algo.arch),
        result.train_time_s,
        result.measurement,
        measurement,
        {
            "epochs": result.epochs,
            "status": result.status,
            "test_accuracy": test_acc,
            "settle_s": waited,
            "settled": settled,
            "co2_kg": measurement.carbon.co2_kg,
            "codecarbon_error": measurement.carbon.error,
            "sources": measurement.sources,
        },
    )


def epoch_params(name: str, epochs: int) -> dict:
    """Stages with budgets of their own (CaFo's ``dfa_epochs``, MF's ``epochs_per_layer``)
    get the same epoch count as the policy, so every run fits the time target."""
    from bpfree.registry import ALGORITHMS

    fields = dataclasses.fields(ALGORITHMS.get(name).Params)
    return {f.name: epochs for f in fields if f.name.endswith("epochs") or f.name.endswith("epochs_per_layer")}


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def settle(device, settings, max_s: float) -> tuple[float, bool]:
    """Wait for the board's power to stop falling after a load (at most ``max_s``)."""
    from bpfree.measure import Meter

    with Meter.for_device(device, settings) as meter:
        return meter.settle(max_s)


def counter_update_period(device, seconds: float = 1.0) -> dict:
    """How often NVML's total-energy counter moves: read it back to back for ``seconds``
    (the meter trusts no window shorter than its assumed period)."""
    from bpfree.measure.energy import NVML_COUNTER_PERIOD_S
    from bpfree.measure.nvml import open_gpu

    out = {"assumed_s": NVML_COUNTER_PERIOD_S, "measured_s": None, "changes": 0, "error": None}
    gpu, why = open_gpu(device)
    if gpu is None:
        out["error"] = why
        return out
    try:
        read = lambda: gpu.nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle)  # noqa: E731
        last, changes = read(), []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            value = read()
            if value != last:
                changes.append(time.perf_counter())
                last = value
        out["changes"] = len(changes)
        if len(changes) >= 2:
            out["measured_s"] = (changes[-1] - changes[0]) / (len(changes) - 1)
    except Exception as err:  # noqa: BLE001  (no counter on this board: said, not raised)
        out["error"] = f"{type(err).__name__}: {err}"
    finally:
        gpu.close()
    return out


def fmt(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'run':<20}{'epochs':>7}{'time s':>8}{'counter J':>11}{'polled J':>10}{'diff':>8}"
        f"{'idle W':>8}{'net J':>10}{'alloc MB':>10}{'dev MB':>9}{'test acc':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['run']:<20} ERROR {r['error']}")
            continue
        print(
            f"{r['run']:<20}{fmt(r.get('epochs'), 'd'):>7}{fmt(r['time_s'], '.1f'):>8}"
            f"{fmt(r['counter_j'], '.1f'):>11}{fmt(r['polled_j'], '.1f'):>10}"
            f"{fmt(r['polled_vs_counter'], '+.1%'):>8}{fmt(r['idle_power_w'], '.1f'):>8}"
            f"{fmt(r['net_j'], '.1f'):>10}{fmt(r['allocated_peak_mb'], '.0f'):>10}"
            f"{fmt(r['device_used_peak_mb'], '.0f'):>9}{fmt(r.get('test_accuracy'), '.4f'):>9}"
        )
        for problem in r["problems"]:
            print(f"{'':<20}  problem: {problem}")


def verdict(rows: list[dict], counter_note: str | None) -> str:
    stuck = [r for r in rows if "error" not in r and any("nvml-counter: read 0 J" in p for p in r["problems"])]
    if stuck:
        return (
            f"verdict: counter and polling DISAGREE: the counter read 0 J over {stuck[0]['run']} while polling "
            f"read {fmt(stuck[0]['polled_j'], '.1f')} J ({len(stuck)} run(s)); polling was used"
        )
    compared = [r for r in rows if "error" not in r and r["polled_vs_counter"] is not None]
    if not compared:
        why = counter_note or "no run had both a counter and a polled figure"
        return f"verdict: no counter-vs-polling comparison possible ({why}); polling is the only source"
    worst = max(compared, key=lambda r: abs(r["polled_vs_counter"]))
    diff = worst["polled_vs_counter"]
    if abs(diff) <= AGREEMENT:
        return (
            f"verdict: counter and polling AGREE on all {len(compared)} runs, within {abs(diff):.1%} "
            f"(threshold {AGREEMENT:.0%}; worst: {worst['run']})"
        )
    return (
        f"verdict: counter and polling DISAGREE: polling is off by {diff:+.1%} on {worst['run']} "
        f"(threshold {AGREEMENT:.0%}); the counter is the reference (polling sees NVML's averaged "
        f"power at intervals, and misses what falls between)"
    )


def main(argv=None) -> int:
    started = time.perf_counter()
    args = parse_args(argv)
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible here (torch.cuda.is_available() is False); nothing to check.")
        return 0

    import bpfree.algorithms  # noqa: F401  (registers every algorithm)
    from bpfree.measure import MeasurementSettings, Meter, hardware_metadata
    from bpfree.registry import ALGORITHMS

    if device.type != "cuda":
        print(f"gpu_check on {device}: the script's path only, no GPU figures (CPU estimate, no NVML)")
    settings = MeasurementSettings(
        idle_seconds=args.idle_seconds, poll_interval_s=args.poll_interval, codecarbon=not args.no_codecarbon
    )
    hardware = hardware_metadata(device)
    with Meter.for_device(device, settings) as probe:
        sources = probe.describe()
    print(
        f"gpu_check on {hardware['gpu_model']} (driver {hardware['gpu_driver']}, CUDA {hardware['cuda']}, "
        f"torch {hardware['torch']}), host {hardware['host']}, CPU {hardware['cpu_model']}"
    )
    print(
        f"GPU energy sources: {', '.join(sources['energy_counters'].get('gpu', {})) or 'none'}; "
        f"CPU: {', '.join(sources['energy_counters']['cpu'])}; notes: {sources['energy_notes'] or 'none'}"
    )
    period = counter_update_period(device) if device.type == "cuda" else None
    if period is not None:
        measured = period["measured_s"]
        print(
            f"NVML energy counter: moved {period['changes']} times in 1 s, every "
            f"{fmt(1e3 * measured if measured else None, '.0f')} ms (the meter assumes {1e3 * period['assumed_s']:.0f} ms)"
            + (f"; {period['error']}" if period["error"] else "")
        )
    print(
        f"poll interval {args.poll_interval} s, idle baseline {args.idle_seconds} s after up to {args.settle_s} s "
        f"of settling, target {args.seconds} s per run, budget {args.budget_s:.0f} s\n"
    )

    names = args.algorithms.split(",") if args.algorithms else ALGORITHMS.names()
    rows: list[dict] = []
    try:
        rows.append(matmul_reference(device, settings, args.seconds, args.settle_s))
    except Exception as err:
        traceback.print_exc()
        rows.append({"run": "(matmul reference)", "error": f"{type(err).__name__}: {err}"})
    data = synthetic_mnist(device, args.train_size, args.eval_size)
    per_run_s = args.seconds + args.idle_seconds + args.settle_s + RUN_OVERHEAD_S
    for name in names:
        elapsed = time.perf_counter() - started
        if elapsed + per_run_s > args.budget_s:
            print(
                f"... {name}: skipped, {elapsed:.0f} s + ~{per_run_s:.0f} s would pass --budget-s {args.budget_s:.0f}"
            )
            rows.append({"run": name, "error": f"skipped: over --budget-s {args.budget_s:.0f}"})
            continue
        print(f"... {name} ({elapsed:.0f} s in)", flush=True)
        try:
            rows.append(check_algorithm(name, data, device, settings, args))
        except Exception as err:  # one broken algorithm must not hide the others' numbers
            traceback.print_exc()
            rows.append({"run": name, "error": f"{type(err).__name__}: {err}"})
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print()
    print_table(rows)
    line = verdict(rows, sources["energy_notes"].get("gpu"))
    print()
    print(line)
    wall_s = time.perf_counter() - started
    print(f"gpu_check took {wall_s:.0f} s")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        report = {
            "hardware": hardware,
            "sources": sources,
            "settings": vars(args),
            "counter_update_period": period,
            "rows": rows,
            "verdict": line,
            "wall_s": wall_s,
        }
        (Path(args.out) / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
