"""``bpfree bench``: throughput of each algorithm against the paper-style loop, on one machine.

For every case (an algorithm on its native MLP or CNN), data shape and regime, both loops
train a freshly built model of the same seed for the same epochs on the same batches:

- *ours*: the algorithm's own ``begin_stage``/``train_epoch``/``end_stage`` on device-resident
  data (:class:`bpfree.data.Batches`), inference with ``algo.accuracy``;
- *reference*: :mod:`bpfree.bench.reference`, the paper's way (CPU DataLoader, ``.to(device)``
  per batch, recomputed frozen features, FF's per-label loop).

Reported per loop: training and inference samples/s, time per epoch, and FLOP/s as a fraction
of a plain ``torch.mm`` on the same matrix shapes in the same process (FLOPs counted with
``FlopCounterMode`` over a run on one batch of data, scaled to the full data; the shapes
recorded alongside, convolutions as their im2col GEMMs). That counted run is also the warm-up;
the best of ``repeats`` timed runs is kept, ours and the reference interleaved so that a busy
machine slows both alike.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import Dataset

from bpfree.algorithms import Algorithm, build_algorithm
from bpfree.bench.reference import PixelDataset, ReferenceFF, ReferenceLoop, reference_loop, tensor_dataset
from bpfree.core.errors import BpfreeError
from bpfree.core.registry import ALGORITHMS
from bpfree.data import Batches, DatasetInfo, DataSplits, Split
from bpfree.data.core import normalise
from bpfree.engine.analysis import flop_count
from bpfree.engine.precision import precision_context, precision_flags
from bpfree.engine.setup import seed_everything
from bpfree.models import ArchSpec, parse_arch

aten = torch.ops.aten


# -- what is measured ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    name: str
    algorithm: str
    native_arch: str  # the paper's architecture: the compute regime runs it as is
    params: tuple[tuple[str, Any], ...] = ()


CASES = [
    Case("bp-mlp", "bp", "mlp:1000,1000"),
    Case("ff", "ff", "mlp:1000,1000,1000", (("prediction", "softmax"),)),  # FF's default is goodness
    Case("ff-goodness", "ff", "mlp:1000,1000,1000", (("prediction", "goodness"),)),
    Case("mf", "mf", "mlp:1000,1000"),
    Case("bp-cnn", "bp", "cnn:32,128,512"),
    Case("cafo-rand", "cafo-rand", "cnn:32,128,512"),
    Case("cafo-dfa", "cafo-dfa", "cnn:32,128,512"),
]

SHAPES = {"digits": (1, 8, 8), "mnist": (1, 28, 28), "cifar": (3, 32, 32)}


@dataclass(frozen=True)
class Sizes:
    """One regime's sizes. ``mlp_width``/``cnn_channels`` None: the native architecture."""

    shapes: tuple[str, ...]  # of SHAPES
    mlp_width: int | None
    cnn_channels: tuple[int, ...] | None
    train_samples: int
    test_samples: int
    epochs: int  # per stage (MF: per layer; CaFo-DFA: DFA and predictors)
    repeats: int  # timed runs after the warm-up; the best is kept
    inference_batch_size: int = 500


# Sized for 2 CPU cores: both regimes and every case in under 2 minutes. On a GPU pass larger
# --train-samples, one regime per command (docs/gpu.md: each under 5 minutes).
REGIMES = {
    # narrow layers on digits-sized (8x8) images: per-batch costs dominate, as they do for
    # every paper architecture on a GPU
    "overhead": Sizes(
        ("digits",), mlp_width=64, cnn_channels=(8, 16, 32), train_samples=2048, test_samples=2000, epochs=3, repeats=3
    ),
    # the paper's architectures on MNIST- and CIFAR-shaped images: on a CPU the matrix
    # products dominate
    "compute": Sizes(
        ("mnist", "cifar"), mlp_width=None, cnn_channels=None, train_samples=192, test_samples=200, epochs=2, repeats=2
    ),
}
QUICK = {"train_samples": 200, "test_samples": 100, "epochs": 1, "repeats": 1}
QUICK_COMPUTE = {"mlp_width": 256, "cnn_channels": (8, 16, 32)}


