"""The interface every training algorithm implements, and how it is built by name.

An algorithm trains in one or more *stages* (BP: one; MF: one per layer; CaFo: DFA then
predictors). The training loop runs each stage with the run's early-stopping policy, so
layer-wise and stage-wise methods need no special case in the loop:

    for stage in algo.stages():
        algo.begin_stage(stage, max_epochs)
        repeat: algo.train_epoch(stage, batches); algo.evaluate(stage, val)  (early stopping)
        algo.end_stage(stage)
    algo.predict(test.x)
"""

from __future__ import annotations

import dataclasses
import math
import typing
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bpfree.core.errors import BpfreeError
from bpfree.core.registry import ALGORITHMS
from bpfree.data import DatasetInfo, Split
from bpfree.data.batches import Batches, eval_batches
from bpfree.models import ArchSpec, parse_arch


@dataclass(frozen=True)
class Stage:
    name: str
    max_epochs: int | None = None  # None: the run's early-stopping budget
    early_stopping: bool = True  # False: run exactly max_epochs (e.g. a closed-form solve: 1)
    restore_best: bool = True  # False: the stage keeps its last epoch even if the policy restores
    # parts that stop one by one (CaFo's predictors under ``stopping: per-predictor``): each
    # has its own early stopping on its own ``Evaluation.parts`` entry, and once it stops the
    # loop calls ``Algorithm.stop_part``; the stage ends when every part has stopped. Such a
    # stage keeps each part's last epoch (no restore)
    parts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float
    parts: tuple[Evaluation, ...] = ()  # per part of a stage with ``Stage.parts``, in order


@dataclass(frozen=True)
class MinibatchParams:
    """What every algorithm's Params share: how the training split is cut into minibatches.
    Subclasses may give ``batch_size`` another default."""

    batch_size: int = 128
    # drop each epoch's last partial batch, as the paper's training loaders do (DataLoader
    # drop_last=True); bpfree's default trains on every sample of every epoch
    drop_last: bool = False


