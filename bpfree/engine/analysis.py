"""Where a run's compute and memory go, counted on the algorithm's own code.

Before the measured fit, :func:`analyse` builds a second copy of the algorithm and runs each of
its stages for two epochs on ONE minibatch of the real training data (its own ``begin_stage``,
``train_epoch``, ``evaluate``, ``end_stage``; then ``predict``), under
``torch.utils.flop_counter.FlopCounterMode``:

- FLOPs per sample of a training epoch, per stage: the second epoch (steady state); the first
  minus the second is what a stage does once (MF's and CaFo's frozen-feature caches, CaFo's
  BatchNorm refill), also per sample. The same for a validation pass and for ``predict``.
  FLOPs grow with the rows processed (every product has M = rows), so per-sample counts
  scale exactly to the real splits. FlopCounterMode counts matrix products and convolutions
  (forward and backward), not elementwise work (activations, norms, the optimiser's update).
- Memory by what holds it, per stage, from the tensors' own sizes: weights (parameters and
  buffers), gradients, optimiser state, activations kept for backward (every tensor autograd
  saves during the step, seen through ``saved_tensors_hooks``, parameters excluded), cached
  features (tensors the algorithm keeps between epochs, e.g. MF's and CaFo's frozen-feature
  caches, scaled from the rows counted to the real split) and the data on the device. On a GPU
  the CUDA allocator's peak over the step is recorded next to them.

The copy draws from the global RNGs; :func:`analyse` restores them, so the measured run that
follows is the run it would have been without the analysis. :func:`run_costs` combines the
counts with the run's history (epochs per stage) into the run's FLOPs, per epoch and by stage."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bpfree.algorithms.base import Algorithm
from bpfree.core.outputs import MEMORY_PARTS  # re-exported: analysis.MEMORY_PARTS
from bpfree.core.spec import EarlyStopping
from bpfree.data import Batches, DataSplits, Split
from bpfree.engine.checkpoint import rng_state, set_rng_state

MB = 1024 * 1024


# -- counting -----------------------------------------------------------------------------------
@dataclass
class FlopTotal:
    flops: int = 0


@contextlib.contextmanager
def flop_count() -> Iterator[FlopTotal]:
    """FLOPs of the matrix products and convolutions run inside (``FlopCounterMode``), in
    ``total.flops`` once the block ends. Shared with ``bpfree bench``."""
    total = FlopTotal()
    with FlopCounterMode(display=False) as counter:
        yield total
    total.flops = int(counter.get_total_flops())


def _storage(t: torch.Tensor) -> tuple[int, int] | None:
    """(address, bytes) of a tensor's storage; None for one without (e.g. a meta tensor)."""
    try:
        storage = t.untyped_storage()
        return storage.data_ptr(), storage.nbytes()
    except (RuntimeError, NotImplementedError):
        return None


def storage_bytes(tensors) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views share theirs)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if isinstance(t, torch.Tensor):
            key = _storage(t)
            if key is not None:
                seen.setdefault(key[0], key[1])
    return sum(seen.values())


class SavedForBackward:
    """The distinct storages autograd saves for backward inside the block (activations),
    except those in ``exclude`` (addresses of parameters and buffers: a Linear saves its
    weight too). The tensors are passed through untouched."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.seen: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        key = _storage(t)
        if key is not None and key[0] not in self.exclude:
            self.seen.setdefault(key[0], key[1])
        return t

    @property
    def bytes(self) -> int:
        return sum(self.seen.values())

    def __enter__(self) -> SavedForBackward:
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


# -- what a run holds ------------------------------------------------------------------------------
def _addresses(tensors) -> set[int]:
    return {key[0] for t in tensors if isinstance(t, torch.Tensor) and (key := _storage(t)) is not None}


def optimizers(algo: Algorithm) -> list[torch.optim.Optimizer]:
    """The optimisers an algorithm holds as attributes (each algorithm keeps its own)."""
    return [v for v in vars(algo).values() if isinstance(v, torch.optim.Optimizer)]


def optimizer_tensors(algo: Algorithm) -> list[torch.Tensor]:
    return [
        v
        for opt in optimizers(algo)
        for state in opt.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor)
    ]


def kept_tensors(algo: Algorithm, exclude: set[int]) -> list[torch.Tensor]:
    """Tensors an algorithm keeps in its own attributes between epochs, outside its net and
    optimisers (frozen-feature caches): found by walking its attributes, so that a new
    algorithm's cache is found without a hook."""
    found: dict[int, torch.Tensor] = {}

    def visit(obj: Any, depth: int) -> None:
        if depth > 5 or isinstance(obj, (nn.Module, torch.optim.Optimizer, torch.Generator, type)):
            return
        if isinstance(obj, torch.Tensor):
            key = _storage(obj)
            if key is not None and key[0] not in exclude:
                found.setdefault(key[0], obj)
        elif isinstance(obj, dict):
            for value in obj.values():
                visit(value, depth + 1)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                visit(value, depth + 1)
        elif isinstance(obj, Batches) or dataclasses.is_dataclass(obj):
            for value in vars(obj).values():
                visit(value, depth + 1)

    for name, value in vars(algo).items():
        if name not in ("net", "params", "info", "arch", "device"):
            visit(value, 0)
    return list(found.values())


