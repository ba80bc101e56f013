"""A training run's checkpoint: written atomically after an epoch, read back to resume.

The file holds plain data only (tensors, numbers, strings, lists, dicts) and is read with
``torch.load(weights_only=True)``: unpickling it can build no other object, so a checkpoint
planted in a run folder cannot run code. A file that cannot be read back that way (truncated,
corrupt, from another bpfree, or holding anything but plain data) is set aside as
``NAME.corrupt-TIMESTAMP`` with one line on stderr and the run starts afresh: never silently
overwritten, never a crash loop. One that another run (another spec, or another type of
device) left in the same directory is set aside as ``NAME.other-run-TIMESTAMP``."""

from __future__ import annotations

import io
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bpfree.io import write_bytes_atomic

FORMAT = 2  # 2: plain data, read with weights_only=True


@dataclass
class StopperState:
    best: float
    best_epoch: int
    bad_epochs: int


@dataclass
class CheckpointState:
    """Where a fit stood after an epoch: enough to continue as if it had never stopped."""

    stage_index: int  # the stage running when this was written
    stage_epochs: int  # its epochs so far
    stopper: StopperState
    best_state: dict[str, Any] | None  # that stage's best weights (restore_best)
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
        return cls(**{**data, "stopper": StopperState(**data["stopper"])})


class Checkpoint:
    """``identity``: what the run is (its spec's identity, the device type included), as
    :meth:`bpfree.spec.RunSpec.identity` gives it. A checkpoint of another identity in the
    same directory is set aside, not resumed: its optimiser state would silently bring back
    the old learning rate, and another device's RNG states do not fit this one."""

    def __init__(self, path: str | Path, identity: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.identity = identity
        self.set_aside: Path | None = None  # where a corrupt or foreign checkpoint went, if one did
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
