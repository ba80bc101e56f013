"""A training run's checkpoint: written atomically after an epoch, read back to resume.

The file holds plain data only (tensors, numbers, strings, lists, dicts) and is read with
``torch.load(weights_only=True)``: unpickling it can build no other object, so a checkpoint
planted in a run folder cannot run code. A file that cannot be read back that way (truncated,
corrupt, from another bpfree, or holding anything but plain data) is set aside as
``NAME.corrupt-TIMESTAMP`` with one line on stderr and the run starts afresh: never silently
overwritten, never a crash loop. So is one that reads but does not fit the run it would
restore (:func:`check_fits`: the model's tensors, the optimisers' state, the stages, the
epochs, the history and every RNG state, by shape, type and range), checked before anything
is restored. One that another run (another spec, or another type of device) left in the same
directory is set aside as ``NAME.other-run-TIMESTAMP``."""

from __future__ import annotations

import copy
import io
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bpfree.core.io import write_bytes_atomic
from bpfree.engine.stopping import Selections, StageStopping, selections_reported, stage_budget
from bpfree.measure import WindowResult

FORMAT = 3  # 2: plain data, read with weights_only=True; 3: the stage's handlers' states


@dataclass
class CheckpointState:
    """Where a fit stood after an epoch: enough to continue as if it had never stopped."""

    stage_index: int  # the stage running when this was written
    stage_epochs: int  # its epochs so far
    # the stage's handlers' states (bpfree.engine.stopping): "stopping", its stoppers' (one per
    # part); "selections", each kept selection's best value, epoch and weights
    handlers: dict[str, Any]
    algorithm: dict[str, Any]  # Algorithm.state_dict(): weights, optimisers, extra state
    batches: dict[str, Any]  # the batch-order generator
    rng: dict[str, Any]  # python, numpy, torch and the device's own RNG (rng_state)
    history: list[dict[str, Any]]  # EpochRecord fields per epoch
    train_time_s: float  # over every piece so far
    pieces: int  # processes the fit has run in so far (this one included)
    checkpoints: int  # written so far (this one included)
    checkpoint_time_s: float  # spent writing them
    measured: dict[str, Any] | None = None  # what the meter and CodeCarbon saw so far
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckpointState:
        return cls(**data)