class Algorithm(ABC):
    """Subclasses set ``Params`` (a dataclass of hyperparameters, defaults = the paper's),
    ``arch_kinds`` (architectures it runs on) and ``default_arch``."""

    name: ClassVar[str]
    Params: ClassVar[type]
    arch_kinds: ClassVar[tuple[str, ...]]
    default_arch: ClassVar[str]

    def __init__(self, arch: ArchSpec, info: DatasetInfo, params: Any, device: torch.device, seed: int) -> None:
        self.arch = arch
        self.info = info
        self.params = params
        self.device = device
        self.seed = seed
        # every trainable or frozen tensor lives in ``self.net`` (state_dict, restore best)
        self.net = nn.Module()

    # -- the contract -------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        return [Stage("train")]

    def begin_stage(self, stage: Stage, max_epochs: int) -> None:
        """Called before a stage's first epoch; ``max_epochs`` is the budget in force."""

    @abstractmethod
    def train_epoch(self, stage: Stage, batches: Batches) -> float:
        """One pass over the training data; returns the mean training loss."""

    @abstractmethod
    def evaluate(self, stage: Stage, split: Split) -> Evaluation:
        """The stage's validation loss and accuracy (what early stopping watches)."""

    def end_stage(self, stage: Stage) -> None:
        """Called once a stage has stopped and its best weights are restored."""

    def stop_part(self, stage: Stage, index: int) -> None:
        """Part ``index`` of ``stage.parts`` has stopped: it trains no more (its weights stay
        as they are). Only stages with parts call it."""
        raise NotImplementedError(f"{self.name} has no parts to stop")

    @abstractmethod
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores (N, C) of the final model; argmax is the prediction."""

    # -- shared helpers -----------------------------------------------------------------
    @property
    def drop_last(self) -> bool:
        """Whether an epoch drops its last partial batch (``MinibatchParams.drop_last``)."""
        return bool(getattr(self.params, "drop_last", False))

    @torch.no_grad()
    def accuracy(self, split: Split, batch_size: int = 2048) -> float:
        self.net.eval()
        correct = sum(int((self.predict(x).argmax(1) == y).sum()) for x, y in eval_batches(split, batch_size))
        return correct / max(len(split), 1)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights and buffers, plus ``extra_state``."""
        return {"net": self.net.state_dict(), "extra": self.extra_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.load_extra_state(state["extra"])

    def extra_state(self) -> dict[str, Any]:
        """Optimisers, schedules and the like (override where there are any)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        pass


@torch.no_grad()
def evaluate_scores(score_fn, split: Split, batch_size: int = 2048) -> Evaluation:
    """Mean cross-entropy and accuracy of ``score_fn(x) -> logits`` over a split, batched."""
    total_loss, correct = 0.0, 0
    for x, y in eval_batches(split, batch_size):
        logits = score_fn(x)
        total_loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    n = max(len(split), 1)
    return Evaluation(total_loss / n, correct / n)


def mean_loss(losses: Iterator[torch.Tensor] | list[torch.Tensor]) -> float:
    """Mean of per-batch losses, read back from the device once per epoch (not per batch)."""
    stacked = torch.stack([loss.detach() for loss in losses])
    return float(stacked.mean()) if len(stacked) else float("nan")


# -- building by name ---------------------------------------------------------------------
def params_from_mapping(algorithm: str, mapping: Mapping[str, Any] | None) -> Any:
    """The algorithm's Params dataclass from a mapping; unknown keys and wrong types fail
    with a message that names the valid keys."""
    klass = ALGORITHMS.get(algorithm).Params
    fields = {f.name: f for f in dataclasses.fields(klass)}
    hints = typing.get_type_hints(klass)
    values = {}
    for key, value in (mapping or {}).items():
        if key not in fields:
            raise BpfreeError(f"unknown parameter {key!r} for algorithm {algorithm!r}; valid: {', '.join(fields)}")
        values[key] = _coerce(algorithm, key, value, hints[key])
    params = klass(**values)
    for f in dataclasses.fields(params):
        problem = _out_of_range(f.name, getattr(params, f.name))
        if problem:
            raise BpfreeError(f"parameter {f.name!r} of algorithm {algorithm!r} {problem}")
    return params


# Ranges every algorithm's Params share, by what a field's name says it is: a rate, a size or
# an epoch count must be positive; a penalty, a momentum or a loss weight must not be
# negative, and a momentum stays below 1. Checked before any data is read, so a mistyped
# params file fails in one line instead of as a traceback from the optimiser mid-run.
# (tests/test_reliability.py checks that every numeric field of every algorithm has a range.)
RANGES = [
    (lambda n: n == "batch_size" or n.endswith("epochs") or n.startswith("epochs_"), "> 0", lambda v: v > 0),
    (lambda n: n == "lr" or n.endswith("_lr") or n == "eps", "> 0", lambda v: v > 0),
    (lambda n: "momentum" in n, "in [0, 1)", lambda v: 0 <= v < 1),
    (lambda n: "weight_decay" in n or n.endswith("_weight") or n.endswith("_lambda"), ">= 0", lambda v: v >= 0),
]


def _out_of_range(name: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    for applies, text, ok in RANGES:
        if applies(name) and not ok(value):
            return f"must be {text}, got {value!r}"
    return None


def _coerce(algorithm: str, key: str, value: Any, hint: Any) -> Any:
    if typing.get_origin(hint) is typing.Literal:
        if value in typing.get_args(hint):
            return value
    else:
        allowed = typing.get_args(hint) or (hint,)  # ``int | None`` -> (int, NoneType)
        if value is None and type(None) in allowed:
            return None
        if isinstance(value, bool):  # YAML's true is no learning rate
            if bool in allowed:
                return value
        elif isinstance(value, int) and int in allowed:
            return value
        elif isinstance(value, (int, float, str)) and float in allowed:
            number = _float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string: take it
            if number is not None and math.isfinite(number):
                return number
        elif isinstance(value, str) and str in allowed:
            return value
    raise BpfreeError(f"parameter {key!r} of algorithm {algorithm!r} must be {_describe(hint)}, got {value!r}")


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (ValueError, OverflowError):
        return None


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    names = [getattr(a, "__name__", str(a)) for a in (typing.get_args(hint) or (hint,))]
    return " or ".join("a finite float" if n == "float" else n for n in names)


def check_trainable(algorithm: str, arch: ArchSpec) -> type[Algorithm]:
    """The algorithm's class, if it can train ``arch`` (the one place this is decided)."""
    klass = ALGORITHMS.get(algorithm)
    if arch.kind not in klass.arch_kinds:
        raise BpfreeError(
            f"algorithm {algorithm!r} cannot train {arch} (its architectures: {', '.join(klass.arch_kinds)}; "
            f"e.g. {klass.default_arch})"
        )
    return klass


def build_algorithm(
    name: str,
    arch: ArchSpec | None,
    info: DatasetInfo,
    params: Mapping[str, Any] | None = None,
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> Algorithm:
    arch = arch or parse_arch(ALGORITHMS.get(name).default_arch)
    klass = check_trainable(name, arch)
    return klass(arch, info, params_from_mapping(name, params), torch.device(device), seed)
