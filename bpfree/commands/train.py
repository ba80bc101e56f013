"""``bpfree train``: one run, writing DIR/spec.yaml, DIR/metrics.json and DIR/history.csv.

Either ``--spec FILE`` (a resolved spec.yaml, as the workflow writes into every run folder:
the run is re-run exactly) or the subject flags with ``--config`` and ``--params``, which build
the same spec (``bpfree spec`` writes it without training)."""

from __future__ import annotations

import argparse
import os
import sys

from bpfree.commands.common import (
    RUN_FLAGS,
    add_machine_arguments,
    add_settings_arguments,
    add_subject_arguments,
    apply_settings,
    machine_overrides,
    settings_overrides,
)
from bpfree.core.errors import BpfreeError
from bpfree.core.paper import paper_row
from bpfree.core.spec import load_spec
from bpfree.engine import runfolder
from bpfree.engine.resolve import load_settings, read_params_file, run_spec


def add_spec_arguments(p: argparse.ArgumentParser) -> None:
    """Everything that builds a run's spec from flags (shared with ``bpfree spec``)."""
    add_subject_arguments(p, required=False)
    p.add_argument("--seed", type=int, help="seeds the split, the initial weights and the batch order")
    p.add_argument("--params", help="YAML of hyperparameters (a flat mapping or bpfree tune's output)")
    p.add_argument(
        "--paper-params",
        action="store_true",
        help="the paper's code's final hyperparameters and early stopping for this algorithm, --arch and "
        "--dataset (bpfree/core/paper_params.yaml; docs/paper-code.md)",
    )
    p.add_argument("--config", help="workflow config: its run settings (early_stopping, measurement, ...)")
    add_settings_arguments(p, RUN_FLAGS)
    add_machine_arguments(p)
    p.add_argument("--download", action="store_true", help="download the dataset if missing")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one algorithm on one dataset with one seed")
    p.add_argument("--spec", help="a run's spec.yaml: run exactly that (flags other than the machine's refused)")
    add_spec_arguments(p)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--wait",
        action="store_true",
        help="if another process is training in --out, wait for it to end instead of failing",
    )
    p.set_defaults(func=run, plugins=True)


def spec_from_args(args: argparse.Namespace):
    """The RunSpec the flags describe (not yet resolved), or the one --spec names."""

    machine = machine_overrides(args)
    if getattr(args, "spec", None):
        given = [f"--{k.replace('_', '-')}" for k in SPEC_FLAGS if getattr(args, k, None) not in (None, False, [])]
        if given:
            raise BpfreeError(
                f"--spec gives the whole run: drop {', '.join(given)} (only --device, --threads, --data-root may change)"
            )
        spec = load_spec(args.spec)
        return spec.replace(machine=spec.machine.replace("machine", **machine)) if machine else spec
    missing = [f"--{k}" for k in ("algorithm", "dataset", "seed") if getattr(args, k) is None]
    if missing:
        raise BpfreeError(f"give --spec FILE, or {', '.join(missing)}")
    if args.paper_params and args.params:
        raise BpfreeError("give --params FILE or --paper-params, not both")
    settings = load_settings(args.config)
    params = read_params_file(args.params, args.algorithm) if args.params else {}
    if args.paper_params:
        row = paper_row(args.algorithm, args.arch, args.dataset)
        params = row.params
        settings = settings.replace(early_stopping=row.early_stopping)  # that config's own stopping rule
    # the named flags and --set, over the config (and the paper's row)
    settings = apply_settings(settings, settings_overrides(args, RUN_FLAGS))
    spec = run_spec(
        settings, algorithm=args.algorithm, dataset=args.dataset, seed=args.seed, arch=args.arch, params=params
    )
    changes: dict = {"machine": spec.machine.replace("machine", **machine)}
    return spec.replace(**changes)


# flags that describe the run itself: with --spec they would silently differ from the file
SPEC_FLAGS = ("algorithm", "dataset", "arch", "seed", "params", "paper_params", "config", "set", *RUN_FLAGS)


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: every bpfree command would otherwise pay for torch
    from bpfree.engine.loop import STOPPED_EXIT_CODE, Stopped, stop_on_signals
    from bpfree.engine.run import completed_record, prepare, train
    from bpfree.engine.setup import set_threads

    spec = spec_from_args(args)
    out = runfolder.check(args.out)  # its kind, before any work
    set_threads(spec.machine.threads)
    resolved, _, digest = prepare(spec)  # every check, before any work
    with runfolder.hold(out, wait=args.wait):  # one process per run folder
        done = completed_record(digest, out)
        if done is not None:  # e.g. a requeued job that had finished: keep its measurements
            print(
                f"{done.algorithm} {done.arch} on {done.dataset} seed {done.seed}: already trained "
                f"(status {done.status}) -> {args.out}; remove its metrics.json to train again"
            )
            return 0
        runfolder.refuse_other_run(out, digest)  # a finished run of another spec is never overwritten
        try:
            with stop_on_signals():  # SIGTERM (SLURM's stop) or SIGINT: checkpoint, then exit 75
                result = train(resolved, out)
        except Stopped as stop:
            print(f"bpfree train: {stop}", file=sys.stderr)
            # the checkpoint is on disk: exit now, skipping the interpreter's teardown of torch and
            # its libraries (measured 3-7 s on a busy 2-core node, of SLURM's 30 s KillWait); the
            # kernel drops the run folder's flock (bpfree.engine.runfolder) as the process ends
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(STOPPED_EXIT_CODE)
    print(
        f"{resolved.algorithm} {result.arch} on {resolved.dataset} seed {resolved.seed}: status {result.fit.status}, "
        f"test accuracy {result.test_accuracy:.4f}, {result.fit.epochs} epochs, "
        f"{result.fit.train_time_s:.1f} s{_energy_note(result)} -> {args.out}"
    )
    return 0


def _energy_note(result) -> str:
    measured = result.measurement
    if measured is None:
        return ""
    energy = measured.fit.of(measured.primary_domain)
    return f", {energy.joules:.1f} J ({energy.source})" if energy.joules is not None else ""