def split_tensors(data: DataSplits) -> list[torch.Tensor]:
    return [t for split in (data.train, data.val, data.test) for t in (split.x, split.y)]


# -- the analysis -----------------------------------------------------------------------------------
@dataclass
class StageCount:
    stage: str
    train_flops_per_sample: float  # one steady-state training epoch, per training sample
    train_setup_flops_per_sample: float  # once per stage (caches, BatchNorm refill), per training sample
    eval_flops_per_sample: float  # one validation pass, per validation sample
    eval_setup_flops_per_sample: float  # once per stage (CaFo's validation feature cache)
    memory_bytes: dict[str, int]  # by MEMORY_PARTS, at the real splits' sizes
    cuda_step_peak_bytes: int | None = None  # the allocator's peak over the step, above what it held before

    @property
    def memory_total(self) -> int:
        return sum(self.memory_bytes.values())


@dataclass
class Analysis:
    stages: list[StageCount]
    infer_flops_per_sample: float
    batch_rows: int  # training rows counted per stage (one minibatch)
    val_rows: int
    test_rows: int
    memory_source: str  # how the parts were sized
    time_s: float  # what the analysis took (outside the measured fit)
    notes: list[str] = field(default_factory=list)

    def peak_stage(self) -> StageCount:
        return max(self.stages, key=lambda s: s.memory_total)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _head(split: Split, rows: int) -> Split:
    return Split(split.x[:rows], split.y[:rows])


def _sizes(data: DataSplits, batch_size: int) -> tuple[int, int, int]:
    """Rows counted from each split: one training minibatch; a validation and a test slice of
    another size, so that a cached tensor's rows tell which split it came from."""
    train = max(1, min(batch_size, len(data.train)))
    val = min(len(data.val), 32)
    if val == train:
        val = val - 1 if val > 1 else min(len(data.val), 2)
    test = min(len(data.test), batch_size)
    return train, max(val, 0), test


def analyse(
    build: Callable[[], Algorithm], data: DataSplits, *, max_epochs: int, rng: tuple[Callable, Callable] | None = None
) -> Analysis:
    """Count a copy of the algorithm (``build()`` makes it) stage by stage on one minibatch:
    FLOPs per sample of training, validation and inference, and memory by part. ``rng``:
    (save, restore) of the global RNGs; by default those of bpfree.engine.checkpoint."""
    if rng is None:
        device = data.train.x.device
        rng = (lambda: rng_state(device), lambda state: set_rng_state(state, device))
    saved = rng[0]()
    t0 = time.perf_counter()
    try:
        return _analyse(build(), data, max_epochs, t0)
    finally:
        rng[1](saved)
        if data.train.x.device.type == "cuda":
            torch.cuda.empty_cache()


def _analyse(algo: Algorithm, data: DataSplits, max_epochs: int, t0: float) -> Analysis:
    batch_size = int(getattr(algo.params, "batch_size", 128))
    rows, val_rows, test_rows = _sizes(data, batch_size)
    train, val, test = _head(data.train, rows), _head(data.val, val_rows), _head(data.test, test_rows)
    full = {rows: len(data.train), val_rows: len(data.val)}  # a cached tensor's rows -> its split's size
    batches = Batches(train, seed=algo.seed, augment=data.info.augment)
    cuda = train.x.device.type == "cuda"
    data_bytes = storage_bytes(split_tensors(data))
    stages = []
    notes = [] if rows >= batch_size else [f"training split smaller than one batch: {rows} rows counted"]
    for stage in algo.stages():
        algo.begin_stage(stage, EarlyStopping(max_epochs=max_epochs).stage_budget(stage.max_epochs))
        state = list(algo.net.parameters()) + list(algo.net.buffers())
        fixed = _addresses(state)
        flops, evals = [], []
        activations, step_peak = 0, None
        for _ in range(2):  # the first epoch does the stage's one-off work, the second is steady
            before = torch.cuda.memory_allocated(train.x.device) if cuda else 0
            if cuda:
                torch.cuda.reset_peak_memory_stats(train.x.device)
            with flop_count() as counted, SavedForBackward(fixed | _addresses(split_tensors(data))) as saved:
                algo.train_epoch(stage, batches)
            if cuda:
                step_peak = max(step_peak or 0, torch.cuda.max_memory_allocated(train.x.device) - before)
            activations = max(activations, saved.bytes)
            flops.append(counted.flops)
            with torch.no_grad(), flop_count() as counted:
                algo.evaluate(stage, val)
            evals.append(counted.flops)
        exclude = fixed | _addresses(optimizer_tensors(algo)) | _addresses(split_tensors(data))
        exclude |= _addresses([train.x, train.y, val.x, val.y])
        cached = 0
        for t in kept_tensors(algo, exclude):
            n = int(t.shape[0]) if t.dim() else 0
            scale = full[n] / n if n in full and n else 1.0
            cached += round(storage_bytes([t]) * scale)
        grads = [p.grad for p in algo.net.parameters() if p.grad is not None]
        memory = {
            "weights": storage_bytes(state),
            "gradients": storage_bytes(grads),
            "optimizer": storage_bytes(optimizer_tensors(algo)),
            "activations": activations,
            "cached_features": cached,
            "data": data_bytes,
        }
        stages.append(
            StageCount(
                stage.name,
                train_flops_per_sample=flops[1] / rows,
                train_setup_flops_per_sample=max(flops[0] - flops[1], 0) / rows,
                eval_flops_per_sample=evals[1] / max(val_rows, 1),
                eval_setup_flops_per_sample=max(evals[0] - evals[1], 0) / max(val_rows, 1),
                memory_bytes=memory,
                cuda_step_peak_bytes=step_peak,
            )
        )
        algo.end_stage(stage)
    algo.net.eval()
    with torch.no_grad(), flop_count() as counted:
        algo.predict(test.x)
    source = "tensor sizes" + ("; CUDA allocator peak of each counted step beside them" if cuda else "")
    return Analysis(
        stages,
        counted.flops / max(test_rows, 1),
        rows,
        val_rows,
        test_rows,
        source,
        time.perf_counter() - t0,
        notes,
    )


