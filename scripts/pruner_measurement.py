"""Which pruner pays, with Optuna's meaning of n_trials (every finished trial counts): the same
study (algorithm, architecture, dataset, search space, trial count) tuned with each pruner and
without one, over several study seeds; per study its trials by state, epochs, time, energy (with
its source) and the best validation accuracy found. Prints a Markdown table and writes a CSV.

    python scripts/pruner_measurement.py --out /tmp/pruners.csv   # mnist-5k, bp and mf, 3 seeds
    python scripts/pruner_measurement.py --dataset fashion-mnist --data-root data \
        --algorithms bp --pruners none median --n-trials 12 --max-epochs 5 --out /tmp/fm.csv

Run it with one thread on an otherwise idle machine: times and energies are the measurement."""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import optuna
import torch

from bpfree.core.spec import PRUNERS as SPEC_PRUNERS
from bpfree.core.spec import EarlyStopping, Machine, Tuning
from bpfree.engine import plugins
from bpfree.models import parse_arch
from bpfree.tuning.job import TuneJob, tune
from bpfree.tuning.records import trial_records

PRUNERS = ("none", *(p for p in SPEC_PRUNERS if p != "none"))  # no pruner first: the others' reference
STUDIES = {  # algorithm: (architecture, search space overrides: stage lengths inside the budget)
    "bp": ("mlp:1000,1000", {}),
    "mf": ("mlp:1000,1000", {"mf": {"epochs_per_layer": {"type": "int", "low": 2, "high": 8}}}),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--algorithms", nargs="+", default=list(STUDIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43, 44])
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--max-epochs", type=int, default=8, help="a trial's epoch budget per stage")
    parser.add_argument("--pruners", nargs="+", choices=PRUNERS, default=list(PRUNERS))
    parser.add_argument("--startup-trials", type=int, default=5, help="trials finished before a pruner prunes")
    parser.add_argument("--data-root", default=Machine.model_fields["data_root"].default, help="where the dataset is")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plugins.load()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for algorithm in args.algorithms:
            arch, space = STUDIES[algorithm]
            for seed in args.seeds:
                for pruner in args.pruners:
                    storage = Path(scratch) / f"{algorithm}-{seed}-{pruner}.journal"
                    job = TuneJob(
                        algorithm=algorithm,
                        dataset=args.dataset,
                        n_trials=args.n_trials,
                        storage=storage,
                        settings=Tuning(
                            n_trials=args.n_trials,
                            max_epochs=args.max_epochs,
                            seed=seed,
                            pruner=pruner,
                            pruner_startup_trials=args.startup_trials,
                            pruner_warmup_epochs=1,
                            search_spaces=space,
                        ),
                        early_stopping=EarlyStopping(max_epochs=args.max_epochs, patience=args.max_epochs),
                        arch=parse_arch(arch),
                        machine=Machine(device="cpu", data_root=args.data_root),
                    )
                    t0 = time.perf_counter()
                    result = tune(job, progress=False)
                    wall = time.perf_counter() - t0
                    study = optuna.load_study(
                        study_name=result.study_name,
                        storage=optuna.storages.JournalStorage(
                            optuna.storages.journal.JournalFileBackend(str(storage))
                        ),
                    )
                    trials = trial_records(study, pruner)
                    sources = sorted({t["energy_source"] for t in trials if t["energy_source"]})
                    row = {
                        "algorithm": algorithm,
                        "arch": arch,
                        "dataset": args.dataset,
                        "seed": seed,
                        "pruner": pruner,
                        "trials": len(trials),
                        "complete": result.counts.complete,
                        "pruned": result.counts.pruned,
                        "failed": result.counts.failed,
                        "epochs": sum(t["epochs"] or 0 for t in trials),
                        "time_s": round(sum(t["time_s"] or 0.0 for t in trials), 2),
                        "wall_s": round(wall, 2),
                        "energy_j": round(sum(t["energy_j"] or 0.0 for t in trials), 2),
                        "energy_source": "+".join(sources),
                        "best_val_accuracy": result.best.value,
                    }
                    rows.append(row)
                    print(" ".join(f"{k}={v}" for k, v in row.items()), file=sys.stderr, flush=True)
                    write_rows(args.out, rows)  # after every study: a stopped measurement keeps its rows
    print("| algorithm | seed | pruner | trials c/p/f | epochs | time (s) | energy (J, source) | best val acc |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['algorithm']} | {r['seed']} | {r['pruner']} | {r['complete']}/{r['pruned']}/{r['failed']} | "
            f"{r['epochs']} | {r['time_s']:.1f} | {r['energy_j']:.0f} ({r['energy_source']}) | "
            f"{r['best_val_accuracy']:.4f} |"
        )
    return 0


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    sys.exit(main())
