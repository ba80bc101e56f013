"""Measurement: energy counters and their fallbacks against a stand-in NVML that serves a
known power curve and its exact energy counter, RAPL wrap, peak folding over nested windows,
CodeCarbon offline (no network, failures recorded), and a real CPU run's metrics."""

from __future__ import annotations

import csv
import ipaddress
import json
import math
import os
import re
import socket
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from bpfree.core.errors import BpfreeError
from bpfree.engine.resolve import load_settings
from bpfree.measure import CarbonTracker, EnergyResult, MeasurementSettings, Meter, WindowResult, combine_windows
from bpfree.measure.carbon import FLUSH_S
from bpfree.measure.energy import CpuTimeEstimate, PolledPower, RaplCounter
from bpfree.measure.memory import PeakGauge
from bpfree.measure.meter import Domain, gpu_domain
from bpfree.measure.nvml import open_gpu

ROOT = Path(__file__).resolve().parents[1]


# -- a stand-in for pynvml -------------------------------------------------------------------
class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class FakeNvml(types.ModuleType):
    """pynvml's calls that the meter uses, serving power ``power_w(t)`` in mW and the exact
    energy ``energy_j(t)`` as a counter in mJ (offset, as a real counter counts from driver
    load). ``fail`` names calls that raise; ``counter_shift_mj`` moves the counter (reset)."""

    class NVMLError(Exception):
        pass

    def __init__(
        self, clock, power_w, energy_j, *, counter_supported: bool = True, instant_w=None, read_cost_s: float = 0.0
    ) -> None:
        super().__init__("pynvml")
        self.clock, self.power_w, self.energy_j = clock, power_w, energy_j
        self.counter_supported = counter_supported
        self.fail: set[str] = set()
        self.counter_shift_mj = 0
        self.shutdowns = 0
        self.read_cost_s = read_cost_s  # each counter read advances the clock (back-to-back reads)
        if instant_w is not None:  # the driver offers NVML_FI_DEV_POWER_INSTANT (W at time t; None: error)
            self.instant_w = instant_w
            self.NVML_FI_DEV_POWER_INSTANT = 186
            self.nvmlDeviceGetFieldValues = self._field_values

    def _field_values(self, handle, field_ids):
        assert field_ids == [186]
        watts = self.instant_w(self.clock())
        value = types.SimpleNamespace(uiVal=round(1000 * (watts or 0)))
        return [types.SimpleNamespace(fieldId=186, valueType=1, nvmlReturn=0 if watts is not None else 3, value=value)]

    def _check(self, call: str) -> None:
        if call in self.fail:
            raise self.NVMLError(f"{call}: GPU is lost")

    def nvmlInit(self):
        self._check("nvmlInit")

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("handle", index)

    def nvmlDeviceGetName(self, handle):
        return b"Fake H100"

    def nvmlDeviceGetIndex(self, handle):
        return handle[1]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        self._check("nvmlDeviceGetTotalEnergyConsumption")
        if self.read_cost_s:
            self.clock.advance(self.read_cost_s)
        if not self.counter_supported:
            raise self.NVMLError("Not Supported")
        return 987_654_321 + self.counter_shift_mj + round(1000 * self.energy_j(self.clock()))

    def nvmlDeviceGetPowerUsage(self, handle):
        self._check("nvmlDeviceGetPowerUsage")
        return round(1000 * self.power_w(self.clock()))

    def nvmlDeviceGetMemoryInfo(self, handle):
        return types.SimpleNamespace(used=2 * 1024**3, total=80 * 1024**3)


def board_power(t: float) -> float:  # W: a board warming up (ramp) and breathing (1.5 s period)
    return 150 + 50 * t + 40 * math.sin(2 * math.pi * t / 1.5)


def board_energy(t: float) -> float:  # J: the exact integral of board_power from 0
    return 150 * t + 25 * t * t + 40 * 1.5 / (2 * math.pi) * (1 - math.cos(2 * math.pi * t / 1.5))


@pytest.fixture
def fake_gpu(monkeypatch):
    """Build a meter over a FakeNvml put where ``import pynvml`` finds it; returns
    (meter, fake nvml, clock). The sampler thread is not started: ``run`` ticks by hand."""

    def build(power_w=board_power, energy_j=board_energy, **kwargs):
        clock = FakeClock()
        nvml = FakeNvml(clock, power_w, energy_j, **kwargs)
        monkeypatch.setitem(sys.modules, "pynvml", nvml)
        gpu, why = open_gpu(index=0)
        assert gpu is not None, why
        domain = gpu_domain(gpu, clock=clock)
        meter = Meter(
            [domain], [], clock=clock, sleep=lambda s: run(meter, clock, s), primary_domain="gpu", on_close=gpu.close
        )
        return meter, nvml, clock

    return build


def run(meter: Meter, clock: FakeClock, seconds: float, poll_s: float = 0.2) -> None:
    """Let ``seconds`` pass, the sampler polling every ``poll_s`` (the paper's 0.2 s)."""
    for _ in range(round(seconds / poll_s)):
        clock.advance(poll_s)
        for domain in meter.domains:
            for counter in domain.counters:
                counter.tick()


def window(meter: Meter, clock: FakeClock, seconds: float, name: str = "w"):
    meter.begin_window(name)
    run(meter, clock, seconds)
    return meter.end_window(name)


