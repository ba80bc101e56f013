"""CO2 and whole-machine energy from CodeCarbon's offline tracker, once per run.

CodeCarbon's energy is its own figure for the whole machine (CPU + GPU + RAM, with its own
estimates where it has no meter); the GPU and CPU figures of the run come from the meter.
Its start costs about a second (hardware detection), so it is started once, outside the
measured windows, never per epoch. Offline: the country's carbon intensity comes from its
bundled tables, nothing is sent. A failure is recorded, never raised.

A run killed and resumed is several pieces, each with its own tracker. While it trains, a
piece's totals are taken (CodeCarbon's ``flush``) at most every ``FLUSH_S`` seconds when the
run checkpoints, and the checkpoint keeps them; the resumed piece is given them as
``earlier``, adds its own, and ``emissions.csv`` gets one row per piece (CodeCarbon's
columns), written atomically by us rather than by CodeCarbon."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpfree.core.io import write_csv_atomic

CSV_NAME = "emissions.csv"
KWH = 3.6e6  # J
FLUSH_S = 30.0  # at most this often are a piece's totals taken for its checkpoint


@dataclass(frozen=True)
class CarbonResult:
    co2_kg: float | None = None
    energy_j: float | None = None  # CodeCarbon's whole-machine energy over the tracked span
    csv: str | None = None
    error: str | None = None
    start_s: float | None = None  # what starting and stopping the tracker cost (wall time)
    stop_s: float | None = None
    pieces: int = 1  # the pieces (processes) whose rows are summed in co2_kg and energy_j


def _latest_handler():
    """A CodeCarbon output handler that keeps the last totals it is given (flush and stop)."""
    from codecarbon.output_methods.base_output import BaseOutput

    class Latest(BaseOutput):
        values: dict[str, Any] | None = None

        def out(self, total, delta) -> None:
            self.values = dict(total.values)

    return Latest()


def _float(row: dict[str, Any], key: str) -> float | None:
    try:
        return float(row[key])
    except (KeyError, TypeError, ValueError):
        return None


def _import_tracker():
    from codecarbon import OfflineEmissionsTracker

    return OfflineEmissionsTracker


def _import_problem(err: ImportError) -> str:
    missing = getattr(err, "name", None)
    if missing == "codecarbon" or (missing or "").startswith("codecarbon."):
        return "codecarbon not installed"
    return f"codecarbon failed to import: {type(err).__name__}: {err}"


def _accepts(klass, name: str) -> bool:
    """Whether ``klass(...)`` takes keyword ``name`` (CodeCarbon's subclasses pass their
    base's keywords on through ``**kwargs``, so the bases are asked too)."""
    for base in getattr(klass, "__mro__", (klass,)):
        init = base.__dict__.get("__init__")
        if init is None:
            continue
        try:
            if name in inspect.signature(init).parameters:
                return True
        except (TypeError, ValueError):
            continue
    return False


class CarbonTracker:
    """``earlier``: the rows of the pieces before this one (from the checkpoint).
    ``gpu_ids``: NVML indices of the GPUs the run uses (``Meter.nvml_gpu_ids``); CodeCarbon
    counts only these where it takes ``gpu_ids`` (None: every GPU it finds).

    Started and stopped by the meter's window it is given (``Meter.window(FIT, carbon=...)``);
    :meth:`off` is one that tracks nothing and says why (``codecarbon_error``)."""

    @classmethod
    def off(cls, reason: str) -> CarbonTracker:
        """A tracker that never starts CodeCarbon; its result's error is ``reason``."""
        tracker = cls(".", "USA")
        tracker._off = reason
        return tracker

    def __init__(
        self,
        out_dir: str | Path,
        country_iso_code: str,
        project_name: str = "bpfree",
        earlier: Sequence[dict[str, Any]] = (),
        clock=time.monotonic,
        gpu_ids: Sequence[int] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.country_iso_code = country_iso_code
        self.project_name = project_name
        self.earlier = [dict(row) for row in earlier]
        self.clock = clock
        self.gpu_ids = None if gpu_ids is None else [int(i) for i in gpu_ids]
        self._tracker = None
        self._handler = None
        self._error: str | None = None
        self._start_s: float | None = None
        self._last_flush: float | None = None
        self._result: CarbonResult | None = None
        self._off: str | None = None

    def start(self) -> None:
        if self._off is not None:
            return
        t0 = time.perf_counter()
        try:
            OfflineEmissionsTracker = _import_tracker()
        except ImportError as err:  # optional: its absence is stated, the run goes on
            self._error = _import_problem(err)
            self._start_s = time.perf_counter() - t0
            self._last_flush = self.clock()
            return
        try:
            # its constructor logs at INFO before it applies log_level
            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            self._handler = _latest_handler()
            restrict = {}
            if self.gpu_ids is not None and _accepts(OfflineEmissionsTracker, "gpu_ids"):
                restrict["gpu_ids"] = list(self.gpu_ids)  # else it counts every GPU it sees
            self._tracker = OfflineEmissionsTracker(
                country_iso_code=self.country_iso_code,
                project_name=self.project_name,
                output_dir=str(self.out_dir),
                output_methods=[],  # emissions.csv is written by stop(), atomically
                output_handlers=[self._handler],
                log_level="error",
                allow_multiple_runs=True,  # parallel workflow jobs on one machine
                **restrict,
            )
            self._tracker.start()
        except Exception as err:
            self._tracker = None
            self._error = f"start failed: {type(err).__name__}: {err}"
        self._start_s = time.perf_counter() - t0
        self._last_flush = self.clock()

    def rows_so_far(self) -> list[dict[str, Any]]:
        """The earlier pieces' rows and this piece's totals as last taken, taking them anew
        when ``FLUSH_S`` has passed (a flush costs ~0.1 s the first time, well under 1 ms
        after): what a checkpoint keeps, so that a kill loses at most ``FLUSH_S`` of CO2."""
        if self._off is not None:
            return []
        if self._tracker is not None and self.clock() - self._last_flush >= FLUSH_S:
            self._last_flush = self.clock()
            try:
                self._tracker.flush()
            except Exception as err:  # noqa: BLE001  (recorded, never raised)
                self._error = f"flush failed: {type(err).__name__}: {err}"
        latest = getattr(self._handler, "values", None)
        return self.earlier + ([dict(latest)] if latest else [])

    def stop(self) -> CarbonResult:
        """Stops the tracker (exactly once; later calls return the same result). CO2 and
        energy are summed over the earlier pieces' rows and this piece's."""
        if self._result is not None:
            return self._result
        if self._off is not None:
            self._result = CarbonResult(error=self._off)
            return self._result
        if self._tracker is None:
            self._result = CarbonResult(
                error=self._error or "not started", start_s=self._start_s, pieces=len(self.earlier) + 1
            )
            return self._result
        t0 = time.perf_counter()
        try:
            co2_kg = self._tracker.stop()
            data = self._tracker.final_emissions_data
            kwh = float(data.energy_consumed) if data is not None else None
            error = None if co2_kg is not None else "CodeCarbon returned no emissions"
        except Exception as err:
            co2_kg, kwh, error = None, None, f"stop failed: {type(err).__name__}: {err}"
        row = dict(getattr(self._handler, "values", None) or {})
        row.update(emissions=co2_kg, energy_consumed=kwh)
        rows = self.earlier + [row]
        co2 = [_float(r, "emissions") for r in rows]
        energy = [_float(r, "energy_consumed") for r in rows]
        csv = self.out_dir / CSV_NAME
        try:
            write_csv_atomic(csv, rows, list(dict.fromkeys(k for r in rows for k in r)))
        except OSError as err:
            error = error or f"writing {CSV_NAME} failed: {err}"
        self._result = CarbonResult(
            co2_kg=None if None in co2 else sum(co2),  # type: ignore[arg-type]
            energy_j=None if None in energy else sum(energy) * KWH,  # type: ignore[operator]
            csv=str(csv) if csv.is_file() else None,
            error=error,
            start_s=self._start_s,
            stop_s=time.perf_counter() - t0,
            pieces=len(rows),
        )
        self._tracker = None
        return self._result
