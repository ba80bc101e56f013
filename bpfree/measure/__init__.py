"""Tier 2, measurement (imports core only): energy, time, peak memory and CO2 in named windows, independent of what is
measured. ``Meter`` (windows over energy counters and memory gauges), ``CarbonTracker``
(CodeCarbon, once per run), ``hardware_metadata``. See meter.py for the sources used."""

from bpfree.measure.carbon import CarbonResult, CarbonTracker
from bpfree.measure.machine import hardware_metadata
from bpfree.measure.meter import (
    FIT,
    IDLE,
    TEST,
    TRIAL,
    Domain,
    EnergyResult,
    IdleCache,
    MeasurementSettings,
    Meter,
    OpenWindow,
    WindowResult,
    combine_windows,
    epoch_window,
)

__all__ = [
    "FIT",
    "IDLE",
    "TEST",
    "TRIAL",
    "OpenWindow",
    "epoch_window",
    "CarbonResult",
    "CarbonTracker",
    "Domain",
    "EnergyResult",
    "IdleCache",
    "MeasurementSettings",
    "Meter",
    "WindowResult",
    "combine_windows",
    "hardware_metadata",
]
