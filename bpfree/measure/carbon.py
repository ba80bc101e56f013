"""CO2 and whole-machine energy from CodeCarbon's offline tracker, once per run.

CodeCarbon's energy is its own figure for the whole machine (CPU + GPU + RAM, with its own
estimates where it has no meter); the GPU and CPU figures of the run come from the meter.
Its start costs about a second (hardware detection), so it is started once, outside the
measured windows, never per epoch. Offline: the country's carbon intensity comes from its
bundled tables, nothing is sent. A failure is recorded, never raised."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

CSV_NAME = "emissions.csv"
KWH = 3.6e6  # J


@dataclass(frozen=True)
class CarbonResult:
    co2_kg: float | None = None
    energy_j: float | None = None  # CodeCarbon's whole-machine energy over the tracked span
    csv: str | None = None
    error: str | None = None
    start_s: float | None = None  # what starting and stopping the tracker cost (wall time)
    stop_s: float | None = None


class CarbonTracker:
    def __init__(self, out_dir: str | Path, country_iso_code: str, project_name: str = "bpfree") -> None:
        self.out_dir = Path(out_dir)
        self.country_iso_code = country_iso_code
        self.project_name = project_name
        self._tracker = None
        self._error: str | None = None
        self._start_s: float | None = None
        self._result: CarbonResult | None = None

    def start(self) -> None:
        t0 = time.perf_counter()
        try:
            from codecarbon import OfflineEmissionsTracker

            # its constructor logs at INFO before it applies log_level
            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            (self.out_dir / CSV_NAME).unlink(missing_ok=True)  # a rerun replaces, not appends
            self._tracker = OfflineEmissionsTracker(
                country_iso_code=self.country_iso_code,
                project_name=self.project_name,
                output_dir=str(self.out_dir),
                output_file=CSV_NAME,
                log_level="error",
                allow_multiple_runs=True,  # parallel workflow jobs on one machine
            )
            self._tracker.start()
        except Exception as err:
            self._tracker = None
            self._error = f"start failed: {type(err).__name__}: {err}"
        self._start_s = time.perf_counter() - t0

    def stop(self) -> CarbonResult:
        """Stops the tracker (exactly once; later calls return the same result)."""
        if self._result is not None:
            return self._result
        if self._tracker is None:
            self._result = CarbonResult(error=self._error or "not started", start_s=self._start_s)
            return self._result
        t0 = time.perf_counter()
        try:
            co2_kg = self._tracker.stop()
            data = self._tracker.final_emissions_data
            energy_j = float(data.energy_consumed) * KWH if data is not None else None
            error = None if co2_kg is not None else "CodeCarbon returned no emissions"
        except Exception as err:
            co2_kg, energy_j, error = None, None, f"stop failed: {type(err).__name__}: {err}"
        csv = self.out_dir / CSV_NAME
        self._result = CarbonResult(
            co2_kg=float(co2_kg) if co2_kg is not None else None,
            energy_j=energy_j,
            csv=str(csv) if csv.is_file() else None,
            error=error,
            start_s=self._start_s,
            stop_s=time.perf_counter() - t0,
        )
        self._tracker = None
        return self._result