# -- GPU energy ------------------------------------------------------------------------------
def test_counter_delta_is_converted_from_millijoules(fake_gpu):
    meter, _, clock = fake_gpu(power_w=lambda t: 250.0, energy_j=lambda t: 250.0 * t)
    clock.advance(3.0)
    result = window(meter, clock, 4.0)
    energy = result.of("gpu")
    assert energy.source == "nvml-counter"
    assert energy.joules == pytest.approx(1000.0, abs=1e-3)  # 250 W x 4 s, not 1e6 (mJ) or 1 (kJ)
    assert result.time_s == pytest.approx(4.0)
    assert result.problems == ()


@pytest.mark.parametrize("counter_supported", [True, False])
def test_polling_integrates_a_known_curve_within_one_percent(fake_gpu, counter_supported):
    meter, _, clock = fake_gpu(counter_supported=counter_supported)
    clock.advance(0.1)  # start between two polls
    energy = window(meter, clock, 4.0).of("gpu")
    exact = board_energy(4.1) - board_energy(0.1)  # a rectangle rule would be 2% off here
    assert energy.by_source["nvml-polling"] == pytest.approx(exact, rel=0.01)
    assert energy.source == ("nvml-counter" if counter_supported else "nvml-polling")
    assert energy.joules == pytest.approx(exact, rel=0.01)
    if not counter_supported:
        assert "Not Supported" in meter.domains[0].note


def test_the_sampler_thread_polls_between_reads():
    # real time, on a linear ramp, which the trapezoid rule integrates exactly at any spacing
    import time

    t0 = time.perf_counter()
    calls = []

    def ramp() -> float:
        calls.append(1)
        return 100 + 50 * (time.perf_counter() - t0)

    meter = Meter([Domain("gpu", [PolledPower(ramp)])], [], poll_interval_s=0.005, primary_domain="gpu")
    with meter:
        a = time.perf_counter()
        meter.begin_window("w")
        time.sleep(0.3)
        result = meter.end_window("w")
        b = time.perf_counter()
        assert meter._sampler.is_alive()
    assert meter._sampler is None  # stopped and joined on close
    assert len(calls) > 5  # the thread sampled between the two reads
    exact = 100 * (b - a) + 25 * ((b - t0) ** 2 - (a - t0) ** 2)
    assert result.of("gpu").joules == pytest.approx(exact, rel=0.01)


def test_idle_baseline_is_subtracted(fake_gpu):
    idle_w, busy_w = 60.0, 260.0
    meter, _, clock = fake_gpu(
        power_w=lambda t: idle_w if t < 5 else busy_w,
        energy_j=lambda t: idle_w * min(t, 5) + busy_w * max(t - 5, 0),
    )
    idle = meter.measure_idle(5.0)
    assert idle.of("gpu").joules == pytest.approx(300.0, abs=1e-3)
    energy = window(meter, clock, 10.0).of("gpu")
    assert energy.idle_power_w == pytest.approx(idle_w, rel=1e-6)
    assert energy.joules == pytest.approx(2600.0, abs=1e-3)
    assert energy.net_joules == pytest.approx(2600.0 - 600.0, abs=1e-2)


def test_without_baseline_there_is_no_net_energy(fake_gpu):
    meter, _, clock = fake_gpu()
    assert meter.measure_idle(0.0) is None
    energy = window(meter, clock, 2.0).of("gpu")
    assert energy.idle_power_w is None and energy.net_joules is None


def test_counter_going_back_falls_back_to_polling_and_is_recorded(fake_gpu):
    meter, nvml, clock = fake_gpu()
    meter.begin_window("w")
    run(meter, clock, 4.0)
    nvml.counter_shift_mj = -(10**9)  # the counter wrapped or the driver reloaded
    result = meter.end_window("w")
    energy = result.of("gpu")
    assert energy.by_source["nvml-counter"] is None
    assert energy.source == "nvml-polling"
    assert energy.joules == pytest.approx(board_energy(4.0), rel=0.01)
    assert any("counter went back" in p for p in result.problems)


def test_a_failing_counter_call_falls_back_to_polling_and_is_recorded(fake_gpu):
    meter, nvml, clock = fake_gpu()
    meter.begin_window("w")
    run(meter, clock, 4.0)
    nvml.fail.add("nvmlDeviceGetTotalEnergyConsumption")
    result = meter.end_window("w")
    assert result.of("gpu").source == "nvml-polling"
    assert any("nvmlDeviceGetTotalEnergyConsumption failed" in p for p in result.problems)


def test_when_every_nvml_call_fails_the_window_has_no_energy_and_says_why(fake_gpu):
    meter, nvml, clock = fake_gpu()
    meter.begin_window("w")
    nvml.fail.update({"nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage"})
    run(meter, clock, 1.0)
    result = meter.end_window("w")
    energy = result.of("gpu")
    assert energy.joules is None and energy.source is None and energy.net_joules is None
    assert any("failed samples" in p for p in result.problems)
    assert any("power sample failed" in p for p in result.problems)
    meter.close()
    assert nvml.shutdowns == 1


def test_no_nvml_is_a_reason_not_an_error(monkeypatch):
    nvml = FakeNvml(FakeClock(), board_power, board_energy)
    nvml.fail.add("nvmlInit")
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    gpu, why = open_gpu(index=0)
    assert gpu is None and "NVML unavailable" in why


