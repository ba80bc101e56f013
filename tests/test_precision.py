"""Precision switches: fp32 must turn TF32 off in cuBLAS *and* cuDNN (torch's cuDNN default
is TF32 convolutions), put every switch back afterwards, and say what was in force. The
flags are plain process-wide settings, so a CPU shows all of this."""

from __future__ import annotations

import pytest
import torch

from bpfree.core.errors import BpfreeError
from bpfree.engine.precision import check_precision, precision_context, precision_flags

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # never used for computing: the context only sets flags for it


@pytest.fixture
def tf32_on():
    """Both TF32 switches on (cuDNN's torch default; cuBLAS's as a site might set it), and
    the test's own values put back after."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def switches() -> tuple[bool, bool]:
    return torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("device", [CPU, CUDA])
def test_fp32_turns_off_tf32_in_cublas_and_cudnn_and_restores_them(tf32_on, device):
    with precision_context("fp32", device):
        assert switches() == (False, False)
        flags = precision_flags(device)
    assert switches() == (True, True)
    assert flags["cublas_allow_tf32"] is False and flags["cudnn_allow_tf32"] is False
    assert flags["float32_matmul_precision"] == "highest"
    assert flags["autocast_dtype"] is None


def test_tf32_turns_both_on_and_restores_them():
    saved = switches()
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with precision_context("tf32", CUDA):
            assert switches() == (True, True)
            assert precision_flags(CUDA)["cudnn_allow_tf32"] is True
        assert switches() == (False, False)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_bf16_autocasts_and_keeps_the_float32_rest_out_of_tf32(tf32_on):
    with precision_context("bf16", CPU):
        flags = precision_flags(CPU)
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
    assert flags["autocast_dtype"] == "bfloat16"
    assert flags["cublas_allow_tf32"] is False and flags["cudnn_allow_tf32"] is False
    assert switches() == (True, True) and precision_flags(CPU)["autocast_dtype"] is None


def test_switches_are_restored_when_the_work_fails(tf32_on):
    with pytest.raises(RuntimeError, match="boom"), precision_context("fp32", CPU):
        raise RuntimeError("boom")
    assert switches() == (True, True)


def test_flags_are_flat_values_for_metrics_json():
    flags = precision_flags()
    assert set(flags) == {"cublas_allow_tf32", "cudnn_allow_tf32", "float32_matmul_precision", "autocast_dtype"}
    assert all(v is None or isinstance(v, (bool, str)) for v in flags.values())


def test_unknown_precision_and_tf32_on_cpu_are_user_errors():
    with pytest.raises(BpfreeError, match="valid: fp32, tf32, bf16"):
        check_precision("fp16")
    with pytest.raises(BpfreeError, match="needs a CUDA device"):
        check_precision("tf32", CPU)
