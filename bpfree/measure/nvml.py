"""Finding the NVML handle of the GPU that torch computes on.

NVML numbers GPUs without regard to CUDA_VISIBLE_DEVICES, so torch's ``cuda:0`` is matched
by UUID, not by index. ``pynvml`` is imported at call time so that tests can put a stand-in
module in ``sys.modules``."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class NvmlGpu:
    nvml: Any  # the pynvml module
    handle: Any
    name: str
    energy_counter_error: str | None  # why the total-energy counter cannot be used, if so

    def close(self) -> None:
        _shutdown(self.nvml)


def import_pynvml():
    return importlib.import_module("pynvml")


def open_gpu(device: torch.device | None = None, index: int | None = None) -> tuple[NvmlGpu | None, str | None]:
    """The NVML view of ``device`` (a cuda device) or of NVML index ``index``; or None and why."""
    try:
        nvml = import_pynvml()
    except ImportError:
        return None, "pynvml (nvidia-ml-py) is not installed"
    try:
        nvml.nvmlInit()
    except Exception as err:
        return None, f"NVML unavailable: {err}"
    try:
        handle = _handle(nvml, device, index)
        name = _text(nvml.nvmlDeviceGetName(handle))
    except Exception as err:
        _shutdown(nvml)
        return None, f"no NVML handle for {device or index}: {err}"
    return NvmlGpu(nvml, handle, name, _probe_energy_counter(nvml, handle)), None


def _handle(nvml, device: torch.device | None, index: int | None):
    if device is not None and device.type == "cuda":
        cuda_index = device.index if device.index is not None else torch.cuda.current_device()
        uuid = str(torch.cuda.get_device_properties(cuda_index).uuid)
        for candidate in (uuid, f"GPU-{uuid}"):
            try:
                return nvml.nvmlDeviceGetHandleByUUID(candidate)
            except Exception:
                continue
        index = cuda_index  # fall back: right when CUDA_VISIBLE_DEVICES is unset
    return nvml.nvmlDeviceGetHandleByIndex(index or 0)


def _probe_energy_counter(nvml, handle) -> str | None:
    try:
        nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        return None
    except Exception as err:  # NOT_SUPPORTED before Volta and on MIG instances
        return f"total-energy counter unavailable: {err}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _shutdown(nvml) -> None:
    try:
        nvml.nvmlShutdown()
    except Exception:
        pass


def driver_versions(nvml) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, call in (("driver", "nvmlSystemGetDriverVersion"), ("nvml", "nvmlSystemGetNVMLVersion")):
        try:
            out[key] = _text(getattr(nvml, call)())
        except Exception:
            out[key] = None
    try:
        version = int(nvml.nvmlSystemGetCudaDriverVersion())
        out["cuda_driver"] = f"{version // 1000}.{version % 1000 // 10}"
    except Exception:
        out["cuda_driver"] = None
    return out
