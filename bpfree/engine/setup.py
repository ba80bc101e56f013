"""A run's process before its first epoch: the seeds, the device (a GPU claimed where there are
several), torch's CPU threads."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from bpfree.core.errors import BpfreeError
from bpfree.engine.gpus import claim_slot


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | None) -> torch.device:
    """``auto`` is a GPU if there is one; ``auto`` or ``cuda`` on a machine with several GPUs
    claims one that no other bpfree process holds (bpfree.engine.gpus), so parallel jobs never share."""
    if device in (None, "auto"):
        if not torch.cuda.is_available():
            return torch.device("cpu")
        device = "cuda"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise BpfreeError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N") from None
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise BpfreeError(f"device {device!r} asked for, but CUDA is not available here; use cpu or auto")
    count = torch.cuda.device_count()
    if dev.index is None:
        if count > 1:
            return torch.device("cuda", claim_slot(count))
        return torch.device("cuda", 0)
    if dev.index >= count:
        raise BpfreeError(
            f"device {device!r} asked for, but {count} GPU(s) are visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); valid: cuda:0 to "
            f"cuda:{count - 1}"
        )
    return dev


def set_threads(threads: int | None) -> None:
    """torch's CPU threads for this process; None keeps torch's default (every core). Small
    models run faster on one thread, and two one-thread jobs on two cores don't contend."""
    if threads is None:
        return
    if threads < 1:
        raise BpfreeError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