@dataclass(frozen=True)
class BenchConfig:
    device: torch.device
    regimes: tuple[str, ...] = ("overhead", "compute")
    shapes: tuple[str, ...] | None = None  # None: each regime's own
    cases: tuple[str, ...] = tuple(c.name for c in CASES)
    quick: bool = False
    seed: int = 0
    precision: str = "fp32"
    reference_data: str = "pixels"  # "pixels": per-sample ToTensor+Normalize; "tensors": TensorDataset
    overrides: dict[str, Any] = field(default_factory=dict)  # Sizes fields from the command line

    def sizes(self, regime: str) -> Sizes:
        sizes = REGIMES[regime]
        if self.quick:
            sizes = replace(sizes, **QUICK, **(QUICK_COMPUTE if regime == "compute" else {}))
        return replace(sizes, **self.overrides)


def case_arch(case: Case, sizes: Sizes) -> ArchSpec:
    native = parse_arch(case.native_arch)
    if native.kind == "mlp" and sizes.mlp_width is not None:
        return ArchSpec("mlp", (sizes.mlp_width,) * len(native.widths))
    if native.kind == "cnn" and sizes.cnn_channels is not None:
        return ArchSpec("cnn", sizes.cnn_channels)
    return native


# -- data ---------------------------------------------------------------------------------------
@dataclass
class SyntheticData:
    """Random uint8 images whose labels a fixed random linear map of the pixels decides
    (learnable, so losses fall and accuracies mean something); no download. ``splits`` holds
    them normalised on the device (ours); the reference reads the raw pixels on the CPU."""

    splits: DataSplits
    train_pixels: torch.Tensor
    test_pixels: torch.Tensor

    def head(self, n_train: int, n_test: int) -> SyntheticData:
        """The first ``n_train`` training and ``n_test`` test samples."""
        s = self.splits
        return SyntheticData(
            DataSplits(
                s.info,
                Split(s.train.x[:n_train], s.train.y[:n_train]),
                s.val,
                Split(s.test.x[:n_test], s.test.y[:n_test]),
            ),
            self.train_pixels[:n_train],
            self.test_pixels[:n_test],
        )

    def reference_dataset(self, split: str, kind: str) -> Dataset:
        info, labels = self.splits.info, getattr(self.splits, split).y
        if kind == "pixels":
            return PixelDataset(getattr(self, f"{split}_pixels"), labels, info.mean, info.std)
        return tensor_dataset(getattr(self.splits, split))


