"""Numeric precision of the matrix work, one knob: ``fp32`` (default: the paper's numbers),
``tf32`` (CUDA matmuls and convolutions in TensorFloat-32, ~10-bit mantissa; float32 storage),
``bf16`` (autocast: matmuls and convolutions in bfloat16, reductions and losses in float32)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from bpfree.errors import BpfreeError

PRECISIONS = ("fp32", "tf32", "bf16")


def check_precision(precision: object, device: torch.device | None = None) -> str:
    """``precision`` if it is one of PRECISIONS (and runs on ``device``, when given)."""
    if precision not in PRECISIONS:
        raise BpfreeError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "tf32" and device is not None and device.type != "cuda":
        raise BpfreeError("precision tf32 needs a CUDA device; use fp32 or bf16 on the CPU")
    return precision  # type: ignore[return-value]


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    check_precision(precision, device)
    if precision == "fp32":
        yield
    elif precision == "tf32":
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    else:
        # no cast cache: it lives until the outermost autocast region exits, and this region
        # spans many optimiser steps, so cached bfloat16 copies of the weights would go stale
        # (measured: nothing learns)
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
            yield