class Checkpoint:
    """``identity``: what the run is (its spec's identity, the device type included), as
    :meth:`bpfree.core.spec.RunSpec.identity` gives it. A checkpoint of another identity in the
    same directory is set aside, not resumed: its optimiser state would silently bring back
    the old learning rate, and another device's RNG states do not fit this one."""

    def __init__(
        self,
        path: str | Path,
        identity: dict[str, Any] | None = None,
        check: Callable[[CheckpointState], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.identity = identity
        self.set_aside: Path | None = None  # where a corrupt or foreign checkpoint went, if one did
        # raises ValueError if a state read does not fit the run (check_fits)
        self.check = check
        self._loaded: CheckpointState | None = None
        self._was_loaded = False

    def load(self) -> CheckpointState | None:
        """The state to resume from, or None; read once (later calls give the same)."""
        if not self._was_loaded:
            self._loaded, self._was_loaded = self._load(), True
        return self._loaded

    def _load(self) -> CheckpointState | None:
        if not self.path.exists():
            return None
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise ValueError("not a bpfree checkpoint of this version")
            identity = data.pop("identity")
            data.pop("format")
            state = CheckpointState.from_dict(data)
        except Exception as err:  # noqa: BLE001  (any unreadable or unsafe file is set aside)
            return self._set_aside("corrupt", f"is unreadable as plain data ({type(err).__name__})")
        if self.identity is not None and identity != self.identity:
            stored = identity if isinstance(identity, dict) else {}
            differ = sorted(k for k in {*stored, *self.identity} if stored.get(k) != self.identity.get(k))
            return self._set_aside("other-run", f"is of another run ({', '.join(differ)} differ)")
        if self.check is not None:
            try:
                self.check(state)
            except Exception as err:  # noqa: BLE001  (whatever does not fit is set aside, not restored)
                reason = " ".join(str(err).split())[:300] or type(err).__name__
                return self._set_aside("corrupt", f"does not fit this run ({reason})")
        return state

    def _set_aside(self, why: str, what: str) -> None:
        self.set_aside = self.path.with_name(f"{self.path.name}.{why}-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(self.path, self.set_aside)
        print(
            f"bpfree: checkpoint {self.path} {what}; set aside as {self.set_aside.name}, starting afresh",
            file=sys.stderr,
        )
        return None

    def encode(self, state: CheckpointState) -> bytes:
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, "identity": self.identity, **state.to_dict()}, buffer)
        return buffer.getvalue()

    def save(self, state: CheckpointState, epoch: int) -> None:
        """Written atomically (``epoch``: the run's epochs so far, for whoever wraps this)."""
        write_bytes_atomic(self.path, self.encode(state))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def rng_state(device: torch.device) -> dict[str, Any]:
    """Every RNG a fit draws from, as plain data: Python's, NumPy's (its key as a tensor),
    torch's CPU generator and, on a GPU, that device's own generator only."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "key": torch.from_numpy(key.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "device" in state:
        torch.cuda.set_rng_state(state["device"], device)


# -- does a checkpoint fit the run it would restore? ------------------------------------------
def check_fits(state: CheckpointState, algo: Any, policy: Any, record_type: type, device: Any = None) -> None:
    """Raise ValueError, naming the first thing, if ``state`` does not fit ``algo`` under the
    early-stopping ``policy``: the stage and its epochs in range, the stage's handlers' states
    (each stopper's numbers, each selection's epoch and weights), the history's rows (``record_type``: the fit's EpochRecord), the model's tensors (names,
    shapes, dtypes), the batch order's and every RNG's state, and the algorithm's whole state
    as restored on a copy of ``algo`` at that stage (its optimisers' tensors against their
    parameters). Nothing of the run is touched."""
    stages = algo.stages()
    budgets = [stage_budget(stage, policy) for stage in stages]
    index = _int(state.stage_index, "stage_index", 0, len(stages) - 1)
    _int(state.stage_epochs, "stage_epochs", 0, budgets[index])
    net = algo.net.state_dict()
    stage = stages[index]
    if not isinstance(state.handlers, Mapping) or set(state.handlers) != {"stopping", "selections"}:
        raise ValueError("handlers is not a stage's handlers' states (stopping, selections)")
    StageStopping(stage, policy).check_state(state.handlers["stopping"])
    selections = Selections(stage, policy, selections_reported(stages))
    selections.check_state(state.handlers["selections"], lambda weights, where: _same(weights, net, where))
    _history(state.history, record_type, {stage.name for stage in stages}, state.stage_epochs)
    for name, low in (("train_time_s", 0.0), ("checkpoint_time_s", 0.0)):
        value = getattr(state, name)
        if not _is_number(value) or not math.isfinite(value) or value < low:
            raise ValueError(f"{name} is {value!r}, not a finite number >= {low}")
    _int(state.pieces, "pieces", 1, 10**6)
    _int(state.checkpoints, "checkpoints", 1, 10**9)
    if not isinstance(state.extra, Mapping):
        raise ValueError(f"extra is a {type(state.extra).__name__}, not a mapping")
    _measured(state.measured)
    if not isinstance(state.algorithm, Mapping) or "net" not in state.algorithm:
        raise ValueError("algorithm is not an algorithm's state (no net)")
    _same(state.algorithm["net"], net, "algorithm.net")
    _same(state.batches, {"generator": torch.Generator().get_state()}, "batches")
    _rng(state.rng, device if device is not None else algo.device)
    _restore_on_a_copy(state, algo, stages, budgets)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(value: Any, name: str, low: int, high: int | None) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} is {value!r}, not an integer")
    if value < low or (high is not None and value > high):
        valid = f"{low} to {high}" if high is not None else f">= {low}"
        raise ValueError(f"{name} is {value}, valid: {valid}")
    return value


def _history(rows: Any, record_type: type, stage_names: set[str], stage_epochs: int) -> None:
    if not isinstance(rows, list):
        raise ValueError(f"history is a {type(rows).__name__}, not a list")
    if len(rows) < stage_epochs:
        raise ValueError(f"history has {len(rows)} epochs, fewer than the stage's {stage_epochs}")
    kinds = {f.name: f.type for f in fields(record_type)}
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or set(row) != set(kinds):
            raise ValueError(f"history[{i}] is not an epoch's record ({', '.join(kinds)})")
        _int(row["epoch"], f"history[{i}].epoch", i + 1, i + 1)
        if row["stage"] not in stage_names:
            raise ValueError(
                f"history[{i}].stage is {row['stage']!r}; the algorithm's: {', '.join(sorted(stage_names))}"
            )
        for name in ("train_loss", "val_loss", "val_accuracy", "epoch_time_s"):
            if not _is_number(row[name]):
                raise ValueError(f"history[{i}].{name} is {row[name]!r}, not a number")
        if not isinstance(row["extra"], Mapping):
            raise ValueError(f"history[{i}].extra is not a mapping")


def _measured(measured: Any) -> None:
    if measured is None:
        return
    if not isinstance(measured, Mapping):
        raise ValueError(f"measured is a {type(measured).__name__}, not a mapping")

    for key in ("windows", "carbon_rows", "summary"):
        items = measured.get(key, [])
        if not isinstance(items, (list, tuple)) or not all(isinstance(item, Mapping) for item in items):
            raise ValueError(f"measured.{key} is not a list of mappings")
    for i, window in enumerate(measured.get("windows", [])):
        try:
            WindowResult.from_dict(window)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"measured.windows[{i}] is no measurement window ({type(err).__name__})") from None


def _same(value: Any, template: Any, where: str) -> None:
    """``value`` has ``template``'s structure: the same keys, lengths, types, and tensors of
    the same shape and dtype."""
    if isinstance(template, torch.Tensor):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{where} is a {type(value).__name__}, not a tensor")
        if value.shape != template.shape or value.dtype != template.dtype:
            raise ValueError(
                f"{where} is {value.dtype} {list(value.shape)}, the run's is {template.dtype} {list(template.shape)}"
            )
    elif isinstance(template, Mapping):
        if not isinstance(value, Mapping):
            raise ValueError(f"{where} is a {type(value).__name__}, not a mapping")
        if set(value) != set(template):
            odd = sorted(map(str, set(value) ^ set(template)))[:3]
            raise ValueError(f"{where} has other keys than the run's ({', '.join(odd)} ...)")
        for key in template:
            _same(value[key], template[key], f"{where}[{key!r}]")
    elif isinstance(template, (list, tuple)):
        if not isinstance(value, (list, tuple)) or len(value) != len(template):
            raise ValueError(f"{where} is not a sequence of {len(template)}")
        for i, (item, model) in enumerate(zip(value, template)):
            _same(item, model, f"{where}[{i}]")
    elif isinstance(template, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where} is {value!r}, not a boolean")
    elif isinstance(template, int):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{where} is {value!r}, not an integer")
    elif isinstance(template, float):
        if not _is_number(value):
            raise ValueError(f"{where} is {value!r}, not a number")
    elif isinstance(template, str) and not isinstance(value, str):
        raise ValueError(f"{where} is {value!r}, not text")


def _rng(state: Any, device: torch.device) -> None:
    """Every RNG state has the shape this device's own has, and each is accepted by a
    generator of its kind (a throwaway one: no RNG of the run is set)."""
    template = rng_state(device)
    if not isinstance(state, Mapping) or set(state) != set(template):
        raise ValueError(
            f"rng holds {sorted(map(str, state)) if isinstance(state, Mapping) else state!r}, not {sorted(template)}"
        )
    python = state["python"]
    if not isinstance(python, (list, tuple)) or len(python) != 3:
        raise ValueError("rng.python is no Python RNG state")
    version, internal, gauss = python
    _same(internal, template["python"][1], "rng.python")
    if gauss is not None and not _is_number(gauss):
        raise ValueError("rng.python is no Python RNG state")
    _same(state["numpy"], template["numpy"], "rng.numpy")
    _same(state["torch"], template["torch"], "rng.torch")
    if "device" in template:
        _same(state["device"], template["device"], "rng.device")
    try:
        random.Random().setstate((version, tuple(internal), gauss))
        n = state["numpy"]
        np.random.RandomState().set_state(
            (n["kind"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
        )
        torch.Generator().set_state(state["torch"])
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"an RNG state is refused by its generator ({type(err).__name__}: {err})") from None


def _restore_on_a_copy(state: CheckpointState, algo: Any, stages: list, budgets: list[int]) -> None:
    """The algorithm's state restored on a copy of ``algo``, replayed to the checkpoint's
    stage as the fit would; the optimisers' tensors then checked against their parameters.
    The global RNGs are put back afterwards (a stage's start may draw)."""
    saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        try:
            trial = copy.deepcopy(algo)
        except Exception:  # noqa: BLE001  (an algorithm that cannot be copied: the checks above stand)
            return
        for stage, budget in zip(stages[: state.stage_index], budgets):
            trial.begin_stage(stage, budget)
            trial.end_stage(stage)
        trial.begin_stage(stages[state.stage_index], budgets[state.stage_index])
        try:
            trial.load_state_dict(state.algorithm)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"the algorithm's state does not load ({type(err).__name__}: {err})") from None
        for name, optimizer in vars(trial).items():
            if isinstance(optimizer, torch.optim.Optimizer):
                _optimizer_fits(optimizer, name)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
        torch.set_rng_state(saved[2])


def _optimizer_fits(optimizer: torch.optim.Optimizer, name: str) -> None:
    for group in optimizer.param_groups:
        for number, param in enumerate(group["params"]):
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    raise ValueError(
                        f"{name} state {key!r} of parameter {number} is {list(value.shape)}, the parameter "
                        f"{list(param.shape)}"
                    )
                if isinstance(value, torch.Tensor) and value.dim() > 0 and not value.dtype.is_floating_point:
                    raise ValueError(f"{name} state {key!r} of parameter {number} is {value.dtype}, not a float")
