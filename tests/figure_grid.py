"""A small grid whose every number differs by dataset, method and seed, written through
``bpfree aggregate``'s own code (runs, histories, trial tables -> the tables on disk), for
the figure tests: what a figure shows is compared with the table it was drawn from."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from conftest import record

from bpfree.report.cost import read_trials
from bpfree.report.tables import build_tables, write_tables

ARCH = "mlp:1000,1000"  # the paper's MNIST/Fashion-MNIST MLP: the paper figure has rows to match
# (dataset, algorithm) -> (accuracy, seconds, joules): mnist cheap, fashion-mnist dear, so that a
# panel drawn under the other dataset's header, or a quantity under the other's, is far off
GRID = {
    ("mnist", "bp"): (0.97, 40.0, 900.0),
    ("mnist", "mf"): (0.95, 25.0, 500.0),
    ("mnist", "ff"): (0.985, 60.0, 1500.0),
    ("fashion-mnist", "bp"): (0.88, 400.0, 9000.0),
    ("fashion-mnist", "mf"): (0.84, 300.0, 7000.0),
}
# (dataset, algorithm) -> how far apart its seeds' accuracies and times are (else 0.001 and
# 10%): FF on MNIST near 100% with a spread whose t-interval would pass 100%, and whose time
# spreads so that its t-interval would reach below 0 s
SPREAD = {("mnist", "ff"): (0.006, 0.6)}
SEEDS = (1, 2)
EPOCHS = 4


def write_grid(root: Path, energy_source: str = "nvml-counter", tuned: bool = True):
    """Runs, histories and (``tuned``) one trial table per study under ``root``; returns the
    tables as ``bpfree figures`` reads them back from ``root/tables``."""
    from bpfree.report.figures import read_tables

    paths, trials = [], []
    for (dataset, algorithm), (accuracy, seconds, joules) in GRID.items():
        accuracy_step, time_step = SPREAD.get((dataset, algorithm), (0.001, 0.1))
        for seed in SEEDS:
            d = root / "runs" / dataset / algorithm / f"seed{seed}"
            d.mkdir(parents=True)
            time_s = seconds * (1 + seed * time_step)
            energy = joules * (1 + seed / 10)
            flops = 3.0e6 if algorithm == "bp" else 1.0e6 * (2 if algorithm == "ff" else 1)
            metrics = {
                "algorithm": algorithm,
                "arch": ARCH,
                "dataset": dataset,
                "seed": seed,
                "status": "ok",
                "test_accuracy": accuracy + seed * accuracy_step,
                "train_time_s": time_s,
                "epochs": EPOCHS,
                "energy_j": energy,
                "energy_source": energy_source,
                "energy_device": "gpu",
                "peak_memory_mb": 300.0 + time_s,
                "peak_memory_kind": "torch-allocated",
                "train_flops_per_sample": flops,
                "infer_flops_per_sample": flops / 3,
                "memory_breakdown_total_mb": 10.0,
                "memory_breakdown_stage": "train",
                "memory_weights_mb": 4.0 if algorithm == "bp" else 3.0,
                "memory_gradients_mb": 4.0 if algorithm == "bp" else 1.0,
                "memory_optimizer_mb": 8.0 if algorithm == "bp" else 2.0,
                "memory_activations_mb": 2.0 if dataset == "mnist" else 5.0,
                "memory_cached_features_mb": 0.0,
                "memory_data_mb": 1.0,
            }
            (d / "metrics.json").write_text(json.dumps(record(metrics)))
            rows = []
            for e in range(1, EPOCHS + 1):
                val_loss = (2.0 if dataset == "mnist" else 5.0) / e + seed / 100
                rows.append(
                    f"{e},train,1.0,{val_loss},{accuracy * e / EPOCHS},{time_s / EPOCHS},"
                    f"{energy / EPOCHS * (1 + e / 10)},{energy_source},1e6\n"
                )
            (d / "history.csv").write_text(
                "epoch,stage,train_loss,val_loss,val_accuracy,epoch_time_s,energy_j,energy_source,flops\n"
                + "".join(rows)
            )
            paths.append(d / "metrics.json")
        if tuned:  # three trials per study, each ten times a run's time and energy
            study = root / "tuning" / dataset / algorithm
            study.mkdir(parents=True)
            frame = pl.DataFrame(
                [
                    {
                        "study": f"{algorithm}-{dataset}",
                        "algorithm": algorithm,
                        "arch": ARCH,
                        "dataset": dataset,
                        "pruner": "median",
                        "number": n,
                        "state": "complete",
                        "value": 0.5,
                        "epochs": float(EPOCHS),
                        "time_s": 10 * seconds,
                        "train_time_s": 10 * seconds,
                        "energy_j": 10 * joules,
                        "energy_source": energy_source,
                        "reason": "",
                        "params": "{}",
                    }
                    for n in range(3)
                ],
                schema=read_trials([]).schema,
            )
            frame.write_csv(study / "study.trials.csv")
            trials.append(study / "study.trials.csv")
    write_tables(build_tables(paths, trials), root / "tables")
    return read_tables(root / "tables")
