"""``bpfree tune``: an Optuna study of one algorithm on one dataset and architecture, kept in a
journal file (resumable, shareable by parallel workers), its best params written as YAML."""

from __future__ import annotations

import argparse
import sys

from bpfree.commands.common import (
    TUNE_FLAGS,
    add_machine_arguments,
    add_settings_arguments,
    add_subject_arguments,
    apply_settings,
    settings_overrides,
)
from bpfree.core.errors import BpfreeError
from bpfree.core.io import output_file
from bpfree.core.paper import study_settings
from bpfree.core.spec import Machine, parse
from bpfree.engine.resolve import load_settings


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune", help="tune an algorithm's hyperparameters with Optuna (TPE; median, successive-halving or hyperband)"
    )
    add_subject_arguments(p)
    p.add_argument(
        "--n-trials",
        type=int,
        help="finished trials (complete, pruned or failed, as Optuna's study.optimize counts them) the study "
        "must hold, counted across restarts and workers "
        "(default: tuning.n_trials of --config)",
    )
    p.add_argument(
        "--storage", required=True, help="the study's journal file; run again to resume, or in parallel to share it"
    )
    p.add_argument("--out", required=True, help="where to write best_params.yaml (for bpfree train --params)")
    p.add_argument("--config", help="workflow config: its tuning and early_stopping sections")
    p.add_argument("--study-name", help="default: ALGORITHM-DATASET-ARCH")
    add_settings_arguments(p, TUNE_FLAGS)
    p.add_argument(
        "--trials-out",
        help="the study's trial table: every trial's state, epochs, time and energy "
        "(default: beside the journal, STORAGE-without-suffix.trials.csv)",
    )
    add_machine_arguments(p)
    p.set_defaults(func=run, plugins=True)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import optuna

    # here, not at the top: keeps optuna and torch out of the CLI's start-up
    from bpfree.core.journal import check_journal_name
    from bpfree.engine.loop import STOPPED_EXIT_CODE
    from bpfree.engine.setup import set_threads
    from bpfree.models import parse_arch
    from bpfree.tuning.job import TuneJob, tune, write_best_params
    from bpfree.tuning.records import trials_csv_path
    from bpfree.tuning.stop import TuneInterrupted, stop_tuning_on_signals

    changes = settings_overrides(args, TUNE_FLAGS)
    settings = apply_settings(load_settings(args.config), changes)
    machine = parse(
        Machine,
        {
            "device": args.device or settings.device,
            "data_root": args.data_root or settings.data_root,
            "threads": args.threads if args.threads is not None else settings.job_threads,
        },
        where="machine",
    )
    set_threads(machine.threads)
    arch = parse_arch(args.arch) if args.arch else None
    # tuning.protocol paper: this configuration's own protocol (trial count, length, stopping,
    # score, sampler, pruner) as the paper's code tuned it; flags and --set given here still win
    tuning, early_stopping = study_settings(
        settings.tuning, settings.early_stopping, args.algorithm, str(arch) if arch else None, args.dataset
    )
    tuning = tuning.replace("tuning", **changes.get("tuning", {}))
    early_stopping = early_stopping.replace("early_stopping", **changes.get("early_stopping", {}))
    n_trials = args.n_trials if args.n_trials is not None else tuning.n_trials
    if n_trials < 1:
        raise BpfreeError("give --n-trials N (N >= 1) or tuning.n_trials in --config")
    # written to only after trials: find out now that each is a file that can be written
    output_file(args.storage, "--storage")
    check_journal_name(args.storage)  # room beside it for its lock and a set-aside copy
    output_file(args.out, "--out")
    output_file(args.trials_out if args.trials_out is not None else trials_csv_path(args.storage), "--trials-out")
    job = TuneJob(
        algorithm=args.algorithm,
        dataset=args.dataset,
        n_trials=n_trials,
        storage=Path(args.storage),
        settings=tuning,
        early_stopping=early_stopping,
        arch=arch,
        study_name=args.study_name,
        machine=machine,
        precision=settings.precision,
        measurement=settings.measurement,
        trials_csv=Path(args.trials_out) if args.trials_out else None,
        checkpoint_every_s=settings.checkpoint_every_s,
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # bpfree prints one line per trial
    # SLURM ends a job with SIGTERM: the running trial is abandoned (run again when the study
    # resumes, not counted), and the command exits 75 as bpfree train does; so does Ctrl-C
    try:
        with stop_tuning_on_signals():
            result = tune(job)
            write_best_params(args.out, result)
    except TuneInterrupted as stop:
        print(f"bpfree tune: {stop} (exit {STOPPED_EXIT_CODE})", file=sys.stderr)
        return STOPPED_EXIT_CODE
    c = result.counts
    short = f" (short of {n_trials}: timeout)" if c.finished < n_trials else ""
    print(
        f"{args.algorithm} {result.arch} on {args.dataset}: study {result.study_name!r} has "
        f"{c.finished} finished trials{short}: {c.complete} complete, {c.pruned} pruned, {c.failed} failed; best "
        f"val accuracy {result.best.value:.4f} (trial {result.best.number}); {result.trials_run} "
        f"trials here in {result.elapsed_s:.1f} s -> {args.out}; every trial's cost: {result.trials_csv}"
    )
    return 0
