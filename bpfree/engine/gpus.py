"""One GPU per measured job, where a machine has several: a job that asks for ``auto`` or
``cuda`` claims the first free board by an exclusive lock, held until the process ends, and
computes there. The workflow lets as many GPU jobs run at once as there are boards
(``resources: gpu=1`` each), so no two runs share a board, and neither's time or energy
includes the other's. On SLURM each job sees only its own GPU(s): nothing to claim."""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

LOCK_DIR_ENV = "BPFREE_GPU_LOCK_DIR"
_held: dict[int, int] = {}  # slot -> open file descriptor (the lock lives as long as it)


def lock_dir() -> Path:
    default = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"bpfree-gpu-locks-{os.getuid()}"
    return Path(os.environ.get(LOCK_DIR_ENV) or default)


def claim_slot(n: int, directory: Path | None = None, poll_s: float = 2.0, clock=time.monotonic) -> int:
    """The index of a board among ``n`` that no other process holds, locked for this one
    (the same index again if this process already holds one). Waits while all are taken."""
    if _held:
        return next(iter(_held))
    directory = directory or lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    while True:
        for slot in range(n):
            fd = os.open(directory / f"gpu{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _held[slot] = fd
            return slot
        time.sleep(poll_s)


def release() -> None:
    for fd in _held.values():
        os.close(fd)
    _held.clear()