def synthetic_data(shape: str, n_train: int, n_test: int, seed: int, device: torch.device) -> SyntheticData:
    c, h, w = SHAPES[shape]
    info = DatasetInfo(f"synthetic-{shape}", 10, (c, h, w), (0.5,) * c, (0.25,) * c)
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(c * h * w, info.num_classes, generator=generator)

    def split(n: int) -> tuple[Split, torch.Tensor]:
        pixels = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=generator)
        x = normalise(pixels.to(torch.float32).mul_(1 / 255), info)  # as ToTensor + Normalize
        return Split(x, (x.flatten(1) @ teacher).argmax(1)).to(device), pixels

    (train, train_pixels), (val, _), (test, test_pixels) = split(n_train), split(max(n_test // 4, 1)), split(n_test)
    return SyntheticData(DataSplits(info, train, val, test), train_pixels, test_pixels)


# -- counting FLOPs and recording matmul shapes ---------------------------------------------------
GemmShape = tuple[int, int, int]  # (M, K, N): an (M, K) @ (K, N) product, 2·M·K·N FLOPs


class MatmulShapes(TorchDispatchMode):
    """FLOPs per GEMM shape of every matrix product run inside it; convolutions count as the
    im2col GEMM (M = batch·output pixels, K = in-channels·kernel, N = out-channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.flops: Counter[GemmShape] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for shape, count in _gemms(func.overloadpacket, args, out):
            m, k, n = shape
            self.flops[shape] += 2 * m * k * n * count
        return out


def _gemms(op, args, out) -> list[tuple[GemmShape, int]]:
    if op is aten.mm:
        (m, k), n = args[0].shape, args[1].shape[1]
        return [((m, k, n), 1)]
    if op is aten.addmm:
        (m, k), n = args[1].shape, args[2].shape[1]
        return [((m, k, n), 1)]
    if op is aten.bmm:
        (b, m, k), n = args[0].shape, args[1].shape[2]
        return [((m, k, n), b)]
    if op is aten.convolution:
        weight, groups = args[1], args[8]
        m = out.shape[0] * math.prod(out.shape[2:])
        k = math.prod(weight.shape[1:])
        return [((m, k, weight.shape[0] // groups), groups)]
    if op is aten.convolution_backward:
        grad_out, weight, groups, mask = args[0], args[2], args[9], args[10]
        m = grad_out.shape[0] * math.prod(grad_out.shape[2:])
        k, n = math.prod(weight.shape[1:]), weight.shape[0] // groups
        gemms = []
        if mask[0]:
            gemms.append(((m, n, k), groups))  # grad input: δout (M, N) @ W (N, K)
        if mask[1]:
            gemms.append(((k, m, n), groups))  # grad weight: im2col(x)ᵀ (K, M) @ δout (M, N)
        return gemms
    return []


@dataclass
class Count:
    flops: int = 0
    gemms: Counter = field(default_factory=Counter)


@contextlib.contextmanager
def counting() -> Iterator[Count]:
    count = Count()
    with flop_count() as total, MatmulShapes() as shapes:
        yield count
    count.flops = total.flops
    count.gemms = shapes.flops


class GemmTimer:
    """FLOP/s of plain ``torch.mm`` per shape, measured once per shape and kept; in ``dtype``
    (bfloat16 when the run autocasts to it: ``mm(out=...)`` is never autocast)."""

    def __init__(self, device: torch.device, dtype: torch.dtype = torch.float32, min_time_s: float = 0.02) -> None:
        self.device, self.dtype = device, dtype
        self.min_time_s = min_time_s
        self.rates: dict[GemmShape, float] = {}

    def rate(self, shape: GemmShape) -> float:
        if shape not in self.rates:
            m, k, n = shape
            a = torch.randn(m, k, device=self.device, dtype=self.dtype)
            b = torch.randn(k, n, device=self.device, dtype=self.dtype)
            out = torch.empty(m, n, device=self.device, dtype=self.dtype)
            torch.mm(a, b, out=out)  # first call: kernel selection, allocations
            reps, elapsed = 1, _timed(lambda: torch.mm(a, b, out=out), self.device)
            while elapsed < self.min_time_s:
                reps = max(2 * reps, int(reps * self.min_time_s / max(elapsed, 1e-9)))
                elapsed = _timed(lambda: [torch.mm(a, b, out=out) for _ in range(reps)], self.device)
            best = min(
                elapsed,
                *(_timed(lambda: [torch.mm(a, b, out=out) for _ in range(reps)], self.device) for _ in range(2)),
            )
            self.rates[shape] = 2 * m * k * n * reps / best
        return self.rates[shape]

    def rate_of_mix(self, gemms: Counter, coverage: float = 0.99) -> float | None:
        """FLOP/s of the same products as plain GEMMs: the FLOP-weighted harmonic mean over the
        largest shapes that make up ``coverage`` of the FLOPs (the rest are crumbs)."""
        total = sum(gemms.values())
        if not total:
            return None
        flops_done, seconds = 0, 0.0
        for shape, flops in gemms.most_common():
            seconds += flops / self.rate(shape)
            flops_done += flops
            if flops_done >= coverage * total:
                break
        return flops_done / seconds

    def peak(self) -> float:
        size = 4096 if self.device.type == "cuda" else 1024
        return self.rate((size, size, size))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


# -- the two loops ------------------------------------------------------------------------------
def fit_fixed_epochs(algo: Algorithm, train: Split, epochs: int, seed: int) -> list[float]:
    """The algorithm's own stages, each for a fixed number of epochs (no validation, no early
    stopping: the loop ``fit`` runs, minus its bookkeeping); the mean loss of every epoch."""
    batches = Batches(train, seed=seed, augment=algo.info.augment)
    history = []
    for stage in algo.stages():
        budget = stage.max_epochs or epochs
        algo.begin_stage(stage, budget)
        history += [algo.train_epoch(stage, batches) for _ in range(budget)]
        algo.end_stage(stage)
    return history


class Loop:
    """One way of training a case: ``prepare`` builds a fresh model (untimed), ``train`` and
    ``infer`` are what is timed."""

    def __init__(self, build: Callable[[], Algorithm], data: SyntheticData, sizes: Sizes, seed: int) -> None:
        self.build, self.data, self.sizes, self.seed = build, data, sizes, seed
        self.algo: Algorithm | None = None

    def prepare(self) -> None:
        self.algo = self.build()

    def train(self) -> list[float]:
        raise NotImplementedError

    def infer(self) -> float:
        raise NotImplementedError


class Ours(Loop):
    def train(self) -> list[float]:
        return fit_fixed_epochs(self.algo, self.data.splits.train, self.sizes.epochs, self.seed)

    def infer(self) -> float:
        return self.algo.accuracy(self.data.splits.test, self.sizes.inference_batch_size)


class Reference(Loop):
    def __init__(self, *args, kind: str) -> None:
        super().__init__(*args)
        self.train_set = self.data.reference_dataset("train", kind)
        self.test_set = self.data.reference_dataset("test", kind)

    def prepare(self) -> None:
        super().prepare()
        self.loop: ReferenceLoop = reference_loop(self.algo, self.train_set, self.seed)

    def train(self) -> list[float]:
        return self.loop.fit(self.sizes.epochs)

    def infer(self) -> float:
        return self.loop.accuracy(self.test_set, self.sizes.inference_batch_size)


@dataclass
class LoopResult:
    train_time_s: float
    train_epochs: int
    train_samples: int  # samples through training, every epoch of every stage
    infer_time_s: float
    infer_samples: int
    train_flops: int
    infer_flops: int
    train_gemm_flops_per_s: float | None
    infer_gemm_flops_per_s: float | None
    losses: list[float]
    accuracy: float

    def summary(self) -> dict[str, Any]:
        def rate(flops, seconds):
            return flops / seconds if seconds > 0 else None

        def fraction(achieved, gemm):
            return achieved / gemm if achieved is not None and gemm else None

        train_fps, infer_fps = rate(self.train_flops, self.train_time_s), rate(self.infer_flops, self.infer_time_s)
        return {
            "train_samples_per_s": self.train_samples / self.train_time_s,
            "train_time_s": self.train_time_s,
            "epoch_time_s": self.train_time_s / self.train_epochs,
            "train_epochs": self.train_epochs,
            "train_flops": self.train_flops,
            "train_flops_per_s": train_fps,
            "train_gemm_flops_per_s": self.train_gemm_flops_per_s,
            "train_gemm_fraction": fraction(train_fps, self.train_gemm_flops_per_s),
            "infer_samples_per_s": self.infer_samples / self.infer_time_s,
            "infer_time_s": self.infer_time_s,
            "infer_flops": self.infer_flops,
            "infer_flops_per_s": infer_fps,
            "infer_gemm_flops_per_s": self.infer_gemm_flops_per_s,
            "infer_gemm_fraction": fraction(infer_fps, self.infer_gemm_flops_per_s),
            "losses": self.losses,
            "test_accuracy": self.accuracy,
        }


def measure_case(case: Case, shape: str, regime: str, cfg: BenchConfig, gemm: GemmTimer) -> dict[str, Any]:
    sizes = cfg.sizes(regime)
    arch = case_arch(case, sizes)
    data = synthetic_data(shape, sizes.train_samples, sizes.test_samples, cfg.seed, cfg.device)
    params = dict(case.params)
    if case.algorithm == "cafo-dfa":
        params["dfa_epochs"] = sizes.epochs  # the DFA stage runs as long as every other stage

    def build() -> Algorithm:
        seed_everything(cfg.seed)  # the initial weights come from the global generator
        return build_algorithm(case.algorithm, arch, data.splits.info, params, device=cfg.device, seed=cfg.seed)

    batch_size = ALGORITHMS.get(case.algorithm).Params(**params).batch_size
    loop_kinds = {"ours": Ours, "reference": functools.partial(Reference, kind=cfg.reference_data)}
    loops = {name: kind(build, data, sizes, cfg.seed) for name, kind in loop_kinds.items()}
    # FLOPs grow with the rows processed, op by op (every product has M = rows), so they are
    # counted on one batch of data for the same epochs and scaled: a cheap count that doubles
    # as the warm-up
    small = data.head(min(sizes.train_samples, batch_size), min(sizes.test_samples, sizes.inference_batch_size))
    train_scale = sizes.train_samples / len(small.splits.train)
    infer_scale = sizes.test_samples / len(small.splits.test)
    counts, times = {}, {name: {"train": [], "infer": []} for name in loops}
    outcome = {}
    with precision_context(cfg.precision, cfg.device):
        for name, kind in loop_kinds.items():
            counted = kind(build, small, sizes, cfg.seed)
            counted.prepare()
            with counting() as train_count:
                counted.train()
            with counting() as infer_count:
                counted.infer()
            counts[name] = (train_count, infer_count)
        for _ in range(sizes.repeats):  # timed, interleaved; the best is kept
            for name, loop in loops.items():
                loop.prepare()
                times[name]["train"].append(_timed(lambda: outcome.__setitem__(name, loop.train()), cfg.device))
            for name, loop in loops.items():
                times[name]["infer"].append(
                    _timed(lambda: outcome.__setitem__(name + "_acc", loop.infer()), cfg.device)
                )
        gemm_rates = {name: (gemm.rate_of_mix(c[0].gemms), gemm.rate_of_mix(c[1].gemms)) for name, c in counts.items()}
    epochs = len(outcome["ours"])
    results = {
        name: LoopResult(
            train_time_s=min(times[name]["train"]),
            train_epochs=epochs,
            train_samples=epochs * sizes.train_samples,
            infer_time_s=min(times[name]["infer"]),
            infer_samples=sizes.test_samples,
            train_flops=round(counts[name][0].flops * train_scale),
            infer_flops=round(counts[name][1].flops * infer_scale),
            train_gemm_flops_per_s=gemm_rates[name][0],
            infer_gemm_flops_per_s=gemm_rates[name][1],
            losses=outcome[name],
            accuracy=outcome[name + "_acc"],
        ).summary()
        for name in loops
    }
    ours, ref = results["ours"], results["reference"]
    record = {
        "case": case.name,
        "algorithm": case.algorithm,
        "params": params,
        "regime": regime,
        "shape": shape,
        "input_shape": list(SHAPES[shape]),
        "arch": str(arch),
        "batch_size": batch_size,
        "inference_batch_size": sizes.inference_batch_size,
        "train_samples": sizes.train_samples,
        "test_samples": sizes.test_samples,
        "epochs_per_stage": sizes.epochs,
        "load_average": os.getloadavg()[0],  # after the case: a busy machine shows here
        "repeats": sizes.repeats,
        "ours": ours,
        "reference": ref,
        "train_speedup": ref["train_time_s"] / ours["train_time_s"],
        "infer_speedup": ref["infer_time_s"] / ours["infer_time_s"],
        # the same math on the same batches: the losses agree up to float rounding
        "max_loss_difference": max(abs(a - b) for a, b in zip(ours["losses"], ref["losses"], strict=True)),
    }
    if case.algorithm == "ff" and dict(case.params).get("prediction") == "goodness":
        record["goodness_prediction"] = _goodness_prediction(loops["ours"].algo, data.splits, sizes, cfg.device)
    return record


def _goodness_prediction(algo, data: DataSplits, sizes: Sizes, device: torch.device) -> dict[str, float]:
    """FF's C-label goodness prediction on device-resident batches: all labels in one batched
    pass (ours) against one pass per label (the paper's), no data loading in either."""
    reference = ReferenceFF(algo, tensor_dataset(data.train), algo.seed)
    x = data.test.x[: sizes.inference_batch_size]
    with torch.no_grad():
        batched = min(_timed(lambda: algo.goodness_per_label(x), device) for _ in range(2))
        looped = min(_timed(lambda: reference.goodness_per_label(x), device) for _ in range(2))
    return {"batched_s": batched, "per_label_loop_s": looped, "speedup": looped / batched}


# -- the whole benchmark --------------------------------------------------------------------------
def run_bench(cfg: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    for kind, names, valid in (("case", cfg.cases, [c.name for c in CASES]), ("shape", cfg.shapes or (), list(SHAPES))):
        unknown = sorted(set(names) - set(valid))
        if unknown:
            raise BpfreeError(f"unknown bench {kind}(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
    cases = [c for c in CASES if c.name in cfg.cases and c.algorithm in ALGORITHMS]
    gemm = GemmTimer(cfg.device, torch.bfloat16 if cfg.precision == "bf16" else torch.float32)
    started = time.perf_counter()
    meta = {
        "device": str(cfg.device),
        "device_name": torch.cuda.get_device_name(cfg.device)
        if cfg.device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "load_average_start": list(os.getloadavg()),
        "torch": torch.__version__,
        "precision": cfg.precision,
        "reference_data": cfg.reference_data,
        "quick": cfg.quick,
        "seed": cfg.seed,
        "regimes": {r: asdict(cfg.sizes(r)) for r in cfg.regimes},
    }
    with precision_context(cfg.precision, cfg.device):
        meta["gemm_peak_flops_per_s"] = gemm.peak()
        # what both loops and the plain GEMMs ran under (fp32: TF32 off in cuBLAS and cuDNN)
        meta["precision_flags"] = precision_flags(cfg.device)
    results = []
    for regime in cfg.regimes:
        for shape in cfg.shapes or cfg.sizes(regime).shapes:
            for case in cases:
                if progress:
                    progress(f"{regime} {shape} {case.name}")
                started_case = time.perf_counter()
                results.append(measure_case(case, shape, regime, cfg, gemm))
                results[-1]["case_wall_time_s"] = time.perf_counter() - started_case
    meta["load_average_end"] = list(os.getloadavg())
    meta["wall_time_s"] = time.perf_counter() - started
    return {"meta": meta, "results": results}


def format_table(report: dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"bpfree bench on {meta['device']} ({meta['device_name']}), {meta['threads']} threads, "
        f"precision {meta['precision']}, reference data {meta['reference_data']}, load average {meta['load_average_start'][0]:.2f} -> "
        f"{meta['load_average_end'][0]:.2f}, plain GEMM peak {meta['gemm_peak_flops_per_s'] / 1e9:.1f} GFLOP/s",
        "train/infer: samples/s ours | reference (speed-up); epoch: ms ours | reference; "
        "gemm%: achieved FLOP/s over torch.mm on the same shapes, ours train | infer (reference train)",
    ]
    header = (
        "regime",
        "shape",
        "case",
        "arch",
        "train ours",
        "ref",
        "x",
        "infer ours",
        "ref",
        "x",
        "epoch ms",
        "ref",
        "gemm% tr",
        "inf",
        "ref tr",
        "dloss",
    )
    rows = [header]
    for r in report["results"]:
        o, f = r["ours"], r["reference"]
        rows.append(
            (
                r["regime"],
                r["shape"],
                r["case"],
                r["arch"],
                f"{o['train_samples_per_s']:,.0f}",
                f"{f['train_samples_per_s']:,.0f}",
                f"{r['train_speedup']:.1f}",
                f"{o['infer_samples_per_s']:,.0f}",
                f"{f['infer_samples_per_s']:,.0f}",
                f"{r['infer_speedup']:.1f}",
                f"{1e3 * o['epoch_time_s']:.1f}",
                f"{1e3 * f['epoch_time_s']:.1f}",
                _percent(o["train_gemm_fraction"]),
                _percent(o["infer_gemm_fraction"]),
                _percent(f["train_gemm_fraction"]),
                f"{r['max_loss_difference']:.0e}",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
    for row in rows:
        lines.append(
            "  ".join(str(v).rjust(w) if i >= 4 else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths)))
        )
    for r in report["results"]:
        if "goodness_prediction" in r:
            g = r["goodness_prediction"]
            lines.append(
                f"ff goodness prediction, {r['regime']} {r['shape']} ({r['inference_batch_size']} samples, device-resident): "
                f"batched {1e3 * g['batched_s']:.2f} ms vs per-label loop {1e3 * g['per_label_loop_s']:.2f} ms ({g['speedup']:.1f}x)"
            )
    lines.append(f"wall time {meta['wall_time_s']:.0f} s")
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}"
