"""Named measurement windows over energy counters and peak-memory gauges (after Zeus):

    meter = Meter.for_device(device, settings)
    with meter:
        meter.measure_idle()              # idle baseline: power with nothing running
        meter.begin_window("train")
        ...                               # windows may nest and overlap
        result = meter.end_window("train")   # -> WindowResult

The meter knows nothing of what it measures. Each domain ("gpu", "cpu") has counters in
order of preference; every counter is read at both ends of a window, the first one with a
trustworthy difference gives the window's energy, and all of them are kept (``by_source``)
for cross-checking. Nothing here raises on a failing driver: the window records the problem
and falls back to the next counter, or to None."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from bpfree.core.errors import BpfreeError
from bpfree.core.io import write_text_atomic
from bpfree.core.sources import combine_sources
from bpfree.core.spec import Measurement
from bpfree.measure.carbon import CarbonResult, CarbonTracker
from bpfree.measure.energy import (
    CpuTimeEstimate,
    EnergyCounter,
    MeterError,
    NvmlEnergyCounter,
    PolledPower,
    RaplCounter,
    nvml_instant_power_w,
    nvml_power_w,
)
from bpfree.measure.memory import PeakGauge, ProcessRssPeak, SampledPeak, TorchAllocatorPeak
from bpfree.measure.nvml import NvmlGpu, open_gpu

MB = 1024 * 1024
SETTLE_FLAT_S = 3.0  # power flat this long counts as settled (NVML averages it over ~1 s)


# the ``measurement:`` section of the run specification (checked there, defaults there)
MeasurementSettings = Measurement


@dataclass
class Domain:
    name: str  # "gpu" or "cpu"
    counters: list[EnergyCounter]  # best first
    note: str | None = None  # why a better counter is missing


@dataclass(frozen=True)
class EnergyResult:
    joules: float | None = None
    source: str | None = None  # the counter that gave ``joules``
    idle_power_w: float | None = None  # of that same counter, from the idle baseline
    net_joules: float | None = None  # joules - idle_power_w x time
    by_source: dict[str, float | None] = field(default_factory=dict)


# The windows bpfree opens, by name. Each is opened and closed by the one function that names
# it: IDLE by Meter.measure_idle, FIT and TEST by bpfree.engine.run.measure_run, each epoch's by
# the loop's EpochMeasure (bpfree.engine.loop), TRIAL by bpfree.tuning.trial.run_trial
# (docs/measurement.md; tests/test_windows.py checks it).
IDLE = "idle"  # nothing running: the baseline later windows subtract
FIT = "fit"  # every epoch's training and validation (a run's energy_j)
TEST = "test"  # the test split's one pass
TRIAL = "trial"  # one tuning trial: building, every epoch, the final validation


def epoch_window(epoch: int) -> str:
    """The window of epoch ``epoch`` (counted over the whole fit, from 1)."""
    return f"epoch {epoch}"


@dataclass(frozen=True)
class WindowResult:
    name: str
    time_s: float
    energy: dict[str, EnergyResult]  # by domain
    peaks_mb: dict[str, float | None]  # by gauge kind
    problems: tuple[str, ...] = ()
    # a window opened with a CodeCarbon tracker (Meter.window(name, carbon=...)): its result
    # once the window has ended; while it is open (peek_window), its rows so far. Neither is
    # part of to_dict: a checkpoint keeps the rows on their own
    carbon: CarbonResult | None = None
    carbon_rows: tuple[dict[str, Any], ...] = ()

    def of(self, domain: str) -> EnergyResult:
        return self.energy.get(domain, EnergyResult())

    def to_dict(self) -> dict[str, Any]:
        """Plain data (a checkpoint stores it); ``from_dict`` reads it back."""
        return {
            "name": self.name,
            "time_s": self.time_s,
            "energy": {d: dataclasses.asdict(e) for d, e in self.energy.items()},
            "peaks_mb": dict(self.peaks_mb),
            "problems": list(self.problems),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WindowResult:
        return cls(
            data["name"],
            data["time_s"],
            {d: EnergyResult(**e) for d, e in data["energy"].items()},
            dict(data["peaks_mb"]),
            tuple(data["problems"]),
        )


def combine_windows(pieces: list[WindowResult], name: str) -> WindowResult:
    """One window over several pieces of the same work (a run killed and resumed, each piece
    in its own process, maybe on another machine): times and energies add up, peaks are the
    max. A domain's energy comes from the best source that *every* piece measured (sources
    keep the meter's order of preference); where no source covers every piece, the pieces'
    own figures are added and the source names them all, "nvml-counter+nvml-polling" say,
    so that a sum with an estimate in it never reads as measured."""
    if not pieces:
        raise ValueError("no pieces to combine")
    if len(pieces) == 1:
        only = pieces[0]
        return WindowResult(name, only.time_s, only.energy, only.peaks_mb, only.problems)
    time_s = sum(p.time_s for p in pieces)
    domains = list(dict.fromkeys(d for p in pieces for d in p.energy))
    energy = {d: _combine_energy([p.of(d) for p in pieces], [p.time_s for p in pieces]) for d in domains}
    peaks: dict[str, float | None] = {}
    for piece in pieces:
        for kind, mb in piece.peaks_mb.items():
            seen = peaks.get(kind)
            peaks[kind] = mb if seen is None else (seen if mb is None else max(seen, mb))
    problems = tuple(f"piece {i}: {p}" for i, piece in enumerate(pieces, 1) for p in piece.problems)
    return WindowResult(name, time_s, energy, peaks, problems)


def _sum(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else sum(values)  # type: ignore[arg-type]


def _combine_energy(results: list[EnergyResult], times: list[float]) -> EnergyResult:
    sources = list(dict.fromkeys(s for r in results for s in r.by_source))
    by_source = {s: _sum([r.by_source.get(s) for r in results]) for s in sources}
    common = next((s for s, j in by_source.items() if j is not None), None)
    if common is not None:
        joules, source = by_source[common], common
        net = _sum([r.net_joules if r.source == common else None for r in results])
    else:
        joules = _sum([r.joules for r in results])
        source = combine_sources(r.source for r in results) if joules is not None else None
        net = _sum([r.net_joules for r in results]) if joules is not None else None
    time_s = sum(times)
    idle_w = (joules - net) / time_s if joules is not None and net is not None and time_s > 0 else None
    return EnergyResult(joules, source, idle_w, net, by_source)


@dataclass
class OpenWindow:
    """A window opened by :meth:`Meter.window`: its result once the block has ended."""

    name: str
    result: WindowResult | None = None


@dataclass
class _OpenWindow:
    start: float
    readings: dict[tuple[str, str], float | None]
    failures: dict[tuple[str, str], int]
    peaks: dict[str, float | None]
    problems: list[str]
    carbon: CarbonTracker | None = None


class _Sampler(threading.Thread):
    """Calls ``tick`` on every sampled counter and gauge each interval, until stopped."""

    def __init__(self, interval_s: float, tickers: list[Callable[[], None]]) -> None:
        super().__init__(name="bpfree-meter-sampler", daemon=True)
        self.interval_s = interval_s
        self.tickers = tickers
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            for tick in self.tickers:
                tick()


class Meter:
    def __init__(
        self,
        domains: list[Domain],
        gauges: list[PeakGauge],
        *,
        poll_interval_s: float = 0.1,
        sync: Callable[[], None] | None = None,
        primary_domain: str = "cpu",
        primary_peak: str | None = None,
        on_close: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.domains = domains
        self.gauges = gauges
        self.poll_interval_s = poll_interval_s
        self.sync = sync or (lambda: None)
        self.primary_domain = primary_domain  # the device the work runs on
        self.primary_peak = primary_peak or (gauges[0].kind if gauges else None)
        self.on_close = on_close
        self.clock, self.sleep = clock, sleep  # injectable: tests drive a fake power curve
        self.idle: WindowResult | None = None
        self._idle_power: dict[tuple[str, str], float] = {}
        self._open: dict[str, _OpenWindow] = {}
        self._sampler: _Sampler | None = None
        self.settling: tuple[float, bool] | None = None  # (seconds waited, settled) before the idle baseline
        self.idle_age_s: float | None = None  # the baseline's age when taken (0: measured by this meter)
        self.nvml_gpu_ids: list[int] | None = None  # NVML index of the GPU measured (CodeCarbon's gpu_ids)
        # measure the counters' update periods before the first idle baseline (real devices;
        # a test's stand-in counters keep their assumed ones unless it asks)
        self.measure_periods = False

    # -- building ----------------------------------------------------------------------
    @classmethod
    def for_device(cls, device: torch.device | str, settings: MeasurementSettings | None = None) -> Meter:
        """GPU board energy (NVML counter, polling alongside) and allocator/device peaks when
        ``device`` is cuda; CPU package energy (RAPL, else an estimate) and RSS peak always."""
        device = torch.device(device)
        settings = settings or MeasurementSettings()
        domains: list[Domain] = []
        gauges: list[PeakGauge] = []
        gpu: NvmlGpu | None = None
        if device.type == "cuda":
            gauges += [TorchAllocatorPeak(device), TorchAllocatorPeak(device, reserved=True)]
            gpu, why = open_gpu(device)
            if gpu is None:
                domains.append(Domain("gpu", [], note=why))
            else:
                domains.append(gpu_domain(gpu))
                gauges.append(SampledPeak("nvml-device-used", _device_used(gpu)))
        rapl, why = RaplCounter.discover()
        estimate = CpuTimeEstimate(settings.cpu_tdp_w)
        domains.append(Domain("cpu", [rapl, estimate] if rapl else [estimate], note=why))
        rss = ProcessRssPeak()
        gauges.append(rss)
        meter = cls(
            domains,
            gauges,
            poll_interval_s=settings.poll_interval_s,
            sync=(lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None,
            primary_domain="gpu" if device.type == "cuda" else "cpu",
            primary_peak="torch-allocated" if device.type == "cuda" else rss.kind,
            on_close=gpu.close if gpu is not None else None,
        )
        if gpu is not None and gpu.index is not None and gpu.problem is None:
            meter.nvml_gpu_ids = [gpu.index]
        meter.measure_periods = True
        return meter

    # -- lifetime ----------------------------------------------------------------------
    def start(self) -> Meter:
        tickers = [c.tick for d in self.domains for c in d.counters] + [g.tick for g in self.gauges]
        needs_thread = any(isinstance(c, (PolledPower, RaplCounter)) for d in self.domains for c in d.counters) or any(
            isinstance(g, SampledPeak) for g in self.gauges
        )
        if needs_thread and self._sampler is None:
            self._sampler = _Sampler(self.poll_interval_s, tickers)
            self._sampler.start()
        return self

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stopped.set()
            self._sampler.join()
            self._sampler = None
        if self.on_close is not None:
            self.on_close()
            self.on_close = None

    def __enter__(self) -> Meter:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- windows -----------------------------------------------------------------------
    def settle(
        self, max_s: float, *, flat_s: float = SETTLE_FLAT_S, tolerance_w: float = 5.0, tolerance: float = 0.03
    ) -> tuple[float, bool]:
        """Wait until the computing device's polled power is flat, at most ``max_s``: after
        a load, NVML's averaged power and the clocks take seconds to fall, and an idle
        baseline taken meanwhile is too high (net energy too low). Flat: every sample of the
        last ``flat_s`` within max(``tolerance_w``, ``tolerance`` x their mean) of each
        other. Returns (seconds waited, whether it settled); (0, True) where no power is
        polled. Also kept for ``describe``."""
        polled = [c for d in self.domains if d.name == self.primary_domain for c in d.counters]
        # the averaged reading first: flat when the board is, where the instantaneous one jitters
        polled = sorted((c for c in polled if isinstance(c, PolledPower)), key=lambda c: c.source != "nvml-polling")
        readers = [c.read_power_w for c in polled]
        if max_s <= 0 or not readers:
            return 0.0, True
        read, step = readers[0], self.poll_interval_s
        start = self.clock()
        samples: list[tuple[float, float]] = []  # (time, W)
        settled = False
        for _ in range(math.ceil(max_s / step) + 1):  # bounded even where the clock stalls
            now = self.clock()
            try:
                samples.append((now, float(read())))
            except Exception:  # noqa: BLE001  (a failed sample only delays settling)
                pass
            recent = [w for t, w in samples if t >= now - flat_s]
            if samples and now - samples[0][0] >= flat_s and len(recent) >= 2:
                mean = sum(recent) / len(recent)
                if max(recent) - min(recent) <= max(tolerance_w, tolerance * mean):
                    settled = True
                    break
            if now - start >= max_s:
                break
            self.sleep(step)
        self.settling = (self.clock() - start, settled)
        return self.settling

    def measure_idle(
        self, seconds: float, settle_max_s: float = 0.0, reuse: IdleCache | None = None
    ) -> WindowResult | None:
        """Power with nothing running (data and model already resident), per counter; later
        windows subtract it x their duration as ``net_joules``. 0 seconds: no baseline.
        Skipped where every counter is an estimate of this process's own work (no idle part
        to measure: its idle power is 0 by construction). ``settle_max_s``: first wait up to
        this long for the power to stop falling (``settle``); a baseline taken before it
        settled says so in its problems. Before anything, a counter's update period is
        measured where it can be (``measure_periods``), at most once per process and board.

        ``reuse``: this machine's last baseline of the same device and counters, taken by an
        earlier job at most ``reuse.max_age_s`` ago, is taken instead of waiting (no settling,
        no idle window; ``idle_age_s`` says how old it is); a baseline measured here is kept
        there for the jobs that follow."""
        self.measure_counter_periods()
        if seconds <= 0 or not any(c.includes_idle for d in self.domains for c in d.counters):
            return None
        sources = sorted(f"{d.name} {c.source}" for d in self.domains for c in d.counters if c.includes_idle)
        if reuse is not None:
            kept = reuse.load(sources)
            if kept is not None:
                self._idle_power = {tuple(k.split(" ", 1)): w for k, w in kept.power_w.items()}
                self.idle_age_s = kept.age_s
                return None
        _, settled = self.settle(settle_max_s)
        self.begin_window(IDLE)
        self.sleep(seconds)
        self.idle = self.end_window(IDLE)
        if not settled:
            self.idle = dataclasses.replace(
                self.idle,
                problems=self.idle.problems
                + (f"power still changing after {self.settling[0]:.1f} s of waiting: the idle baseline may be high",),
            )
        self._idle_power = {
            (domain, source): joules / self.idle.time_s
            for domain, energy in self.idle.energy.items()
            for source, joules in energy.by_source.items()
            if joules is not None
        }
        self.idle_age_s = 0.0
        if reuse is not None and settled and not self.idle.problems:
            reuse.save(sources, {f"{d} {s}": w for (d, s), w in self._idle_power.items()})
        return self.idle

    def measure_counter_periods(self) -> None:
        """Measure each counter's update period where it can and has not been (NVML's)."""
        if not self.measure_periods:
            return
        for domain in self.domains:
            for counter in domain.counters:
                if hasattr(counter, "measure_period") and not getattr(counter, "period_measured", True):
                    counter.measure_period(clock=self.clock)

    def begin_window(self, name: str, carbon: CarbonTracker | None = None) -> None:
        """Open window ``name``. ``carbon``: a CodeCarbon tracker started now, before the
        window's first readings (its start costs about a second, kept out of the window's
        time and energy), and stopped at its end, after its last readings."""
        if name in self._open:
            raise ValueError(f"measurement window {name!r} is already open")
        if carbon is not None:
            carbon.start()
        self.sync()
        self._fold_peaks()
        for gauge in self.gauges:
            gauge.reset()
        problems: list[str] = []
        readings = self._read_counters(problems)
        self._open[name] = _OpenWindow(
            start=self.clock(),
            readings=readings,
            failures=self._failures(),
            peaks={g.kind: None for g in self.gauges},
            problems=problems,
            carbon=carbon,
        )

    def end_window(self, name: str) -> WindowResult:
        if name not in self._open:
            raise ValueError(f"measurement window {name!r} was never opened")
        self.sync()
        end = self.clock()
        window = self._open[name]
        readings = self._read_counters(window.problems)
        self._fold_peaks()
        del self._open[name]
        time_s = end - window.start
        for key, count in self._failures().items():
            if count > window.failures.get(key, 0):
                window.problems.append(f"{key[0]} {key[1]}: {count - window.failures.get(key, 0)} failed samples")
        energy = {domain.name: self._energy(domain, window, readings, time_s) for domain in self.domains}
        peaks = {kind: (v / MB if v is not None else None) for kind, v in window.peaks.items()}
        carbon = window.carbon.stop() if window.carbon is not None else None
        return WindowResult(name, time_s, energy, peaks, tuple(window.problems), carbon)

    @contextmanager
    def window(self, name: str, carbon: CarbonTracker | None = None) -> Iterator[OpenWindow]:
        """``with meter.window(NAME) as w:`` opens the window and closes it at the block's end
        (``w.result`` is then its WindowResult); a block that raises discards it instead
        (its CodeCarbon tracker, if any, stopped). ``carbon``: see :meth:`begin_window`."""
        self.begin_window(name, carbon)
        opened = OpenWindow(name)
        try:
            yield opened
        except BaseException:
            self.discard_window(name)
            raise
        opened.result = self.end_window(name)

    def peek_window(self, name: str) -> WindowResult:
        """What an open window holds so far, leaving it open (a checkpoint stores it, so that
        a killed run's energy up to its last checkpoint is not lost)."""
        if name not in self._open:
            raise ValueError(f"measurement window {name!r} was never opened")
        self.sync()
        end = self.clock()
        window = self._open[name]
        problems = list(window.problems)
        readings = self._read_counters(problems)
        self._fold_peaks()
        time_s = end - window.start
        peek = _OpenWindow(window.start, window.readings, window.failures, window.peaks, problems)
        energy = {domain.name: self._energy(domain, peek, readings, time_s) for domain in self.domains}
        peaks = {kind: (v / MB if v is not None else None) for kind, v in window.peaks.items()}
        rows = tuple(window.carbon.rows_so_far()) if window.carbon is not None else ()
        return WindowResult(name, time_s, energy, peaks, tuple(problems), carbon_rows=rows)

    def discard_window(self, name: str) -> None:
        """Forget an open window (the work inside it failed); no-op when it is not open. Its
        CodeCarbon tracker is stopped (what it saw so far is written)."""
        window = self._open.pop(name, None)
        if window is not None and window.carbon is not None:
            window.carbon.stop()

    # -- inside ------------------------------------------------------------------------
    def _read_counters(self, problems: list[str]) -> dict[tuple[str, str], float | None]:
        readings: dict[tuple[str, str], float | None] = {}
        for domain in self.domains:
            for counter in domain.counters:
                try:
                    readings[domain.name, counter.source] = counter.read_j()
                except MeterError as err:
                    readings[domain.name, counter.source] = None
                    problems.append(f"{domain.name} {counter.source}: {err}")
        return readings

    def _failures(self) -> dict[tuple[str, str], int]:
        return {(d.name, c.source): c.sample_failures()[0] for d in self.domains for c in d.counters}

    def _energy(self, domain: Domain, window: _OpenWindow, end: dict, time_s: float) -> EnergyResult:
        by_source: dict[str, float | None] = {}
        for counter in domain.counters:
            key = (domain.name, counter.source)
            first, last = window.readings.get(key), end.get(key)
            delta = None if first is None or last is None else last - first
            if delta is not None and delta < 0:
                window.problems.append(
                    f"{domain.name} {counter.source}: counter went back by {-delta:.3f} J (wrap or reset); not used"
                )
                delta = None
            why = _untrustworthy(counter, delta, time_s)
            if why is not None:
                window.problems.append(
                    f"{domain.name} {counter.source}: {why}; not used (the next source gives the energy)"
                )
                delta = None
            by_source[counter.source] = delta
        source = next((s for s, j in by_source.items() if j is not None), None)
        if source is None:
            return EnergyResult(by_source=by_source)
        joules = by_source[source]
        counter = next(c for c in domain.counters if c.source == source)
        idle_w = self._idle_power.get((domain.name, source), None if counter.includes_idle else 0.0)
        net = joules - idle_w * time_s if idle_w is not None else None
        return EnergyResult(joules, source, idle_w, net, by_source)

    def _fold_peaks(self) -> None:
        """Fold every gauge's peak since its last reset into every open window. Each begin
        resets the gauges, so a window's peak is the max over the pieces it spans."""
        if not self._open:
            return
        for gauge in self.gauges:
            value = gauge.peak_bytes()
            if value is None:
                continue
            for window in self._open.values():
                seen = window.peaks.get(gauge.kind)
                window.peaks[gauge.kind] = value if seen is None else max(seen, value)

    # -- what was used -----------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Which counters and gauges this meter uses, and why better ones are missing."""
        return {
            "energy_counters": {d.name: {c.source: c.description for c in d.counters} for d in self.domains},
            "energy_notes": {d.name: d.note for d in self.domains if d.note},
            "peak_memory_kinds": [g.kind for g in self.gauges],
            "poll_interval_s": self.poll_interval_s,
            "counter_update_periods": {
                f"{d.name} {c.source}": {
                    "update_period_s": c.update_period_s,
                    "measured": bool(getattr(c, "period_measured", False)),
                }
                for d in self.domains
                for c in d.counters
                if c.update_period_s > 0
            },
            "idle_measured_s": self.idle.time_s if self.idle is not None else 0.0,
            "idle_age_s": self.idle_age_s,
            "idle_settle_s": self.settling[0] if self.settling is not None else None,
            "idle_settled": self.settling[1] if self.settling is not None else None,
            "idle_note": None
            if self.idle is not None or any(c.includes_idle for d in self.domains for c in d.counters)
            else "no idle baseline: every counter estimates this process's own work (idle part 0)",
        }


@dataclass(frozen=True)
class KeptIdle:
    power_w: dict[str, float]  # "domain source" -> W
    age_s: float


class IdleCache:
    """This machine's last idle baseline of one device, in a small JSON file
    (``$XDG_CACHE_HOME/bpfree/idle-HOST-DEVICE.json``, or ``path``): per counter its idle power,
    the counters it was taken with and when. A baseline older than ``max_age_s``, or of other
    counters, is not reused; a file that cannot be read is ignored (and rewritten)."""

    def __init__(self, device: str, max_age_s: float, path: str | None = None, clock=time.time) -> None:
        if path is None:
            base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
            host = re.sub(r"[^A-Za-z0-9._-]", "_", platform.node() or "host")
            path = os.path.join(base, "bpfree", f"idle-{host}-{re.sub(r'[^A-Za-z0-9._-]', '_', device)}.json")
        self.path, self.max_age_s, self.clock = path, max_age_s, clock

    def load(self, sources: list[str]) -> KeptIdle | None:
        if self.max_age_s <= 0:
            return None
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.loads(f.read(65536))
            age = self.clock() - float(data["taken_at"])
            power = {str(k): float(v) for k, v in data["power_w"].items()}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        if data.get("sources") != sources or not 0 <= age <= self.max_age_s or set(power) != set(sources):
            return None
        if not all(math.isfinite(w) and w >= 0 for w in power.values()):
            return None
        return KeptIdle(power, age)

    def save(self, sources: list[str], power_w: dict[str, float]) -> None:
        if self.max_age_s <= 0 or set(power_w) != set(sources):
            return
        try:
            write_text_atomic(self.path, json.dumps({"taken_at": self.clock(), "sources": sources, "power_w": power_w}))
        except (OSError, BpfreeError):
            pass  # no cache: the next job measures its own


def _untrustworthy(counter: EnergyCounter, delta: float | None, time_s: float) -> str | None:
    """Why a reading of a whole device (board, package) cannot be this window's energy, or
    None: a window shorter than the counter's update period (it reads 0 J, or one update's
    worth, however busy the device was), or 0 J over a real span of time (a powered device
    never draws nothing: the counter did not move). Zeus warns on the same two."""
    if delta is None or not counter.includes_idle or time_s <= 0:
        return None
    if time_s < counter.update_period_s:
        how = "measured" if getattr(counter, "period_measured", False) else "assumed"
        return (
            f"window of {1e3 * time_s:.0f} ms is shorter than the counter's update period "
            f"(~{1e3 * counter.update_period_s:.0f} ms, {how}), read {delta:.3f} J"
        )
    if delta == 0:
        return f"read 0 J over {time_s:.3f} s (a powered device never draws nothing: the counter did not move)"
    return None


def gpu_domain(gpu: NvmlGpu, clock: Callable[[], float] = time.perf_counter) -> Domain:
    """The NVML counter where the board has one, with polling always alongside: it is the
    fallback, and the two side by side are a check on each other. Between them, where the
    driver offers it, the instantaneous power polled: a window shorter than the counter's
    update period takes it before the ~1 s average that ``nvmlDeviceGetPowerUsage`` gives."""
    polled = PolledPower(nvml_power_w(gpu.nvml, gpu.handle), clock=clock)
    instant_w, why_not = nvml_instant_power_w(gpu.nvml, gpu.handle)
    instant = []
    if instant_w is not None:
        instant = [
            PolledPower(
                instant_w,
                clock=clock,
                source="nvml-polling-instant",
                description="NVML instantaneous board power (NVML_FI_DEV_POWER_INSTANT), polled and integrated",
            )
        ]
    notes = [gpu.problem] if gpu.problem else []
    if gpu.mig:
        notes.append("a MIG instance: NVML reports power and energy for whole boards, not for instances")
    if why_not is not None:
        notes.append(why_not)
    if gpu.energy_counter_error is None:
        counter = NvmlEnergyCounter(gpu.nvml, gpu.handle, board=gpu.index)
        return Domain("gpu", [counter, *instant, polled], note="; ".join(notes) or None)
    return Domain("gpu", [*instant, polled], note="; ".join(notes + [gpu.energy_counter_error]))


def _device_used(gpu: NvmlGpu) -> Callable[[], float]:
    return lambda: float(gpu.nvml.nvmlDeviceGetMemoryInfo(gpu.handle).used)
