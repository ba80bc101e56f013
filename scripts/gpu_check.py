#!/usr/bin/env python3
"""Check the energy measurement on a real GPU.

Measures how often NVML's energy counter moves (and keeps that period for every run below, so
that the counter is trusted on windows down to it, not down to an assumed 100 ms) and whether
the driver offers the instantaneous power field, runs a steady matmul load, then every
registered algorithm (bp, ff, mf, cafo-rand, cafo-dfa, whichever exist) for a short
MNIST-shaped run on synthetic data (no download), each through the same measured path as
``bpfree train`` (settle once, idle baseline, fit, test window) and inside the same precision
context (``--precision``, default fp32: TF32 off in cuBLAS and cuDNN; the flags are recorded).
Each run is sized from a steady epoch of every stage (a sizing fit of two epochs per stage,
the second timed: the first carries one-off work) to last ``--seconds``. Prints per run:
energy by NVML's total-energy counter, by the averaged power polled and by the instantaneous
power polled, side by side, idle power, net energy, allocator and NVML device peaks, time;
then one line on whether counter and polling agree, judged only on windows of 8 s or more
(NVML's polled power is a ~1 s average: shorter windows read low whatever the counter's
quality). Runs that would end past --budget-s are skipped, and said so: with the defaults the
whole check takes about 3 minutes on one GPU (docs/gpu.md). On a machine without a CUDA GPU
it says so and exits with status 0; ``--device cpu`` runs the same path on the CPU (no GPU
figures: a check that the script works).

    timeout 300 python3 scripts/gpu_check.py [--seconds 10] [--idle-seconds 5] [--settle-s 10]
        [--poll-interval 0.1] [--algorithms bp,mf] [--precision fp32] [--budget-s 270] [--out DIR]

What the GPU machine needs: torch (a CUDA build), numpy, PyYAML, tqdm and pydantic (bpfree's
run specification, bpfree/core/spec.py, imports it: without it every bpfree command stops at
import); nvidia-ml-py (module pynvml) for any GPU energy; CodeCarbon for CO2, optional. A lent
machine with its own PyTorch lacks pydantic and CodeCarbon: scripts/gpu_wheels.sh downloads
their wheels and scripts/gpu_first_run.sh installs them there and runs this script.
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
# counter and polling are compared only on windows at least this long: NVML's polled power is
# a ~1 s average on Hopper, so a shorter window misses much of its rise (modelled: -41% at
# 1 s, -4% at 10 s) whatever the counter's quality
MIN_COMPARE_S = 8.0
RUN_OVERHEAD_S = 15.0  # per algorithm besides --seconds, --idle-seconds and settling: sizing fit, CodeCarbon, test
RUN_SETTLE_S = 10.0  # the measured path (bpfree.engine.run.measured) settles up to this long before its idle baseline
MAX_EPOCHS = 1000  # per stage, however fast an epoch is


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
    p.add_argument(
        "--precision", default="fp32", help="precision context of every row, as bpfree train's (default fp32)"
    )
    p.add_argument("--out", default=os.environ.get("OUT"), help="write gpu_check.json and CodeCarbon CSVs here")
    return p.parse_args(argv)


def synthetic_mnist(device, n_train: int, n_eval: int = 10_000, seed: int = 0):
    """MNIST-shaped splits (1x28x28, 10 classes, normalised scale) that can be learned: each
    class is a fixed random prototype plus noise."""
    import torch

    from bpfree.core.registry import DATASETS
    from bpfree.data import DataSplits, Split

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
    instant = gpu.by_source.get("nvml-polling-instant")
    peaks = window.peaks_mb
    return {
        "run": name,
        "arch": arch,
        "time_s": time_s,
        "energy_source": gpu.source,
        "counter_j": counter,
        "polled_j": polled,
        "polled_vs_counter": (polled - counter) / counter if counter and polled is not None else None,
        "instant_j": instant,
        "instant_vs_counter": (instant - counter) / counter if counter and instant is not None else None,
        "long_enough": time_s >= MIN_COMPARE_S,
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


def steady_round_s(name: str, data, device) -> tuple[float, float]:
    """(seconds of one steady epoch of every stage, the sizing fit's whole time): a fit of two
    epochs per stage, each stage's second epoch timed. The first epoch of a fit carries one-off
    work (CUDA context, cuBLAS/cuDNN handles and plans, first kernel loads, caches), so sizing
    from it makes the measured run fall well short of its target."""
    from bpfree.algorithms import build_algorithm
    from bpfree.core.spec import EarlyStopping
    from bpfree.engine.loop import fit
    from bpfree.engine.setup import seed_everything

    seed_everything(0)
    warm = build_algorithm(name, None, data.info, epoch_params(name, 2), device=device, seed=0)
    t0 = time.perf_counter()
    result = fit(warm, data, EarlyStopping(max_epochs=2, patience=3), seed=0)
    sync(device)
    whole_s = time.perf_counter() - t0
    by_stage: dict[str, list[float]] = {}
    for record in result.history:
        by_stage.setdefault(record.stage, []).append(record.epoch_time_s)
    return sum(times[-1] for times in by_stage.values()), whole_s


def check_algorithm(name: str, data, device, settings, args) -> dict:
    from bpfree.algorithms import build_algorithm
    from bpfree.core.spec import EarlyStopping, RunSpec
    from bpfree.engine.run import measure_run
    from bpfree.engine.setup import seed_everything

    # sizing fit: also the warm-up (CUDA/cuBLAS/cuDNN set-up); the run then settles once, in
    # measure_run, before its idle baseline, as bpfree train does
    round_s, sizing_s = steady_round_s(name, data, device)
    epochs = max(1, min(MAX_EPOCHS, math.ceil(args.seconds / max(round_s, 1e-4))))

    seed_everything(1)
    algo = build_algorithm(name, None, data.info, epoch_params(name, epochs), device=device, seed=1)
    policy = EarlyStopping(max_epochs=epochs, patience=epochs + 1)  # run the budget out
    out = Path(args.out) / name if args.out else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    spec = RunSpec(
        algorithm=name,
        dataset=data.info.name,
        seed=1,
        arch=str(algo.arch),
        params=epoch_params(name, epochs),
        early_stopping=policy,
        measurement=settings,
    )
    trained, measurement = measure_run(spec, algo, data, out=out, checkpoint=None)  # idle, FIT, then TEST
    result, test_acc = trained.fit, measurement.test_accuracy
    return row_from(
        name,
        str(algo.arch),
        result.train_time_s,
        measurement.fit,
        measurement,
        {
            "epochs": result.epochs,
            "epochs_per_stage": epochs,
            "steady_round_s": round_s,
            "sizing_fit_s": sizing_s,
            "status": result.status,
            "test_accuracy": test_acc,
            "settle_s": measurement.sources.get("idle_settle_s"),
            "settled": measurement.sources.get("idle_settled"),
            "co2_kg": measurement.carbon.co2_kg,
            "codecarbon_error": measurement.carbon.error,
            "sources": measurement.sources,
        },
    )


def epoch_params(name: str, epochs: int) -> dict:
    """Stages with budgets of their own (CaFo's ``dfa_epochs``, MF's ``epochs_per_layer``)
    get the same epoch count as the policy, so every run fits the time target."""
    from bpfree.core.registry import ALGORITHMS

    fields = dataclasses.fields(ALGORITHMS.get(name).Params)
    return {f.name: epochs for f in fields if f.name.endswith("epochs") or f.name.endswith("epochs_per_layer")}


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def counter_update_period(device, seconds: float = 1.0) -> dict:
    """How often NVML's total-energy counter moves: read it back to back for ``seconds``
    (up to 20 moves). The period measured is kept for this process (bpfree.measure.energy.
    MEASURED_PERIODS), so every run below trusts the counter on windows down to it, not down
    to the assumed 100 ms; whether the driver offers the instantaneous power field, too."""
    from bpfree.measure import energy
    from bpfree.measure.nvml import open_gpu

    out = {"assumed_s": energy.NVML_COUNTER_PERIOD_S, "measured_s": None, "changes": 0, "error": None}
    gpu, why = open_gpu(device)
    if gpu is None:
        out["error"] = why
        return out
    try:
        read = lambda: gpu.nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle)  # noqa: E731
        out["measured_s"], out["changes"] = energy.measure_update_period(read, seconds, changes_wanted=20)
        if out["measured_s"] is not None and gpu.index is not None:
            energy.MEASURED_PERIODS[gpu.index] = out["measured_s"]
        instant, why_not = energy.nvml_instant_power_w(gpu.nvml, gpu.handle)
        out["instant_power_w"] = instant() if instant is not None else None
        out["instant_power_note"] = why_not
    except Exception as err:  # noqa: BLE001  (no counter on this board: said, not raised)
        out["error"] = f"{type(err).__name__}: {err}"
    finally:
        gpu.close()
    return out


def fmt(value, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'run':<20}{'epochs':>7}{'time s':>8}{'counter J':>11}{'polled J':>10}{'diff':>8}{'inst. J':>9}"
        f"{'diff':>8}{'idle W':>8}{'net J':>10}{'alloc MB':>10}{'dev MB':>9}{'test acc':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if "error" in r:
            print(f"{r['run']:<20} ERROR {r['error']}")
            continue
        short = "" if r.get("long_enough", True) else f"  (under {MIN_COMPARE_S:.0f} s: not compared)"
        print(
            f"{r['run']:<20}{fmt(r.get('epochs'), 'd'):>7}{fmt(r['time_s'], '.1f'):>8}"
            f"{fmt(r['counter_j'], '.1f'):>11}{fmt(r['polled_j'], '.1f'):>10}"
            f"{fmt(r['polled_vs_counter'], '+.1%'):>8}{fmt(r.get('instant_j'), '.1f'):>9}"
            f"{fmt(r.get('instant_vs_counter'), '+.1%'):>8}{fmt(r['idle_power_w'], '.1f'):>8}"
            f"{fmt(r['net_j'], '.1f'):>10}{fmt(r['allocated_peak_mb'], '.0f'):>10}"
            f"{fmt(r['device_used_peak_mb'], '.0f'):>9}{fmt(r.get('test_accuracy'), '.4f'):>9}{short}"
        )
        for problem in r["problems"]:
            print(f"{'':<20}  problem: {problem}")


def verdict(rows: list[dict], counter_note: str | None) -> str:
    """Counter against polling (the averaged power; the instantaneous one where the driver
    offers it), on the runs whose window is at least MIN_COMPARE_S long."""
    ok = [r for r in rows if "error" not in r]
    stuck = [r for r in ok if any("nvml-counter: read 0 J" in p for p in r["problems"])]
    if stuck:
        return (
            f"verdict: counter and polling DISAGREE: the counter read 0 J over {stuck[0]['run']} while polling "
            f"read {fmt(stuck[0]['polled_j'], '.1f')} J ({len(stuck)} run(s)); polling was used"
        )
    both = [r for r in ok if r["polled_vs_counter"] is not None]
    compared = [r for r in both if r.get("long_enough", True)]
    if not compared:
        if both:
            why = (
                f"{len(both)} run(s) had both figures, none {MIN_COMPARE_S:.0f} s or longer: polling's ~1 s average "
                "reads low over short windows whatever the counter's quality; raise --seconds"
            )
        else:
            why = counter_note or "no run had both a counter and a polled figure"
        return f"verdict: no counter-vs-polling comparison possible ({why})"
    skipped = len(both) - len(compared)
    also = f"; {skipped} shorter run(s) not compared" if skipped else ""
    worst = max(compared, key=lambda r: abs(r["polled_vs_counter"]))
    diff = worst["polled_vs_counter"]
    instant = [r for r in compared if r.get("instant_vs_counter") is not None]
    inst = ""
    if instant:
        worst_i = max(instant, key=lambda r: abs(r["instant_vs_counter"]))
        inst = f"; instantaneous power within {abs(worst_i['instant_vs_counter']):.1%} (worst: {worst_i['run']})"
    if abs(diff) <= AGREEMENT:
        return (
            f"verdict: counter and polling AGREE on all {len(compared)} runs of {MIN_COMPARE_S:.0f} s or more, "
            f"within {abs(diff):.1%} (threshold {AGREEMENT:.0%}; worst: {worst['run']}){inst}{also}"
        )
    return (
        f"verdict: counter and polling DISAGREE: polling is off by {diff:+.1%} on {worst['run']} "
        f"(threshold {AGREEMENT:.0%}; runs of {MIN_COMPARE_S:.0f} s or more); the counter is the reference "
        f"(polling sees NVML's averaged power at intervals, and misses what falls between){inst}{also}"
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
    from bpfree.core.errors import BpfreeError
    from bpfree.core.registry import ALGORITHMS
    from bpfree.engine.precision import check_precision, precision_context, precision_flags
    from bpfree.measure import MeasurementSettings, Meter, hardware_metadata

    try:
        check_precision(args.precision, device)
    except BpfreeError as err:
        print(f"gpu_check: error: {err}", file=sys.stderr)
        return 2

    if device.type != "cuda":
        print(f"gpu_check on {device}: the script's path only, no GPU figures (CPU estimate, no NVML)")
    settings = MeasurementSettings(
        idle_seconds=args.idle_seconds, poll_interval_s=args.poll_interval, codecarbon=not args.no_codecarbon
    )
    hardware = hardware_metadata(device)
    # first: the counter's update period, kept for the process, so that every meter below
    # (the runs' too) trusts the counter down to it
    period = counter_update_period(device) if device.type == "cuda" else None
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
    if period is not None:
        measured = period["measured_s"]
        print(
            f"NVML energy counter: moved {period['changes']} times, every "
            f"{fmt(1e3 * measured if measured else None, '.1f')} ms (used from now on; assumed where not "
            f"measured: {1e3 * period['assumed_s']:.0f} ms); instantaneous power field: "
            + (f"{period['instant_power_w']:.1f} W now" if period.get("instant_power_w") is not None else "")
            + (period.get("instant_power_note") or "")
            + (f"; {period['error']}" if period["error"] else "")
        )
    print(
        f"poll interval {args.poll_interval} s; matmul: idle baseline {args.idle_seconds} s after up to "
        f"{args.settle_s} s of settling; runs: bpfree train's path (settle up to {RUN_SETTLE_S:.0f} s once, idle "
        f"{args.idle_seconds} s), sized from a steady epoch to {args.seconds} s; counter vs polling compared on "
        f"windows of {MIN_COMPARE_S:.0f} s or more; budget {args.budget_s:.0f} s"
    )

    names = args.algorithms.split(",") if args.algorithms else ALGORITHMS.names()
    rows: list[dict] = []
    with precision_context(args.precision, device):  # as bpfree train's: fp32 turns TF32 off in cuBLAS and cuDNN
        flags = precision_flags(device)
        print(f"precision {args.precision}: {flags}\n")
        try:
            rows.append(matmul_reference(device, settings, args.seconds, args.settle_s))
        except Exception as err:
            traceback.print_exc()
            rows.append({"run": "(matmul reference)", "error": f"{type(err).__name__}: {err}"})
        data = synthetic_mnist(device, args.train_size, args.eval_size)
        per_run_s = args.seconds + args.idle_seconds + RUN_SETTLE_S + RUN_OVERHEAD_S
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
                rows.append(check_algorithm(name, data, device, settings, args) | {"precision_flags": flags})
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
            "precision_flags": flags,
            "min_compare_s": MIN_COMPARE_S,
            "counter_update_period": period,
            "rows": rows,
            "verdict": line,
            "wall_s": wall_s,
        }
        (Path(args.out) / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
