"""Every measurement window is opened and closed by the one function docs/measurement.md names,
and a run's fit window reaches metrics.json one way: a real run and a real tuning trial are
followed window by window (the meter's begin and end, and who called them)."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest

from bpfree.core.spec import EarlyStopping, Machine, Measurement, RunSpec
from bpfree.measure import meter as meter_module

# the owners docs/measurement.md's table names
OWNERS = {
    "idle": "Meter.measure_idle",
    "fit": "measure_run",
    "test": "measure_run",
    "epoch": "EpochMeasure.around",
    "trial": "run_trial",
}
PLUMBING = {str(Path(meter_module.__file__)), str(Path(inspect.getfile(__import__("contextlib"))))}


def _caller() -> str:
    """The first function outside the meter's own window plumbing and contextlib."""
    for frame in inspect.stack()[2:]:
        if frame.filename in PLUMBING and frame.function in ("window", "begin_window", "end_window", "discard_window"):
            continue
        if frame.filename in PLUMBING and "contextlib" in frame.filename:
            continue
        qualname = getattr(frame.frame.f_code, "co_qualname", frame.function)
        return qualname
    return "?"


@pytest.fixture
def followed(monkeypatch):
    events: list[tuple[str, str, str]] = []  # (begin|end|discard, window, caller)
    real_begin, real_end, real_discard = (
        meter_module.Meter.begin_window,
        meter_module.Meter.end_window,
        meter_module.Meter.discard_window,
    )

    def begin(self, name, carbon=None):
        events.append(("begin", name, _caller()))
        return real_begin(self, name, carbon)

    def end(self, name):
        events.append(("end", name, _caller()))
        return real_end(self, name)

    def discard(self, name):
        events.append(("discard", name, _caller()))
        return real_discard(self, name)

    monkeypatch.setattr(meter_module.Meter, "begin_window", begin)
    monkeypatch.setattr(meter_module.Meter, "end_window", end)
    monkeypatch.setattr(meter_module.Meter, "discard_window", discard)
    return events


def kind(name: str) -> str:
    return "epoch" if name.startswith("epoch ") else name


def test_a_runs_windows_open_and_close_where_the_docs_say(tmp_path, followed):
    from bpfree.engine.run import train

    spec = RunSpec(
        algorithm="bp",
        dataset="digits",
        seed=1,
        arch="mlp:16",
        early_stopping=EarlyStopping(max_epochs=2),
        measurement=Measurement(idle_seconds=0.2, codecarbon=False, hardware_analysis=False),
        machine=Machine(device="cpu"),
    )
    train(spec, tmp_path / "run")
    for event, name, caller in followed:
        assert caller.endswith(OWNERS[kind(name)]), (event, name, caller)
    order = [(e, kind(n)) for e, n, _ in followed]
    assert order == [
        ("begin", "fit"),
        ("begin", "epoch"),
        ("end", "epoch"),
        ("begin", "epoch"),
        ("end", "epoch"),
        ("end", "fit"),
        ("begin", "test"),
        ("end", "test"),
    ]  # the idle baseline is skipped where every counter is an estimate (this machine)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["energy_source"] and metrics["test_time_s"] is not None


def test_an_idle_baseline_is_opened_and_closed_by_the_meter(followed):
    from bpfree.measure import Domain, Meter
    from bpfree.measure.energy import PolledPower

    meter = Meter([Domain("gpu", [PolledPower(lambda: 50.0)])], [], poll_interval_s=0.01, primary_domain="gpu")
    with meter:
        meter.measure_idle(0.05)
    assert [(e, n) for e, n, _ in followed] == [("begin", "idle"), ("end", "idle")]
    assert all(caller.endswith(OWNERS["idle"]) for _, _, caller in followed)


def test_a_trials_window_opens_and_closes_in_run_trial(tmp_path, followed):
    from helpers import tune_argv

    from bpfree.cli import main

    argv = tune_argv(
        "--max-epochs", "1", "--device", "cpu", arch="mlp:8", storage=tmp_path / "s.journal", out=tmp_path / "b.yaml"
    )
    assert main(argv) == 0
    kinds = {kind(n) for _, n, _ in followed}
    assert "trial" in kinds and "fit" not in kinds  # a trial is measured as a whole, not as a run
    for event, name, caller in followed:
        assert caller.endswith(OWNERS[kind(name)]), (event, name, caller)
