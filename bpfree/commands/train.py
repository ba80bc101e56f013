"""``bpfree train``: one run, writing DIR/metrics.json and DIR/history.csv."""

from __future__ import annotations

import argparse

from bpfree.commands.common import add_machine_arguments, add_subject_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one algorithm on one dataset with one seed")
    add_subject_arguments(p)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--params", help="YAML of hyperparameters (a flat mapping or bpfree tune's output)")
    p.add_argument("--config", help="workflow config: its early_stopping and measurement sections")
    p.add_argument("--max-epochs", type=int, help="override early_stopping.max_epochs")
    p.add_argument("--measure-idle-s", type=float, help="override measurement.idle_seconds (idle baseline)")
    p.add_argument("--measure-poll-s", type=float, help="override measurement.poll_interval_s")
    p.add_argument("--measure-country", help="override measurement.country_iso_code (e.g. USA, FRA)")
    p.add_argument("--measure-codecarbon", choices=["on", "off"], help="override measurement.codecarbon")
    p.add_argument(
        "--precision",
        choices=["fp32", "tf32", "bf16"],
        help="matmul precision: fp32 (the paper's; default), tf32 (CUDA), bf16 autocast (override precision)",
    )
    p.add_argument(
        "--checkpoint-every-s",
        type=float,
        help="seconds between checkpoints, 0: every epoch (override checkpoint_every_s; default 60)",
    )
    add_machine_arguments(p)
    p.add_argument("--download", action="store_true", help="download the dataset if missing")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # imported here, not at the top: every bpfree command would otherwise pay for torch
    import dataclasses

    from bpfree.config import (
        checkpoint_every_s_from_config,
        early_stopping_from_config,
        measurement_from_config,
        precision_from_config,
        read_params_file,
    )
    from bpfree.errors import BpfreeError
    from bpfree.models import parse_arch
    from bpfree.registry import ALGORITHMS, DATASETS
    from bpfree.run import RunConfig, completed_metrics, train
    from bpfree.training import set_threads

    set_threads(args.threads)
    if args.seed < 0:  # numpy's generators take no negative seed
        raise BpfreeError(f"--seed must be >= 0, got {args.seed}")
    ALGORITHMS.get(args.algorithm)  # fail on names before anything else
    DATASETS.get(args.dataset)
    arch = parse_arch(args.arch) if args.arch else None
    params = read_params_file(args.params, args.algorithm) if args.params else {}
    policy = early_stopping_from_config(args.config)
    if args.max_epochs is not None:
        policy = dataclasses.replace(policy, max_epochs=args.max_epochs)
    overrides = {
        "idle_seconds": args.measure_idle_s,
        "poll_interval_s": args.measure_poll_s,
        "country_iso_code": args.measure_country,
        "codecarbon": None if args.measure_codecarbon is None else args.measure_codecarbon == "on",
    }
    measurement = dataclasses.replace(
        measurement_from_config(args.config), **{k: v for k, v in overrides.items() if v is not None}
    )
    cfg = RunConfig(
        algorithm=args.algorithm,
        dataset=args.dataset,
        seed=args.seed,
        arch=arch,
        params=params,
        early_stopping=policy,
        device=args.device,
        data_root=args.data_root,
        download=args.download,
        measurement=measurement,
        checkpoint_every_s=checkpoint_every_s_from_config(args.config)
        if args.checkpoint_every_s is None
        else args.checkpoint_every_s,
        precision=precision_from_config(args.config) if args.precision is None else args.precision,
    )
    done = completed_metrics(cfg, args.out)
    if done is not None:  # e.g. a requeued job that had finished: keep its measurements
        print(
            f"{cfg.algorithm} {done['arch']} on {cfg.dataset} seed {cfg.seed}: already trained "
            f"(status {done['status']}) -> {args.out}; remove its metrics.json to train again"
        )
        return 0
    result = train(cfg, args.out)
    print(
        f"{cfg.algorithm} {result.arch} on {cfg.dataset} seed {cfg.seed}: status {result.fit.status}, "
        f"test accuracy {result.test_accuracy:.4f}, {result.fit.epochs} epochs, "
        f"{result.fit.train_time_s:.1f} s{_energy_note(result)} -> {args.out}"
    )
    return 0


def _energy_note(result) -> str:
    fit = result.fit.measurement
    if fit is None or result.measurement is None:
        return ""
    energy = fit.of(result.measurement.primary_domain)
    return f", {energy.joules:.1f} J ({energy.source})" if energy.joules is not None else ""
