"""A training run's checkpoint: written atomically after every epoch, read back to resume.

A file that cannot be read back (truncated, corrupt, from another bpfree) is set aside as
``NAME.corrupt-TIMESTAMP`` with one line on stderr, and the run starts afresh: never silently
overwritten, never a crash loop."""

from __future__ import annotations

import io
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bpfree.io import write_bytes_atomic

FORMAT = 1
# test-only hook: SIGKILL this process right after the checkpoint of epoch N is written, or
# (with "write:N") in the middle of writing it, or (with "mid:N") half-way through the N-th
# pass over the training data, to test that a killed run resumes exactly
KILL_HOOK = "BPFREE_TEST_KILL_AT_EPOCH"


class Checkpoint:
    """``identity``: what the run is (algorithm, arch, params, seed, ...). A checkpoint that
    another configuration wrote in the same directory is set aside, not resumed: its
    optimiser state would silently bring back the old learning rate, say."""

    def __init__(self, path: str | Path, identity: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.identity = identity
        self.set_aside: Path | None = None  # where a corrupt or foreign checkpoint went, if one did
        self._loaded: dict[str, Any] | None = None
        self._was_loaded = False

    def load(self) -> dict[str, Any] | None:
        """The state to resume from, or None; read once (later calls give the same)."""
        if not self._was_loaded:
            self._loaded, self._was_loaded = self._load(), True
        return self._loaded

    def _load(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=False)
            if not isinstance(state, dict) or state.get("format") != FORMAT:
                raise ValueError("not a bpfree checkpoint of this version")
        except Exception as err:  # noqa: BLE001  (any unreadable file is set aside)
            return self._set_aside("corrupt", f"is unreadable ({type(err).__name__})")
        if self.identity is not None and state.get("identity") != self.identity:
            stored = state.get("identity") or {}
            differ = sorted(k for k in {*stored, *self.identity} if stored.get(k) != self.identity.get(k))
            return self._set_aside("other-run", f"is of another configuration ({', '.join(differ)} differ)")
        return state

    def _set_aside(self, why: str, what: str) -> None:
        self.set_aside = self.path.with_name(f"{self.path.name}.{why}-{time.strftime('%Y%m%dT%H%M%S')}")
        os.replace(self.path, self.set_aside)
        print(
            f"bpfree: checkpoint {self.path} {what}; set aside as {self.set_aside.name}, starting afresh",
            file=sys.stderr,
        )
        return None

    def save(self, state: dict[str, Any], epoch: int) -> None:
        buffer = io.BytesIO()
        torch.save({"format": FORMAT, "identity": self.identity, **state}, buffer)
        data = buffer.getvalue()
        hook = os.environ.get(KILL_HOOK, "")
        if hook == f"write:{epoch}":  # die half-way through the temporary file
            tmp = self.path.with_name(f".{self.path.name}.partial.tmp")
            tmp.write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        write_bytes_atomic(self.path, data)
        if hook == str(epoch):
            os.kill(os.getpid(), signal.SIGKILL)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def arm_mid_pass_kill(batches) -> None:
    """Test-only (``KILL_HOOK`` "mid:N"): SIGKILL this process half-way through the N-th pass
    over ``batches`` (a Batches), i.e. in the middle of an epoch's training."""
    hook = os.environ.get(KILL_HOOK, "")
    if not hook.startswith("mid:"):
        return
    target, passes, epoch = int(hook[4:]), [0], batches.epoch

    def killing_epoch(batch_size: int, **kwargs):
        passes[0] += 1
        half = -(-len(batches) // batch_size) // 2
        for i, item in enumerate(epoch(batch_size, **kwargs)):
            if passes[0] == target and i == half:
                os.kill(os.getpid(), signal.SIGKILL)
            yield item

    batches.epoch = killing_epoch


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
