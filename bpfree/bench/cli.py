"""``bpfree bench``: training and inference throughput of every algorithm against a loop written
the way the paper's code is (same model, loss, optimiser, batch size and batches), on
synthetic MNIST- and CIFAR-shaped data; prints a table, ``--out`` writes JSON."""

from __future__ import annotations

import argparse
import sys

from bpfree.core.argtypes import int_in
from bpfree.core.errors import BpfreeError
from bpfree.core.io import output_file, write_json_atomic
from bpfree.core.spec import MAX_SEED, MAX_THREADS, PRECISIONS

# what the overrides may be: beyond these a run is a memory or time bomb, not a benchmark (a
# width of 10^11 asked torch for 25 TB; 10^13 repeats never end)
MAX_WIDTH, MAX_SAMPLES, MAX_EPOCHS, MAX_REPEATS = 16384, 10_000_000, 10_000, 1000

CASE_NAMES = ("bp-mlp", "ff", "ff-goodness", "mf", "bp-cnn", "cafo-rand", "cafo-dfa")
SHAPE_NAMES = ("digits", "mnist", "cifar")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="throughput of each algorithm vs the paper-style loop")
    p.add_argument("--device", default="auto", help="auto (cuda if present), cpu, cuda, cuda:N")
    p.add_argument(
        "--regime",
        choices=["overhead", "compute", "both"],
        help="overhead: narrow layers (width 64) on 8x8 images, per-batch costs dominate; compute: "
        "the paper's architectures (widths 1000+), matrix products dominate (default: both; with --quick: overhead)",
    )
    # names spelt out here, not imported: the benchmark's modules load torch, and every
    # bpfree command builds this parser (tests/test_bench.py checks the lists agree)
    p.add_argument("--cases", help=f"comma-separated, default all: {','.join(CASE_NAMES)}")
    p.add_argument(
        "--shapes", help=f"comma-separated, of {','.join(SHAPE_NAMES)} (default: overhead digits, compute mnist,cifar)"
    )
    p.add_argument("--width", type=int_in(1, MAX_WIDTH), help="MLP hidden width, overriding the regime's")
    p.add_argument("--train-samples", type=int_in(1, MAX_SAMPLES), help="training samples, overriding the regime's")
    p.add_argument("--test-samples", type=int_in(1, MAX_SAMPLES), help="inference samples, overriding the regime's")
    p.add_argument("--epochs", type=int_in(1, MAX_EPOCHS), help="epochs per stage, overriding the regime's")
    p.add_argument("--repeats", type=int_in(1, MAX_REPEATS), help="timed runs after the warm-up (best kept)")
    p.add_argument(
        "--threads",
        type=int,
        help="torch.set_num_threads (default: 1 on the CPU, where OpenMP threads spin against any "
        "other load on a shared machine; torch's own on a GPU)",
    )
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="both loops (default fp32)")
    p.add_argument(
        "--reference-data",
        choices=["pixels", "tensors"],
        default="pixels",
        help="the reference's dataset: pixels (uint8, ToTensor+Normalize per sample, as torchvision "
        "datasets feed the paper's code; default) or tensors (a TensorDataset of normalised images)",
    )
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes, overhead regime unless --regime names one")
    p.add_argument("--out", help="write the full results as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    # here, not at the top: keeps torch out of the CLI's start-up
    from bpfree.bench.runner import BenchConfig, format_table, run_bench
    from bpfree.engine.setup import resolve_device

    device = resolve_device(args.device)
    threads = args.threads if args.threads is not None else (1 if device.type == "cpu" else torch.get_num_threads())
    if not 1 <= threads <= MAX_THREADS:
        raise BpfreeError(f"--threads must be from 1 to {MAX_THREADS}, got {threads}")
    if args.out is not None:
        output_file(args.out, "--out")
    torch.set_num_threads(threads)
    overrides = {
        key: value
        for key, value in {
            "mlp_width": args.width,
            "train_samples": args.train_samples,
            "test_samples": args.test_samples,
            "epochs": args.epochs,
            "repeats": args.repeats,
        }.items()
        if value is not None
    }
    if any(v < 1 for v in overrides.values()):
        raise BpfreeError("--width, --train-samples, --test-samples, --epochs and --repeats must be >= 1")
    regime = args.regime or ("overhead" if args.quick else "both")
    regimes = ("overhead", "compute") if regime == "both" else (regime,)
    cfg = BenchConfig(
        device=device,
        regimes=regimes,
        shapes=_names(args.shapes) if args.shapes else None,
        quick=args.quick,
        seed=args.seed,
        precision=args.precision,
        reference_data=args.reference_data,
        overrides=overrides,
        **({"cases": _names(args.cases)} if args.cases else {}),
    )
    report = run_bench(cfg, progress=lambda what: print(f"  {what}", file=sys.stderr, flush=True))
    print(format_table(report))
    if args.out:
        write_json_atomic(args.out, report)
    return 0


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())
