"""Numeric precision of the matrix work, one knob: ``fp32`` (default: the paper's numbers),
``tf32`` (CUDA matmuls and convolutions in TensorFloat-32, ~10-bit mantissa; float32 storage),
``bf16`` (autocast: matmuls and convolutions in bfloat16, reductions and losses in float32).

torch's own defaults are not fp32 everywhere: cuDNN convolutions may use TF32 unless
``torch.backends.cudnn.allow_tf32`` is False, so ``fp32`` turns both TF32 switches off (cuBLAS's
and cuDNN's) for its span and puts them back after. ``precision_flags()`` says what is in force,
for metrics.json."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from bpfree.core.errors import BpfreeError
from bpfree.core.spec import PRECISIONS  # the choices, defined once


def check_precision(precision: object, device: torch.device | None = None) -> str:
    """``precision`` if it is one of PRECISIONS (and runs on ``device``, when given)."""
    if precision not in PRECISIONS:
        raise BpfreeError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "tf32" and device is not None and device.type != "cuda":
        raise BpfreeError("precision tf32 needs a CUDA device; use fp32 or bf16 on the CPU")
    return precision  # type: ignore[return-value]


@contextlib.contextmanager
def _tf32(allowed: bool) -> Iterator[None]:
    """cuBLAS's and cuDNN's TF32 switches set to ``allowed``, restored on exit (they are plain
    process-wide flags, settable without CUDA)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    check_precision(precision, device)
    if precision == "fp32":
        with _tf32(False):  # cuDNN's default is TF32 convolutions: fp32 must say no
            yield
    elif precision == "tf32":
        with _tf32(True):
            yield
    else:
        # no cast cache: it lives until the outermost autocast region exits, and this region
        # spans many optimiser steps, so cached bfloat16 copies of the weights would go stale
        # (measured: nothing learns)
        # what autocast leaves in float32 stays true float32
        with _tf32(False), torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
            yield


def precision_flags(device: torch.device | str | None = None) -> dict[str, Any]:
    """The precision switches in force now (call it inside ``precision_context``): flat
    values for metrics.json. ``autocast_bf16`` is read for ``device``'s type (default cuda)."""
    device_type = torch.device(device).type if device is not None else "cuda"
    flags: dict[str, Any] = {
        "cublas_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }
    try:  # torch >= 2.4 answers per device type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
        flags["autocast_dtype"] = None if dtype is None else str(dtype).removeprefix("torch.")
    except (AttributeError, RuntimeError, TypeError):
        flags["autocast_dtype"] = "unknown"
    return flags