def test_a_failing_nvml_does_not_fail_the_run(fake_gpu, monkeypatch, tmp_path):
    import time

    from bpfree.core.spec import EarlyStopping, Machine, Measurement, RunSpec
    from bpfree.engine import run as run_module

    _, nvml, _ = fake_gpu(power_w=lambda t: 100.0, energy_j=lambda t: 100.0 * t)
    real_time = gpu_domain(open_gpu(index=0)[0], clock=time.perf_counter)  # a real run takes real time
    meter = Meter([real_time], [], poll_interval_s=0.01, primary_domain="gpu")
    nvml.fail.add("nvmlDeviceGetTotalEnergyConsumption")  # broken from the first epoch
    monkeypatch.setattr(run_module.Meter, "for_device", lambda device, settings: meter)
    cfg = RunSpec(
        algorithm="bp",
        dataset="digits",
        seed=0,
        arch="mlp:16",
        early_stopping=EarlyStopping(max_epochs=2),
        machine=Machine(device="cpu"),
        measurement=Measurement(idle_seconds=0, codecarbon=False),
    )
    result = run_module.train(cfg, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert result.fit.status == "ok" and metrics["status"] == "ok"
    assert metrics["energy_source"] == "nvml-polling" and metrics["energy_j"] > 0
    assert any("nvmlDeviceGetTotalEnergyConsumption failed" in p for p in metrics["measurement_problems"])
    with open(tmp_path / "history.csv", newline="") as fh:
        assert {row["energy_source"] for row in csv.DictReader(fh)} == {"nvml-polling"}


# -- CPU energy ------------------------------------------------------------------------------
def rapl_zone(root: Path, name: str, zone: str, uj: int, span: int) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(zone + "\n")
    (path / "energy_uj").write_text(f"{uj}\n")
    (path / "max_energy_range_uj").write_text(f"{span}\n")
    return path


def test_rapl_sums_packages_and_survives_a_wrap(tmp_path):
    p0 = rapl_zone(tmp_path, "intel-rapl:0", "package-0", 900_000, 1_000_000)
    p1 = rapl_zone(tmp_path, "intel-rapl:1", "package-1", 0, 1_000_000)
    core = rapl_zone(tmp_path, "intel-rapl:0:0", "core", 0, 1_000_000)  # inside package-0
    rapl, why = RaplCounter.discover(tmp_path)
    assert why is None and rapl.zones == [p0, p1]
    meter = Meter([Domain("cpu", [rapl])], [])
    meter.begin_window("w")
    (p0 / "energy_uj").write_text("100000\n")  # wrapped: 0.1 J to the top, 0.1 J after
    (p1 / "energy_uj").write_text("500000\n")
    (core / "energy_uj").write_text("999999\n")  # not counted twice
    energy = meter.end_window("w").of("cpu")
    assert energy.source == "rapl"
    assert energy.joules == pytest.approx(0.2 + 0.5)


def test_unreadable_rapl_is_a_reason(tmp_path):
    assert RaplCounter.discover(tmp_path / "nothing") == (None, f"no RAPL package zones under {tmp_path / 'nothing'}")


def test_cpu_estimate_is_labelled_and_has_no_idle_part():
    estimate = CpuTimeEstimate(tdp_w=16.0, logical_cpus=2)
    assert estimate.watts_per_cpu == 8.0 and "estimate" in estimate.description
    meter = Meter([Domain("cpu", [estimate])], [])
    assert meter.measure_idle(5.0) is None  # nothing to measure, so no time spent on it
    meter.begin_window("w")
    sum(i * i for i in range(200_000))
    energy = meter.end_window("w").of("cpu")
    assert energy.source == "estimate" and energy.joules > 0
    assert energy.idle_power_w == 0.0 and energy.net_joules == energy.joules


# -- peak memory -----------------------------------------------------------------------------
class ScriptedGauge(PeakGauge):
    kind = "scripted"

    def __init__(self) -> None:
        self.now = 0.0
        self.peak = 0.0

    def set(self, value: float) -> None:
        self.now = value
        self.peak = max(self.peak, value)

    def peak_bytes(self) -> float:
        return self.peak

    def reset(self) -> None:
        self.peak = self.now


def test_nested_windows_keep_their_own_peaks():
    gauge = ScriptedGauge()
    meter = Meter([], [gauge])
    mb = 1024 * 1024
    meter.begin_window("run")
    meter.begin_window("fit")
    gauge.set(500 * mb)
    gauge.set(10 * mb)
    meter.begin_window("epoch 1")  # resets the gauge: epoch 1 must not see the 500
    gauge.set(100 * mb)
    first = meter.end_window("epoch 1")
    meter.begin_window("epoch 2")
    gauge.set(700 * mb)
    gauge.set(5 * mb)
    second = meter.end_window("epoch 2")
    fit = meter.end_window("fit")
    run_ = meter.end_window("run")
    assert first.peaks_mb == {"scripted": 100.0}
    assert second.peaks_mb == {"scripted": 700.0}
    assert fit.peaks_mb == run_.peaks_mb == {"scripted": 700.0}
    # and the 500 before the epochs reached both outer windows, not only the innermost open one
    meter.begin_window("run")
    meter.begin_window("fit")
    gauge.set(500 * mb)
    gauge.set(10 * mb)
    meter.begin_window("epoch")
    meter.end_window("epoch")
    meter.end_window("fit")
    assert meter.end_window("run").peaks_mb == {"scripted": 500.0}


# -- CodeCarbon ------------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to reach a non-loopback address (or resolve a name) is refused and
    recorded."""
    attempts: list = []
    connect, connect_ex, sendto = socket.socket.connect, socket.socket.connect_ex, socket.socket.sendto

    def loopback(address) -> bool:
        if isinstance(address, tuple):
            try:
                return ipaddress.ip_address(address[0]).is_loopback
            except ValueError:
                return address[0] == "localhost"
        return True  # unix sockets

    def guard(original):
        def call(sock, *args):
            address = args[-1]
            if not loopback(address):
                attempts.append(address)
                raise OSError(f"network access attempted: {address}")
            return original(sock, *args)

        return call

    def resolve(host, *args, **kwargs):
        attempts.append(("getaddrinfo", host))
        raise socket.gaierror(f"name resolution attempted: {host}")

    monkeypatch.setattr(socket.socket, "connect", guard(connect))
    monkeypatch.setattr(socket.socket, "connect_ex", guard(connect_ex))
    monkeypatch.setattr(socket.socket, "sendto", guard(sendto))
    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return attempts


def test_a_cpu_run_records_an_estimate_and_codecarbon_offline(tmp_path, no_network):
    from bpfree.cli import main

    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"measurement": {"idle_seconds": 1.0, "country_iso_code": "FRA"}}))
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--algorithm",
            "bp",
            "--dataset",
            "digits",
            "--seed",
            "1",
            "--arch",
            "mlp:32",
            "--max-epochs",
            "2",
            "--device",
            "cpu",
            "--config",
            str(config),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert no_network == []
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["energy_source"] == "estimate" and metrics["energy_device"] == "cpu"
    assert metrics["cpu_energy_source"] == "estimate" and metrics["cpu_energy_j"] > 0
    assert "estimate" in metrics["measurement"]["energy_counters"]["cpu"]["estimate"]
    assert metrics["codecarbon_error"] is None and metrics["co2_kg"] > 0
    assert metrics["measurement"]["country_iso_code"] == "FRA"
    with open(out / "emissions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and rows[0]["country_iso_code"] == "FRA"
    assert metrics["peak_memory_kind"].startswith("process-rss") and metrics["peak_memory_mb"] > 0
    assert metrics["peak_allocated_mb"] is None  # no CUDA allocator on a CPU run
    assert metrics["test_energy_source"] == "estimate" and metrics["test_time_s"] > 0
    for key in ("host", "cpu_model", "torch", "gpu_model", "gpu_driver", "cuda"):
        assert key in metrics["hardware"]
    with open(out / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["energy_source"] for r in rows} == {"estimate"} and all(float(r["energy_j"]) >= 0 for r in rows)


def test_codecarbon_failing_is_recorded_not_raised(tmp_path, monkeypatch):
    import codecarbon

    class Broken:
        def __init__(self, **kwargs):
            raise RuntimeError("no carbon data for this country")

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", Broken)
    tracker = CarbonTracker(tmp_path, "FRA")
    tracker.start()
    result = tracker.stop()
    assert result.co2_kg is None and "no carbon data" in result.error


def test_codecarbon_is_stopped_exactly_once(tmp_path, monkeypatch):
    import codecarbon

    stops = []

    class Counting:
        final_emissions_data = types.SimpleNamespace(energy_consumed=1e-6)

        def __init__(self, **kwargs):
            assert kwargs["country_iso_code"] == "FRA" and kwargs["output_dir"] == str(tmp_path)

        def start(self):
            pass

        def stop(self):
            stops.append(1)
            return 2e-7

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", Counting)
    tracker = CarbonTracker(tmp_path, "FRA")
    tracker.start()
    first, second = tracker.stop(), tracker.stop()
    assert stops == [1] and first is second
    assert first.co2_kg == 2e-7 and first.energy_j == pytest.approx(3.6)  # 1e-6 kWh


# -- a run in pieces (killed and resumed) ----------------------------------------------------
def test_peeking_a_window_leaves_it_open_and_agrees_with_its_end(fake_gpu):
    meter, _, clock = fake_gpu()
    meter.begin_window("fit")
    run(meter, clock, 2.0)
    so_far = meter.peek_window("fit")
    run(meter, clock, 1.0)
    whole = meter.end_window("fit")
    assert so_far.of("gpu").joules == pytest.approx(board_energy(2.0), rel=1e-4)
    assert whole.of("gpu").joules == pytest.approx(board_energy(3.0), rel=1e-4)
    assert WindowResult.from_dict(json.loads(json.dumps(so_far.to_dict()))) == so_far


def piece(time_s, joules_by_source, peak_mb, net=None):
    source = next(s for s, j in joules_by_source.items() if j is not None)
    energy = EnergyResult(joules_by_source[source], source, None, net, joules_by_source)
    return WindowResult("fit", time_s, {"gpu": energy}, {"torch-allocated": peak_mb})


def test_pieces_add_up_from_the_source_every_piece_measured():
    first = piece(10.0, {"nvml-counter": 1000.0, "nvml-polling": 990.0}, 300.0, net=400.0)
    second = piece(5.0, {"nvml-counter": 500.0, "nvml-polling": 505.0}, 500.0, net=200.0)
    whole = combine_windows([first, second], "fit")
    gpu = whole.of("gpu")
    assert whole.time_s == 15.0 and whole.peaks_mb == {"torch-allocated": 500.0}
    assert (gpu.joules, gpu.source, gpu.net_joules) == (1500.0, "nvml-counter", 600.0)
    assert gpu.idle_power_w == pytest.approx(60.0) and gpu.by_source["nvml-polling"] == 1495.0


def test_pieces_on_boards_with_other_sources_say_so_in_the_source():
    # requeued on a node whose board has no energy counter: polling is the only common source
    first = piece(10.0, {"nvml-counter": 1000.0, "nvml-polling": 990.0}, 300.0)
    second = piece(5.0, {"nvml-polling": 505.0}, 200.0)
    assert combine_windows([first, second], "fit").of("gpu").source == "nvml-polling"
    # no common source at all: the pieces' own figures, and a source naming both
    third = piece(5.0, {"estimate": 50.0}, 200.0)
    gpu = combine_windows([first, third], "fit").of("gpu")
    assert (gpu.joules, gpu.source) == (1050.0, "nvml-counter+estimate")


def test_codecarbon_rows_of_earlier_pieces_are_added_and_written_once_each(tmp_path, monkeypatch):
    import codecarbon

    clock = FakeClock()

    class Fake:
        def __init__(self, **kwargs):
            self.handler = kwargs["output_handlers"][0]
            self.final_emissions_data = types.SimpleNamespace(energy_consumed=2e-6)

        def start(self):
            pass

        def flush(self):
            self.handler.out(types.SimpleNamespace(values={"emissions": 1e-7, "energy_consumed": 1e-6}), None)

        def stop(self):
            self.handler.out(types.SimpleNamespace(values={"emissions": 3e-7, "energy_consumed": 2e-6}), None)
            return 3e-7

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", Fake)
    killed = CarbonTracker(tmp_path, "FRA", clock=clock)
    killed.start()
    assert killed.rows_so_far() == []  # nothing taken before FLUSH_S has passed
    clock.advance(FLUSH_S)
    kept = killed.rows_so_far()  # what the checkpoint keeps; then the process is killed
    assert [r["emissions"] for r in kept] == [1e-7]
    resumed = CarbonTracker(tmp_path, "FRA", earlier=kept, clock=clock)
    resumed.start()
    result = resumed.stop()
    assert result.pieces == 2 and result.co2_kg == pytest.approx(4e-7)
    assert result.energy_j == pytest.approx(3e-6 * 3.6e6)
    with open(tmp_path / "emissions.csv", newline="") as fh:
        assert [float(r["emissions"]) for r in csv.DictReader(fh)] == [1e-7, 3e-7]


# -- settings --------------------------------------------------------------------------------
def test_measurement_section_is_read_and_checked(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("measurement: {idle_seconds: 2, codecarbon: false, country_iso_code: DEU}\n")
    assert load_settings(path).measurement == MeasurementSettings(
        idle_seconds=2, codecarbon=False, country_iso_code="DEU"
    )
    for bad, message in [
        ("{idle_s: 2}", "unknown key 'idle_s' at measurement; valid keys: idle_seconds"),
        ("{codecarbon: 1}", "measurement.codecarbon: Input should be a valid boolean, got 1"),
        ("{idle_seconds: -1}", "measurement.idle_seconds: Input should be greater than or equal to 0"),
        ("{country_iso_code: france}", "measurement.country_iso_code: expected CodeCarbon's carbon intensity"),
    ]:
        path.write_text(f"measurement: {bad}\n")
        with pytest.raises(BpfreeError, match=re.escape(message)):
            load_settings(path)


# -- the GPU check script --------------------------------------------------------------------
def test_gpu_check_says_so_on_a_machine_without_a_gpu():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts/gpu_check.py")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA GPU" in proc.stdout and "Traceback" not in proc.stderr


# -- counters that cannot be trusted (issue 17 #4) -------------------------------------------
def test_a_counter_reading_0_j_while_polling_reads_more_gives_polling_and_says_so(fake_gpu):
    # a counter that never moves: 0 J for a whole fit would read as a free fit
    meter, _, clock = fake_gpu(power_w=lambda t: 200.0, energy_j=lambda t: 0.0)
    result = window(meter, clock, 5.0)
    energy = result.of("gpu")
    assert energy.source == "nvml-polling" and energy.joules == pytest.approx(1000.0, rel=1e-6)
    assert energy.by_source["nvml-counter"] is None  # not kept for combine_windows to pick
    assert any("nvml-counter: read 0 J over 5.000 s" in p and "not used" in p for p in result.problems)


def test_a_window_shorter_than_the_counters_update_period_uses_polling(fake_gpu):
    # the counter moves in 100 ms steps: a 60 ms test window reads 0 J, or one step's worth
    meter, _, clock = fake_gpu(power_w=lambda t: 300.0, energy_j=lambda t: 300.0 * 0.1 * math.floor(t / 0.1))
    clock.advance(1.01)
    meter.begin_window("test")
    clock.advance(0.06)
    result = meter.end_window("test")
    energy = result.of("gpu")
    assert energy.source == "nvml-polling" and energy.joules == pytest.approx(300.0 * 0.06, rel=1e-6)
    assert any("shorter than the counter's update period" in p for p in result.problems)


def stepped(power_w: float, step_s: float):
    """A counter that moves every ``step_s`` (a board's update period) at a constant power."""
    return lambda t: power_w * step_s * math.floor(t / step_s + 1e-9)


def test_the_counters_update_period_is_measured_and_used(fake_gpu, monkeypatch):
    """A board whose counter moves every 20 ms: measured once (per process and board), a 60 ms
    window is then the counter's own, where the assumed 100 ms would refuse it."""
    from bpfree.measure import energy

    monkeypatch.setattr(energy, "MEASURED_PERIODS", {})
    meter, nvml, clock = fake_gpu(power_w=lambda t: 300.0, energy_j=stepped(300.0, 0.02), read_cost_s=0.001)
    counter = meter.domains[0].counters[0]
    assert counter.update_period_s == 0.1 and not counter.period_measured
    meter.measure_periods = True
    meter.measure_idle(0)  # measures before anything else, even with no baseline
    assert counter.period_measured and counter.update_period_s == pytest.approx(0.02, abs=0.002)
    assert energy.MEASURED_PERIODS[0] == counter.update_period_s
    assert meter.describe()["counter_update_periods"]["gpu nvml-counter"]["measured"] is True
    nvml.read_cost_s = 0.0
    clock.t = 1.001
    meter.begin_window("test")
    clock.advance(0.06)
    result = meter.end_window("test")
    assert result.of("gpu").source == "nvml-counter" and result.problems == ()
    assert result.of("gpu").joules == pytest.approx(300.0 * 0.06, rel=1e-6)
    # a new meter on the same board in this process takes the measured period, not 100 ms
    again, _, _ = fake_gpu(power_w=lambda t: 300.0, energy_j=stepped(300.0, 0.02))
    assert again.domains[0].counters[0].update_period_s == counter.update_period_s


def test_a_counter_that_does_not_move_keeps_the_assumed_period(fake_gpu, monkeypatch):
    from bpfree.measure import energy

    monkeypatch.setattr(energy, "MEASURED_PERIODS", {})
    meter, _, _ = fake_gpu(power_w=lambda t: 300.0, energy_j=lambda t: 5.0, read_cost_s=0.01)
    meter.measure_periods = True
    meter.measure_counter_periods()
    counter = meter.domains[0].counters[0]
    assert counter.update_period_s == 0.1 and not counter.period_measured and energy.MEASURED_PERIODS == {}


def test_a_window_too_short_for_the_counter_takes_the_instantaneous_power_before_the_average(fake_gpu):
    """The board jumps from 100 W to 400 W: the averaged reading (~1 s) still says 100 W over
    a 60 ms window, the instantaneous field says 400 W. The window takes the instantaneous
    one, labelled, and keeps the averaged one beside it."""
    meter, _, clock = fake_gpu(
        power_w=lambda t: 100.0,  # NVML's 1 s average lags the jump
        energy_j=stepped(400.0, 0.1),
        instant_w=lambda t: 400.0,
    )
    sources = [c.source for c in meter.domains[0].counters]
    assert sources == ["nvml-counter", "nvml-polling-instant", "nvml-polling"]
    clock.advance(1.01)
    meter.begin_window("test")
    clock.advance(0.06)
    result = meter.end_window("test")
    gpu = result.of("gpu")
    assert gpu.source == "nvml-polling-instant" and gpu.joules == pytest.approx(400.0 * 0.06, rel=1e-6)
    assert gpu.by_source["nvml-polling"] == pytest.approx(100.0 * 0.06, rel=1e-6)
    assert any("shorter than the counter's update period (~100 ms, assumed)" in p for p in result.problems)
    # a long window is the counter's, as before
    long = window(meter, clock, 2.0)
    assert long.of("gpu").source == "nvml-counter"


def test_where_the_driver_lacks_the_instantaneous_field_the_average_is_used_and_noted(fake_gpu):
    meter, _, clock = fake_gpu(power_w=lambda t: 300.0, energy_j=stepped(300.0, 0.1), instant_w=lambda t: None)
    assert [c.source for c in meter.domains[0].counters] == ["nvml-counter", "nvml-polling"]
    assert "instantaneous power field not offered" in meter.domains[0].note
    clock.advance(1.01)
    meter.begin_window("test")
    clock.advance(0.06)
    assert meter.end_window("test").of("gpu").source == "nvml-polling"


def test_a_counter_that_never_moves_with_no_polling_gives_no_energy_not_0_j(fake_gpu):
    meter, nvml, clock = fake_gpu(power_w=lambda t: 200.0, energy_j=lambda t: 0.0)
    nvml.fail.add("nvmlDeviceGetPowerUsage")
    result = window(meter, clock, 5.0)
    assert result.of("gpu").joules is None
    assert any("read 0 J" in p for p in result.problems)


def test_an_idle_process_estimate_of_0_j_is_kept():
    # the CPU-time estimate counts this process's work only: 0 J for no work is right
    class Still(CpuTimeEstimate):
        def read_j(self) -> float:
            return 7.0

    clock = FakeClock()
    meter = Meter([Domain("cpu", [Still(10.0, 2)])], [], clock=clock)
    meter.begin_window("w")
    clock.advance(2.0)
    result = meter.end_window("w")
    assert result.of("cpu").joules == 0.0 and result.problems == ()


# -- waiting for the power to settle before the idle baseline (issue 17 #5) -------------------
def falling_then_idle(t: float) -> float:  # W: a board coming down from a full-load fit
    return 60.0 + 240.0 * math.exp(-t / 1.5)


def falling_energy(t: float) -> float:
    return 60.0 * t + 240.0 * 1.5 * (1 - math.exp(-t / 1.5))


@pytest.mark.parametrize("settle_max_s", [0.0, 30.0])
def test_idle_baseline_waits_for_the_power_to_settle(fake_gpu, settle_max_s):
    meter, _, clock = fake_gpu(power_w=falling_then_idle, energy_j=falling_energy)
    meter.sleep = lambda s: run(meter, clock, s, poll_s=0.1)
    meter.poll_interval_s = 0.1
    meter.measure_idle(5.0, settle_max_s=settle_max_s)
    idle_w = meter._idle_power["gpu", "nvml-counter"]
    if settle_max_s:
        waited, settled = meter.settling
        assert settled and 3.0 <= waited < 30.0
        assert idle_w == pytest.approx(60.0, abs=2.0)
        assert meter.describe()["idle_settled"] is True
    else:  # straight after the load: the baseline is far too high
        assert idle_w > 100.0


def test_power_that_never_settles_is_waited_for_at_most_max_s_and_flagged(fake_gpu):
    meter, _, clock = fake_gpu()  # board_power: ramping and breathing, never flat
    meter.sleep = lambda s: run(meter, clock, s, poll_s=0.1)
    meter.poll_interval_s = 0.1
    idle = meter.measure_idle(2.0, settle_max_s=4.0)
    waited, settled = meter.settling
    assert not settled and waited == pytest.approx(4.0, abs=0.15)
    assert any("power still changing" in p for p in idle.problems)


def test_settle_is_bounded_when_the_clock_does_not_move():
    clock = FakeClock()
    meter = Meter([Domain("gpu", [PolledPower(lambda: 100.0, clock=clock)])], [], clock=clock, primary_domain="gpu")
    meter.sleep = lambda s: None
    assert meter.settle(1.0) == (0.0, False)


# -- finding torch's GPU in NVML (issue 17 #8) ------------------------------------------------
class MigNvml(FakeNvml):
    """One board (index 0, GPU-aaaa...) in MIG mode with two instances, and a plain board
    (index 1, GPU-bbbb...). ``by_uuid_takes_mig``: whether nvmlDeviceGetHandleByUUID knows
    MIG UUIDs (newer drivers) or only boards' (then the instances must be enumerated)."""

    BOARDS = {0: "GPU-aaaaaaaa-0000-0000-0000-000000000000", 1: "GPU-bbbbbbbb-0000-0000-0000-000000000000"}
    INSTANCES = {0: "MIG-11111111-0000-0000-0000-000000000000", 1: "MIG-22222222-0000-0000-0000-000000000000"}

    def __init__(self, by_uuid_takes_mig: bool) -> None:
        super().__init__(FakeClock(), board_power, board_energy)
        self.by_uuid_takes_mig = by_uuid_takes_mig

    def nvmlDeviceGetHandleByUUID(self, uuid):
        for i, u in self.BOARDS.items():
            if uuid == u:
                return ("board", i)
        for j, u in self.INSTANCES.items():
            if uuid == u and self.by_uuid_takes_mig:
                return ("mig", 0, j)
        raise self.NVMLError("Not Found")

    def nvmlDeviceGetHandleByIndex(self, index):
        return ("board", index)

    def nvmlDeviceGetCount(self):
        return len(self.BOARDS)

    def nvmlDeviceGetMigMode(self, handle):
        return (1, 1) if handle == ("board", 0) else (0, 0)

    def nvmlDeviceGetMaxMigDeviceCount(self, handle):
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle, j):
        if j not in self.INSTANCES:
            raise self.NVMLError("Not Found")
        return ("mig", handle[1], j)

    def nvmlDeviceGetUUID(self, handle):
        return (self.BOARDS[handle[1]] if handle[0] == "board" else self.INSTANCES[handle[2]]).encode()

    def nvmlDeviceIsMigDeviceHandle(self, handle):
        return handle[0] == "mig"

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        return ("board", handle[1])

    def nvmlDeviceGetIndex(self, handle):
        return handle[1]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if handle[0] == "mig":
            raise self.NVMLError("Not Supported")
        return super().nvmlDeviceGetTotalEnergyConsumption(handle)


@pytest.fixture
def torch_sees(monkeypatch):
    """torch's cuda:0 is the device whose bare UUID is given (as torch prints it)."""
    import torch

    def see(uuid: str) -> None:
        props = types.SimpleNamespace(uuid=uuid)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: props)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)

    return see


