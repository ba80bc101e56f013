"""What a run ran on: enough to tell two machines' numbers apart."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from bpfree.measure.nvml import driver_versions, open_gpu


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 2)
    except (ValueError, OSError, AttributeError):
        return None


def hardware_metadata(device: torch.device | str) -> dict[str, Any]:
    device = torch.device(device)
    meta: dict[str, Any] = {
        "host": platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,  # the CUDA torch was built with
        "cpu_model": cpu_model(),
        "cpu_logical_count": os.cpu_count(),
        "memory_total_gb": memory_total_gb(),
        "device": str(device),
        "gpu_model": None,
        "gpu_memory_gb": None,
        "gpu_driver": None,
        "cuda_driver": None,  # the newest CUDA the driver supports
        "cudnn": None,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        meta.update(
            gpu_model=props.name,
            gpu_memory_gb=round(props.total_memory / 1024**3, 2),
            cudnn=torch.backends.cudnn.version(),
        )
        gpu, _ = open_gpu(device)
        if gpu is not None:
            versions = driver_versions(gpu.nvml)
            meta.update(gpu_driver=versions["driver"], cuda_driver=versions["cuda_driver"])
            gpu.close()
    return meta
