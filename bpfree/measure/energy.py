"""Energy counters: each reads the cumulative joules of one domain (a GPU board, the CPU
packages) since some origin of its own; a window's energy is the difference of two readings.

Preference per domain, best first:
  GPU  nvml-counter  NVML's total-energy counter (mJ, Volta and later): exact, no sampling,
                     but it moves only every update period (measured at the first idle
                     baseline, else assumed 0.1 s), so a shorter window is not its own
       nvml-polling-instant  NVML's instantaneous power field (NVML_FI_DEV_POWER_INSTANT, where
                     the driver offers it) sampled and integrated: for windows too short for
                     the counter
       nvml-polling  NVML power (nvmlDeviceGetPowerUsage) sampled every ``interval`` and
                     integrated (trapezoid rule); it is itself a ~1 s average on A100/H100
                     boards, so short windows read low after a rise (high after a fall)
  CPU  rapl          the packages' RAPL counters (µJ), wrap corrected with max_energy_range_uj
       estimate      the process's CPU time x an assumed power per logical CPU (no meter)

NVML and RAPL see the whole board or package: another process on the same GPU or CPU counts
too, which is why the idle baseline is measured on the same machine just before the work.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

NVML_COUNTER_PERIOD_S = 0.1  # assumed where it was not measured (NvmlEnergyCounter.measure_period)
# the update periods measured in this process, by NVML board index: a process measures once
MEASURED_PERIODS: dict[int, float] = {}


def measure_update_period(
    read: Callable[[], float],
    seconds: float = 1.0,
    changes_wanted: int = 6,
    clock: Callable[[], float] = time.perf_counter,
    max_reads: int = 1_000_000,
) -> tuple[float | None, int]:
    """How often ``read()`` (a counter) moves: read it back to back until it has moved
    ``changes_wanted`` times or ``seconds`` have passed (or ``max_reads`` reads, where the clock
    stalls); (mean seconds between moves, or None where it moved fewer than twice; the moves)."""
    last, moves = read(), []
    start = clock()
    for _ in range(max_reads):
        if clock() - start >= seconds or len(moves) >= changes_wanted:
            break
        value = read()
        if value != last:
            moves.append(clock())
            last = value
    if len(moves) < 2:
        return None, len(moves)
    return (moves[-1] - moves[0]) / (len(moves) - 1), len(moves)


class MeterError(Exception):
    """A reading that cannot be trusted: a failed driver call, a counter that went back."""


class EnergyCounter(ABC):
    source: str  # "nvml-counter", "nvml-polling", "rapl", "estimate"
    description: str = ""
    includes_idle = True  # False: counts only this process's work, so idle power is 0 by construction
    # how often the reading moves: a window shorter than this can read 0 J however busy the
    # device was (0: every reading is current)
    update_period_s = 0.0

    @abstractmethod
    def read_j(self) -> float:
        """Cumulative joules now; raises MeterError when the reading is not available."""

    def tick(self) -> None:
        """Called by the sampler thread between readings (polling, wrap tracking)."""

    def sample_failures(self) -> tuple[int, str | None]:
        """(failed background samples so far, the last error): problems that did not raise."""
        return 0, None


class NvmlEnergyCounter(EnergyCounter):
    """``update_period_s``: NVML does not document it; 20-100 ms on Volta and later boards
    (PETSc's and Zeus's notes), the upper end assumed until :meth:`measure_period` measured
    it on the board at hand (the meter does, before its first idle baseline; so does
    scripts/gpu_check.py). ``board``: NVML's index of the board, the key of the measured period
    kept for the process (MEASURED_PERIODS)."""

    source = "nvml-counter"
    update_period_s = NVML_COUNTER_PERIOD_S

    def __init__(self, nvml, handle, board: int | None = None) -> None:
        self.nvml, self.handle, self.board = nvml, handle, board
        measured = MEASURED_PERIODS.get(board) if board is not None else None
        self.period_measured = measured is not None
        if measured is not None:
            self.update_period_s = measured

    @property
    def description(self) -> str:
        how = "measured" if self.period_measured else "assumed, not measured"
        return (
            "NVML total-energy counter of the GPU board (nvmlDeviceGetTotalEnergyConsumption); "
            f"update period {1e3 * self.update_period_s:.0f} ms ({how})"
        )

    def measure_period(self, seconds: float = 1.0, clock: Callable[[], float] = time.perf_counter) -> float | None:
        """Measure how often the counter moves and use that from now on (None: it moved too
        seldom to tell; the assumed period stays). Reads it back to back: up to ``seconds``
        of one CPU core, far less where it moves every 20 ms."""
        try:
            period, _ = measure_update_period(self.read_j, seconds, clock=clock)
        except MeterError:
            return None
        if period is not None:
            self.update_period_s, self.period_measured = period, True
            if self.board is not None:
                MEASURED_PERIODS[self.board] = period
        return period

    def read_j(self) -> float:
        try:
            millijoules = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        except self.nvml.NVMLError as err:
            raise MeterError(f"nvmlDeviceGetTotalEnergyConsumption failed: {err}") from None
        return millijoules / 1000.0


class PolledPower(EnergyCounter):
    """Power (W) sampled by ``tick`` and integrated by the trapezoid rule between samples.

    ``read_j`` takes a sample of its own first, so a window's ends are exact in time rather
    than rounded to the last background sample. A failed sample is counted and skipped: the
    integral then spans the gap linearly."""

    source = "nvml-polling"

    def __init__(
        self,
        read_power_w: Callable[[], float],
        *,
        clock: Callable[[], float] = time.perf_counter,
        description: str = "NVML board power (a ~1 s average on A100/H100), polled and integrated by the trapezoid rule",
        source: str = "nvml-polling",
    ) -> None:
        self.read_power_w = read_power_w
        self.source = source
        self.clock = clock
        self.description = description
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None  # (time s, power W) of the last sample
        self._energy_j = 0.0
        self._failures = 0
        self._last_error: str | None = None

    def _sample(self) -> bool:
        try:
            power = float(self.read_power_w())
        except Exception as err:  # a driver hiccup must not end the run
            with self._lock:
                self._failures += 1
                self._last_error = f"{type(err).__name__}: {err}"
            return False
        now = self.clock()
        with self._lock:
            if self._last is not None:
                t0, p0 = self._last
                self._energy_j += 0.5 * (p0 + power) * (now - t0)
            self._last = (now, power)
        return True

    def tick(self) -> None:
        self._sample()

    def read_j(self) -> float:
        if not self._sample():
            raise MeterError(f"power sample failed: {self._last_error}")
        with self._lock:
            return self._energy_j

    def sample_failures(self) -> tuple[int, str | None]:
        with self._lock:
            return self._failures, self._last_error


def nvml_power_w(nvml, handle) -> Callable[[], float]:
    return lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0  # mW -> W


NVML_FI_DEV_POWER_INSTANT = 186  # nvml.h; pynvml names it too, where its version is recent
_VALUE_FIELDS = {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal", 6: "usVal"}


def nvml_instant_power_w(nvml, handle) -> tuple[Callable[[], float] | None, str | None]:
    """A reader of the board's instantaneous power (W) through ``nvmlDeviceGetFieldValues``
    and NVML_FI_DEV_POWER_INSTANT, or None and why the driver does not offer it (tried once)."""
    field_id = getattr(nvml, "NVML_FI_DEV_POWER_INSTANT", NVML_FI_DEV_POWER_INSTANT)
    get = getattr(nvml, "nvmlDeviceGetFieldValues", None)
    if get is None:
        return None, "instantaneous power: this pynvml has no nvmlDeviceGetFieldValues"

    def read() -> float:
        (value,) = get(handle, [field_id])
        if getattr(value, "nvmlReturn", 0) != 0:
            raise MeterError(f"NVML_FI_DEV_POWER_INSTANT returned NVML error {value.nvmlReturn}")
        kind = _VALUE_FIELDS.get(int(getattr(value, "valueType", 1)), "uiVal")
        return float(getattr(value.value, kind)) / 1000.0  # mW -> W

    try:
        watts = read()
    except Exception as err:  # noqa: BLE001  (NOT_SUPPORTED before Hopper-era drivers, or no field)
        return None, f"instantaneous power field not offered: {err}"
    if watts <= 0:
        return None, f"instantaneous power field read {watts} W: not used"
    return read, None


class RaplCounter(EnergyCounter):
    """Sum of the CPU packages' RAPL counters. Each counter wraps at max_energy_range_uj; a
    reading below the previous one adds one range (ticks must come faster than one wrap:
    minutes at full power)."""

    source = "rapl"

    def __init__(self, zones: list[Path]) -> None:
        self.zones = zones
        self.description = "RAPL package energy: " + ", ".join((z / "name").read_text().strip() for z in zones)
        self._ranges = [int((z / "max_energy_range_uj").read_text()) for z in zones]
        self._lock = threading.Lock()
        self._last_raw = [self._raw(z) for z in zones]
        self._total_uj = 0

    @staticmethod
    def _raw(zone: Path) -> int:
        return int((zone / "energy_uj").read_text())

    @classmethod
    def discover(cls, root: str | Path = "/sys/class/powercap") -> tuple[RaplCounter | None, str | None]:
        """The package zones under ``root`` (not their core/dram subzones), or why there are none."""
        root = Path(root)
        zones = sorted(
            z
            for z in root.glob("intel-rapl:*")
            if z.name.count(":") == 1
            and (z / "name").is_file()
            and (z / "name").read_text().strip().startswith("package")
        )
        if not zones:
            return None, f"no RAPL package zones under {root}"
        try:
            return cls(zones), None
        except (OSError, ValueError) as err:  # energy_uj is root-only on most kernels since 2020
            return None, f"RAPL not readable: {err}"

    def tick(self) -> None:
        try:
            self.read_j()
        except MeterError:
            pass

    def read_j(self) -> float:
        with self._lock:
            try:
                raw = [self._raw(z) for z in self.zones]
            except (OSError, ValueError) as err:
                raise MeterError(f"RAPL read failed: {err}") from None
            for i, (now, before, span) in enumerate(zip(raw, self._last_raw, self._ranges)):
                self._total_uj += now - before if now >= before else now + span - before
                self._last_raw[i] = now
            return self._total_uj / 1e6


# CodeCarbon's assumption for a CPU model it does not know: 4 W per logical CPU.
DEFAULT_WATTS_PER_LOGICAL_CPU = 4.0


class CpuTimeEstimate(EnergyCounter):
    """No meter: the process's CPU time (all threads, user + system, and waited-for children)
    times an assumed power per logical CPU, i.e. TDP x (CPU time / logical CPUs). This is the
    process's share of an assumed package power; it leaves out idle and uncore power and is a
    model, not a measurement."""

    source = "estimate"
    includes_idle = False

    def __init__(self, tdp_w: float | None = None, logical_cpus: int | None = None) -> None:
        self.logical_cpus = logical_cpus or os.cpu_count() or 1
        assumed = tdp_w is None
        self.tdp_w = DEFAULT_WATTS_PER_LOGICAL_CPU * self.logical_cpus if assumed else float(tdp_w)
        self.watts_per_cpu = self.tdp_w / self.logical_cpus
        basis = (
            f"{DEFAULT_WATTS_PER_LOGICAL_CPU:g} W per logical CPU, CodeCarbon's default for an unknown CPU"
            if assumed
            else "configured cpu_tdp_w"
        )
        self.description = (
            f"estimate: process CPU time x {self.watts_per_cpu:.2f} W per logical CPU "
            f"({self.tdp_w:g} W TDP / {self.logical_cpus} logical CPUs; {basis}); no RAPL here"
        )

    def read_j(self) -> float:
        own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime  # µs resolution
        return cpu_s * self.watts_per_cpu