@pytest.mark.parametrize("by_uuid_takes_mig", [True, False])
def test_a_mig_instance_is_found_by_its_uuid_not_by_index(monkeypatch, torch_sees, by_uuid_takes_mig):
    import torch

    monkeypatch.setitem(sys.modules, "pynvml", MigNvml(by_uuid_takes_mig))
    torch_sees("22222222-0000-0000-0000-000000000000")
    gpu, why = open_gpu(torch.device("cuda:0"))
    assert why is None
    assert gpu.handle == ("mig", 0, 1) and gpu.mig and gpu.problem is None
    assert gpu.index == 0  # its board's NVML index (CodeCarbon's gpu_ids)
    domain = gpu_domain(gpu)
    assert "MIG instance" in domain.note and [c.source for c in domain.counters] == ["nvml-polling"]


def test_a_board_is_found_by_its_uuid_under_cuda_visible_devices(monkeypatch, torch_sees):
    import torch

    monkeypatch.setitem(sys.modules, "pynvml", MigNvml(True))
    torch_sees("bbbbbbbb-0000-0000-0000-000000000000")  # CUDA_VISIBLE_DEVICES=1: torch's cuda:0
    gpu, _ = open_gpu(torch.device("cuda:0"))
    assert gpu.handle == ("board", 1) and gpu.index == 1 and not gpu.mig and gpu.problem is None


