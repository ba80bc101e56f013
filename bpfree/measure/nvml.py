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
    index: int | None = None  # NVML's index of the board (a MIG instance's: its parent's)
    problem: str | None = None  # why the handle may not be torch's device (found by index)
    mig: bool = False  # a MIG instance: NVML has no energy or power of its own for it

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
        if device is not None and device.type == "cuda":
            cuda_index = device.index if device.index is not None else torch.cuda.current_device()
            uuid = str(torch.cuda.get_device_properties(cuda_index).uuid)
            handle, mig, problem = find_handle(nvml, uuid, cuda_index)
        else:
            handle, mig, problem = nvml.nvmlDeviceGetHandleByIndex(index or 0), False, None
        name = _text(nvml.nvmlDeviceGetName(handle))
    except Exception as err:
        _shutdown(nvml)
        return None, f"no NVML handle for {device or index}: {err}"
    return (
        NvmlGpu(nvml, handle, name, _probe_energy_counter(nvml, handle), _board_index(nvml, handle, mig), problem, mig),
        None,
    )


def find_handle(nvml, uuid: str, cuda_index: int) -> tuple[Any, bool, str | None]:
    """(handle, is a MIG instance, problem) of the device whose UUID torch reports as ``uuid``.

    torch gives the bare UUID; NVML names a board ``GPU-<uuid>`` and a MIG instance
    ``MIG-<uuid>``, and ``nvmlDeviceGetHandleByUUID`` takes either. Where that fails (older
    drivers for MIG), every board's MIG instances are enumerated and matched by UUID. Only then
    the handle by index, flagged: NVML's index is not torch's under CUDA_VISIBLE_DEVICES or MIG."""
    bare = uuid.removeprefix("GPU-").removeprefix("MIG-")
    wanted = {bare, f"GPU-{bare}", f"MIG-{bare}"}
    for candidate in (f"GPU-{bare}", f"MIG-{bare}", bare):
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(candidate)
        except Exception:
            continue
        return handle, candidate.startswith("MIG-") or _is_mig(nvml, handle), None
    found = _find_mig_instance(nvml, wanted)
    if found is not None:
        return found, True, None
    problem = (
        f"NVML has no device with torch's UUID {bare} (neither GPU- nor MIG-); fell back to NVML index "
        f"{cuda_index}, which is torch's cuda:{cuda_index} only where CUDA_VISIBLE_DEVICES is unset "
        "and there is no MIG: the energy and memory read may be another GPU's"
    )
    return nvml.nvmlDeviceGetHandleByIndex(cuda_index), False, problem


def _find_mig_instance(nvml, wanted: set[str]):
    try:
        count = nvml.nvmlDeviceGetCount()
    except Exception:
        return None
    for i in range(count):
        try:
            board = nvml.nvmlDeviceGetHandleByIndex(i)
            current, _pending = nvml.nvmlDeviceGetMigMode(board)
            if not current:
                continue
            slots = nvml.nvmlDeviceGetMaxMigDeviceCount(board)
        except Exception:  # not MIG-capable, or the call is missing
            continue
        for j in range(slots):
            try:
                instance = nvml.nvmlDeviceGetMigDeviceHandleByIndex(board, j)
                if _text(nvml.nvmlDeviceGetUUID(instance)) in wanted:
                    return instance
            except Exception:  # an empty slot
                continue
    return None


def _is_mig(nvml, handle) -> bool:
    try:
        return bool(nvml.nvmlDeviceIsMigDeviceHandle(handle))
    except Exception:
        return False


def _board_index(nvml, handle, mig: bool) -> int | None:
    try:
        board = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle) if mig else handle
        return int(nvml.nvmlDeviceGetIndex(board))
    except Exception:
        return None


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
