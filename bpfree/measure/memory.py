"""Peak-memory gauges, each labelled with the kind of memory it sees:

  torch-allocated   bytes the PyTorch caching allocator handed to tensors (this process)
  torch-reserved    bytes the allocator holds from the driver (this process, cache included)
  nvml-device-used  device-wide NVML "used": CUDA context and other processes included;
                    sampled, so a spike shorter than the polling interval can be missed
  process-rss       the process's resident-set high-water mark (VmHWM), reset per window;
  process-rss-lifetime  the same since process start, where the mark cannot be reset

A gauge reports the peak since its last ``reset``; the meter folds peaks across
overlapping windows (see Meter)."""

from __future__ import annotations

import resource
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import torch


class PeakGauge(ABC):
    kind: str

    @abstractmethod
    def peak_bytes(self) -> float | None:
        """The highest value since the last reset (None when it cannot be read)."""

    @abstractmethod
    def reset(self) -> None:
        """Start a new peak from the present value."""

    def tick(self) -> None:
        """Called by the sampler thread (sampled gauges only)."""


class TorchAllocatorPeak(PeakGauge):
    def __init__(self, device: torch.device, *, reserved: bool = False) -> None:
        self.device = device
        self.reserved = reserved
        self.kind = "torch-reserved" if reserved else "torch-allocated"

    def peak_bytes(self) -> float:
        read = torch.cuda.max_memory_reserved if self.reserved else torch.cuda.max_memory_allocated
        return float(read(self.device))

    def reset(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)


class SampledPeak(PeakGauge):
    """The maximum of ``read_bytes()`` over samples; failed samples are counted, not raised."""

    def __init__(self, kind: str, read_bytes: Callable[[], float]) -> None:
        self.kind = kind
        self.read_bytes = read_bytes
        self._lock = threading.Lock()
        self._peak: float | None = None
        self.failures = 0

    def tick(self) -> None:
        try:
            value = float(self.read_bytes())
        except Exception:
            with self._lock:
                self.failures += 1
            return
        with self._lock:
            self._peak = value if self._peak is None else max(self._peak, value)

    def peak_bytes(self) -> float | None:
        self.tick()
        with self._lock:
            return self._peak

    def reset(self) -> None:
        with self._lock:
            self._peak = None
        self.tick()


class ProcessRssPeak(PeakGauge):
    """Linux keeps the process's RSS high-water mark (VmHWM); writing "5" to
    /proc/self/clear_refs resets it (kernel 4.0+), which makes it exact per window with no
    sampling. Where that is refused, the lifetime mark (getrusage ru_maxrss) is reported and
    labelled as such."""

    CLEAR_REFS = Path("/proc/self/clear_refs")
    STATUS = Path("/proc/self/status")

    def __init__(self) -> None:
        self.resettable = self._try_reset()
        self.kind = "process-rss" if self.resettable else "process-rss-lifetime"

    def _try_reset(self) -> bool:
        try:
            self.CLEAR_REFS.write_text("5")
            return True
        except OSError:
            return False

    def peak_bytes(self) -> float:
        if self.resettable:
            for line in self.STATUS.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) * 1024
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return float(maxrss if sys.platform == "darwin" else maxrss * 1024)  # bytes on macOS, kB elsewhere

    def reset(self) -> None:
        if self.resettable:
            self._try_reset()