def test_falling_back_to_the_handle_by_index_is_flagged(monkeypatch, torch_sees):
    import torch

    monkeypatch.setitem(sys.modules, "pynvml", MigNvml(True))
    torch_sees("99999999-0000-0000-0000-000000000000")
    gpu, _ = open_gpu(torch.device("cuda:0"))
    assert gpu.handle == ("board", 0)
    assert "fell back to NVML index 0" in gpu.problem and "another GPU's" in gpu.problem
    assert "fell back" in gpu_domain(gpu).note


# -- CodeCarbon optional, and restricted to the run's GPU (issue 17 #2, #12) ---------------------
def test_codecarbon_not_installed_is_stated_not_raised(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "codecarbon", None)  # import codecarbon -> ImportError
    tracker = CarbonTracker(tmp_path, "FRA")
    tracker.start()
    assert tracker.rows_so_far() == []
    result = tracker.stop()
    assert result.error == "codecarbon not installed" and result.co2_kg is None


@pytest.mark.parametrize("gpu_ids", [None, [3]])
def test_codecarbon_counts_only_the_runs_gpu(tmp_path, monkeypatch, gpu_ids):
    import codecarbon

    seen = {}

    class Recording:
        final_emissions_data = None

        def __init__(self, gpu_ids=None, **kwargs):  # as CodeCarbon's own: a keyword
            seen["gpu_ids"] = gpu_ids

        def start(self):
            pass

        def stop(self):
            return None

    monkeypatch.setattr(codecarbon, "OfflineEmissionsTracker", Recording)
    CarbonTracker(tmp_path, "FRA", gpu_ids=gpu_ids).start()
    assert seen["gpu_ids"] == gpu_ids


