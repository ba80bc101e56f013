"""`bpfree train` on SIGTERM or SIGINT: it keeps its state in a checkpoint (abandoning an epoch
whose start it kept, or finishing a short one), exits 75, and the same command resumes it to
the uninterrupted run's history and weights. In-process here (the signal is raised from a
batch); tests/test_resume.py sends a real SIGTERM to a real `bpfree train` (slow tier)."""

from __future__ import annotations

import csv
import json
import signal

import pytest
import torch

from bpfree.core.spec import EarlyStopping, Measurement, RunSpec
from bpfree.engine import loop as training
from bpfree.engine.checkpoint import Checkpoint
from bpfree.engine.loop import STOP, STOPPED_EXIT_CODE, Stopped, TimedBatches, stop_on_signals
from bpfree.engine.run import CHECKPOINT, train

COMPARED = ["epoch", "stage", "train_loss", "val_loss", "val_accuracy"]


def spec(algorithm: str = "mf") -> RunSpec:
    return RunSpec(
        algorithm=algorithm,
        dataset="digits",
        seed=2,
        arch="mlp:16,16",
        early_stopping=EarlyStopping(max_epochs=3),
        measurement=Measurement(idle_seconds=0, codecarbon=False),
        checkpoint_every_s=60,  # the default: no periodic checkpoint in so short a run
    )


def history(out) -> list[list[str]]:
    with open(out / "history.csv") as fh:
        return [[row[c] for c in COMPARED] for row in csv.DictReader(fh)]


def signal_in_pass(monkeypatch, target: int, signum=signal.SIGTERM) -> None:
    """Raise ``signum`` half-way through the ``target``-th pass over the training data."""
    passes, epoch = [0], TimedBatches.epoch

    def signalling(self, batch_size, **kwargs):
        passes[0] += 1
        half = -(-len(self) // batch_size) // 2
        for i, item in enumerate(epoch(self, batch_size, **kwargs)):
            if passes[0] == target and i == half:
                signal.raise_signal(signum)
            yield item

    monkeypatch.setattr(TimedBatches, "epoch", signalling)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    train(spec(), out)
    return out


@pytest.mark.parametrize("keep", ["abandon", "finish"])
def test_signal_mid_epoch_checkpoints_and_the_same_command_resumes(tmp_path, monkeypatch, reference, keep):
    if keep == "abandon":  # every epoch's start is kept: the signal abandons epoch 2
        monkeypatch.setattr(training, "FINISH_EPOCH_S", 0.0)
    signal_in_pass(monkeypatch, 2)
    out = tmp_path / "run"
    with stop_on_signals(), pytest.raises(Stopped) as stopped:
        train(spec(), out)
    assert stopped.value.signal_name == "SIGTERM"
    assert not (out / "metrics.json").exists()
    state = Checkpoint(out / CHECKPOINT).load()
    assert state is not None and state.pieces == 1 and state.checkpoints == 1
    assert len(state.history) == {"abandon": 1, "finish": 2}[keep]  # epoch 2 redone, or kept
    assert state.extra["stopped_by"] == "SIGTERM"
    assert (state.extra["abandoned_epoch_s"] is not None) == (keep == "abandon")
    piece = state.measured["summary"][-1]  # the piece's time and energy, kept for the sum
    assert piece["time_s"] > 0 and piece["energy_j"] > 0 and piece["energy_source"] == "estimate"
    assert "the same command resumes (exit 75)" in str(stopped.value)

    monkeypatch.undo()
    train(spec(), out)  # the same command, no signal
    assert history(out) == history(reference)
    metrics = json.loads((out / "metrics.json").read_text())
    expected = json.loads((reference / "metrics.json").read_text())
    assert metrics["test_accuracy"] == expected["test_accuracy"]
    assert metrics["pieces"] == 2 and [p["piece"] for p in metrics["pieces_measured"]] == [1, 2]
    assert not (out / CHECKPOINT).exists()


def test_an_abandoned_epoch_leaves_no_measurement_window_open(tmp_path, monkeypatch):
    """The loop opens each epoch's window and closes it itself: an epoch a stop signal
    abandons is discarded there, and so is the FIT window around it (its opener's)."""
    from bpfree.engine import run as run_module
    from bpfree.measure import FIT, Meter, epoch_window

    meters: list[Meter] = []
    real = Meter.for_device

    def keeping(*args, **kwargs):
        meters.append(real(*args, **kwargs))
        return meters[-1]

    monkeypatch.setattr(run_module.Meter, "for_device", keeping)
    monkeypatch.setattr(training, "FINISH_EPOCH_S", 0.0)
    signal_in_pass(monkeypatch, 2)
    with stop_on_signals(), pytest.raises(Stopped):
        train(spec("bp"), tmp_path / "run")
    (meter,) = meters
    for name in (epoch_window(1), epoch_window(2), FIT):
        with pytest.raises(ValueError, match="never opened"):
            meter.peek_window(name)


def test_the_weights_match_the_uninterrupted_run(tmp_path, monkeypatch):
    """Not only the history: every weight of the resumed run equals the uninterrupted one's."""
    from bpfree.engine import run as run_module

    kept = {}
    real = run_module.train_configuration

    def keeping(*args, **kwargs):
        trained = real(*args, **kwargs)
        kept[len(kept)] = {k: v.clone() for k, v in trained.algo.net.state_dict().items()}
        return trained

    monkeypatch.setattr(run_module, "train_configuration", keeping)
    train(spec("bp"), tmp_path / "whole")
    monkeypatch.setattr(training, "FINISH_EPOCH_S", 0.0)
    signal_in_pass(monkeypatch, 3, signal.SIGINT)
    with stop_on_signals(), pytest.raises(Stopped):
        train(spec("bp"), tmp_path / "stopped")
    monkeypatch.undo()
    monkeypatch.setattr(run_module, "train_configuration", keeping)
    train(spec("bp"), tmp_path / "stopped")
    whole, resumed = kept[0], kept[len(kept) - 1]
    assert len(kept) == 2 and whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name


def test_without_the_signal_armed_nothing_changes():
    """Outside `bpfree train` (a tuning trial, a library call) the request does nothing."""
    assert STOP.armed is False and STOP.requested is False
    with stop_on_signals() as stop:
        assert stop.armed and not stop.requested
        assert signal.getsignal(signal.SIGTERM) == STOP.request
    assert STOP.armed is False and signal.getsignal(signal.SIGTERM) != STOP.request
    assert STOPPED_EXIT_CODE == 75


def test_a_second_ctrl_c_stops_at_once():
    with stop_on_signals():
        STOP.request(signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            STOP.request(signal.SIGINT)