# -- the run's costs -----------------------------------------------------------------------------
def epoch_flops(analysis: Analysis, stages: list[str], n_train: int, n_val: int) -> list[tuple[float, float]]:
    """(training, validation) FLOPs of each epoch of a history whose stages are ``stages``
    (one name per epoch, in order): a stage's first epoch carries its one-off work."""
    by_name = {s.stage: s for s in analysis.stages}
    out, previous = [], None
    for name in stages:
        count = by_name.get(name)
        if count is None:
            out.append((float("nan"), float("nan")))
            previous = name
            continue
        first = name != previous
        train = n_train * (count.train_flops_per_sample + (count.train_setup_flops_per_sample if first else 0.0))
        val = n_val * (count.eval_flops_per_sample + (count.eval_setup_flops_per_sample if first else 0.0))
        out.append((train, val))
        previous = name
    return out


def run_costs(
    analysis: Analysis,
    stages: list[str],
    n_train: int,
    n_val: int,
    train_time_s: float,
    energy_j: float | None,
    energy_source: str | None,
) -> dict[str, Any]:
    """The flat fields of metrics.json: FLOPs of the run, per sample and by stage; achieved
    FLOP/s over the fit window (training and validation, as its time and energy); energy per
    FLOP where the energy was measured (not an estimate); the memory breakdown of the stage
    that holds the most."""
    per_epoch = epoch_flops(analysis, stages, n_train, n_val)
    train = sum(t for t, _ in per_epoch)
    evals = sum(v for _, v in per_epoch)
    total = train + evals
    by_stage: dict[str, dict[str, Any]] = {}
    for name, (t, v) in zip(stages, per_epoch):
        entry = by_stage.setdefault(name, {"epochs": 0, "train_flops": 0.0, "eval_flops": 0.0})
        entry["epochs"] += 1
        entry["train_flops"] += t
        entry["eval_flops"] += v
    for count in analysis.stages:
        entry = by_stage.setdefault(count.stage, {"epochs": 0, "train_flops": 0.0, "eval_flops": 0.0})
        entry.update(
            train_flops_per_sample=count.train_flops_per_sample,
            train_setup_flops_per_sample=count.train_setup_flops_per_sample,
            eval_flops_per_sample=count.eval_flops_per_sample,
            eval_setup_flops_per_sample=count.eval_setup_flops_per_sample,
            memory_mb={k: v / MB for k, v in count.memory_bytes.items()},
            cuda_step_peak_mb=None if count.cuda_step_peak_bytes is None else count.cuda_step_peak_bytes / MB,
        )
    measured = energy_j is not None and energy_source is not None and "estimate" not in energy_source
    peak = analysis.peak_stage()
    samples = n_train * len(stages)
    fields: dict[str, Any] = {
        "train_flops_per_sample": train / samples if samples else None,
        "infer_flops_per_sample": analysis.infer_flops_per_sample,
        "train_flops": train,
        "eval_flops": evals,
        "run_flops": total,
        "achieved_flops_per_s": total / train_time_s if train_time_s > 0 else None,
        "energy_per_flop_j": energy_j / total if measured and total > 0 else None,
        "energy_per_flop_source": energy_source if measured and total > 0 else None,
        "flops_by_stage": by_stage,
        "memory_breakdown_stage": peak.stage,
        "memory_breakdown_source": analysis.memory_source,
        "memory_breakdown_total_mb": peak.memory_total / MB,
        "hardware_analysis_s": analysis.time_s,
    }
    for part in MEMORY_PARTS:
        fields[f"memory_{part}_mb"] = peak.memory_bytes[part] / MB
    return fields