def test_the_installed_codecarbon_takes_gpu_ids():
    from codecarbon import OfflineEmissionsTracker

    from bpfree.measure.carbon import _accepts

    assert _accepts(OfflineEmissionsTracker, "gpu_ids")


# -- the idle baseline, once per machine -----------------------------------------------------------
def test_an_idle_baseline_is_reused_by_the_jobs_that_follow_within_its_age(tmp_path):
    """The first job's meter waits out its idle baseline and keeps it; the next one within
    ``idle_reuse_s`` takes it instead (no idle window, the same idle power, its age said); an
    older one, or one of other counters, is measured again."""
    from bpfree.measure import Domain, IdleCache, Meter
    from bpfree.measure.energy import PolledPower

    now = [1000.0]
    cache = IdleCache("cuda:0", 600.0, path=str(tmp_path / "idle.json"), clock=lambda: now[0])

    def meter(watts: float, source: str = "nvml-polling") -> Meter:
        return Meter(
            [Domain("gpu", [PolledPower(lambda: watts, source=source)])], [], poll_interval_s=0.01, primary_domain="gpu"
        )

    with meter(50.0) as first:
        assert first.measure_idle(0.1, reuse=cache) is not None and first.idle_age_s == 0.0
    baseline = first._idle_power[("gpu", "nvml-polling")]
    now[0] += 300.0
    with meter(90.0) as second:  # busy now: a baseline taken now would be wrong; the kept one is used
        assert second.measure_idle(0.1, reuse=cache) is None
        assert second._idle_power == {("gpu", "nvml-polling"): baseline} and second.idle_age_s == 300.0
        assert second.describe()["idle_age_s"] == 300.0
    now[0] += 301.0  # 601 s old: too old
    with meter(60.0) as third:
        assert third.measure_idle(0.1, reuse=cache) is not None and third.idle_age_s == 0.0
    with meter(60.0, source="nvml-polling-instant") as other:  # other counters: measured again
        assert other.measure_idle(0.1, reuse=cache) is not None
    (tmp_path / "idle.json").write_text("{not json")
    with meter(60.0) as damaged:
        assert damaged.measure_idle(0.1, reuse=cache) is not None
    never = IdleCache("cuda:0", 0.0, path=str(tmp_path / "never.json"))
    with meter(60.0) as off:
        off.measure_idle(0.1, reuse=never)
    assert not (tmp_path / "never.json").exists()


def test_energy_sources_combine_by_one_rule_best_first():
    """A sum of energies from several sources is labelled by every source, best first, so that
    one with an estimate in it never reads as measured: the meter's pieces, the cost table and
    the to_target table use the one rule."""
    from bpfree.core.sources import combine_sources

    assert combine_sources(["estimate", "nvml-counter", None, "estimate"]) == "nvml-counter+estimate"
    assert combine_sources(["rapl+estimate", "nvml-polling"]) == "nvml-polling+rapl+estimate"
    assert combine_sources([None, ""]) is None
    assert combine_sources(["zeus", "rapl"]) == "rapl+zeus"  # an unknown source after the known ones
