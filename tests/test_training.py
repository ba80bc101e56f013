"""The training loop: early stopping per stage, restoring the best weights, divergence.

A scripted algorithm stands in for a real one: its weight is set to the epoch number each
epoch, and its validation loss/accuracy come from a list, so the test knows exactly which
epoch is best and can read from the weight which epoch's state the loop restored."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import pytest
import torch

from bpfree.algorithms.base import Algorithm, Evaluation, Stage
from bpfree.core.errors import BpfreeError
from bpfree.core.spec import EarlyStopping, RunSpec, parse
from bpfree.data import Batches, DatasetInfo, DataSplits, Split
from bpfree.engine.loop import Profiling, TimedBatches, fit
from bpfree.models import parse_arch

INFO = DatasetInfo("scripted", 2, (1, 1, 1), (0.0,), (1.0,))


def tiny_data() -> DataSplits:
    split = Split(torch.zeros(4, 1, 1, 1), torch.tensor([0, 1, 0, 1]))
    return DataSplits(INFO, split, split, split)


@dataclass(frozen=True)
class NoParams:
    pass


class Scripted(Algorithm):
    """Each stage replays its own list of (val_loss, val_accuracy); ``net.weight`` holds the
    number of epochs trained so far in the current stage."""

    name = "scripted"
    Params = NoParams
    arch_kinds = ("mlp",)
    default_arch = "mlp:1"

    def __init__(self, script: dict[str, list[tuple[float, float]]], stages: list[Stage], train_loss=None):
        super().__init__(parse_arch("mlp:1"), INFO, NoParams(), torch.device("cpu"), 0)
        self.script, self._stages, self.train_loss = script, stages, train_loss or {}
        self.net.register_buffer("weight", torch.zeros(()))  # in state_dict, like any weight
        self.epoch_in_stage = 0
        self.calls: list[str] = []
        self.weight_at_end: dict[str, float] = {}

    def stages(self):
        return self._stages

    def begin_stage(self, stage, max_epochs):
        self.calls.append(f"begin {stage.name} {max_epochs}")
        self.epoch_in_stage = 0

    def train_epoch(self, stage, batches):
        self.epoch_in_stage += 1
        self.net.weight.fill_(self.epoch_in_stage)
        return self.train_loss.get((stage.name, self.epoch_in_stage), 0.5)

    def evaluate(self, stage, split):
        loss, accuracy = self.script[stage.name][self.epoch_in_stage - 1]
        return Evaluation(loss, accuracy)

    def end_stage(self, stage):
        self.calls.append(f"end {stage.name}")
        self.weight_at_end[stage.name] = float(self.net.weight)

    def predict(self, x):
        return torch.zeros(len(x), 2)


def losses(*values: float) -> list[tuple[float, float]]:
    return [(v, 0.5) for v in values]


def run(script, stages=None, **policy):
    algo = Scripted(script, stages or [Stage("train")])
    result = fit(algo, tiny_data(), EarlyStopping(**policy), seed=0)
    return algo, result


def test_stops_after_patience_bad_epochs_and_restores_the_best():
    algo, result = run({"train": losses(1.0, 0.8, 0.6, 0.7, 0.65, 0.9, 0.5, 0.1)}, patience=3)
    assert result.status == "ok"
    assert result.epochs == 6  # best at 3, then 3 epochs without improvement
    assert [r.val_loss for r in result.history] == [1.0, 0.8, 0.6, 0.7, 0.65, 0.9]
    assert float(algo.net.weight) == 3.0  # epoch 3's weights, not epoch 6's
    assert algo.weight_at_end["train"] == 3.0  # restored before end_stage


def test_runs_to_max_epochs_while_improving():
    algo, result = run({"train": losses(5, 4, 3, 2, 1, 0.5)}, patience=2, max_epochs=4)
    assert result.epochs == 4 and float(algo.net.weight) == 4.0


def test_restore_best_off_keeps_the_last_weights():
    algo, result = run({"train": losses(1.0, 2.0, 3.0)}, patience=2, restore_best=False)
    assert result.epochs == 3 and float(algo.net.weight) == 3.0


def test_min_delta_counts_small_gains_as_bad():
    algo, result = run({"train": losses(1.0, 0.95, 0.92, 0.91, 0.5)}, patience=3, min_delta=0.1)
    assert result.epochs == 4 and float(algo.net.weight) == 1.0
    algo, result = run({"train": losses(1.0, 0.95, 0.92, 0.91, 0.5)}, patience=3, min_delta=0.0, max_epochs=5)
    assert result.epochs == 5 and float(algo.net.weight) == 5.0


def test_monitor_accuracy_in_max_mode():
    script = {"train": [(9.0, 0.5), (9.0, 0.9), (0.1, 0.8), (0.1, 0.85), (0.1, 0.95)]}
    algo, result = run(script, monitor="val_accuracy", mode="max", patience=2)
    assert result.epochs == 4 and float(algo.net.weight) == 2.0  # best accuracy, worst loss


def test_each_stage_has_its_own_stopper_and_budget():
    stages = [Stage("first"), Stage("fixed", max_epochs=2, early_stopping=False), Stage("last", max_epochs=3)]
    script = {
        "first": losses(0.5, 0.1, 0.2, 0.3),
        # worse than the first stage's best: a shared stopper would stop here at once
        "fixed": losses(3.0, 4.0),
        "last": losses(2.0, 1.5, 1.9),
    }
    algo, result = run(script, stages, patience=2, max_epochs=50)
    assert [r.stage for r in result.history] == ["first"] * 4 + ["fixed"] * 2 + ["last"] * 3
    assert [r.epoch for r in result.history] == list(range(1, 10))  # counted over the run
    assert algo.weight_at_end == {"first": 2.0, "fixed": 2.0, "last": 2.0}
    assert algo.calls == ["begin first 50", "end first", "begin fixed 2", "end fixed", "begin last 3", "end last"]


@pytest.mark.parametrize("where", ["val_loss", "train_loss"])
def test_nan_loss_diverges_and_keeps_the_history(where):
    script = {"train": losses(1.0, 0.5, math.nan if where == "val_loss" else 0.4, 0.3), "next": losses(1.0)}
    algo = Scripted(
        script, [Stage("train"), Stage("next")], train_loss={("train", 3): math.nan} if where == "train_loss" else None
    )
    result = fit(algo, tiny_data(), EarlyStopping(patience=5), seed=0)
    assert result.status == "diverged"
    assert result.epochs == 3 and [r.epoch for r in result.history] == [1, 2, 3]
    assert not math.isfinite(getattr(result.history[-1], where))
    assert "begin next 100" not in algo.calls  # later stages do not run


def test_inf_loss_diverges_too():
    _, result = run({"train": losses(1.0, math.inf, 0.5)})
    assert result.status == "diverged" and result.epochs == 2


def test_on_epoch_end_can_add_columns():
    algo = Scripted({"train": losses(1.0, 0.5)}, [Stage("train")])

    def add_energy(record):
        record.extra["energy_j"] = 10.0 * record.epoch

    result = fit(algo, tiny_data(), EarlyStopping(max_epochs=2), seed=0, on_epoch_end=add_energy)
    rows = [r.row() for r in result.history]
    assert [row["energy_j"] for row in rows] == [10.0, 20.0]
    assert set(rows[0]) >= {"epoch", "stage", "train_loss", "val_loss", "val_accuracy", "epoch_time_s"}
    assert "extra" not in rows[0]


@pytest.mark.parametrize(
    "bad",
    [dict(patience=0), dict(max_epochs=0), dict(min_delta=-0.1), dict(monitor="loss"), dict(mode="up")],
)
def test_bad_policy_is_refused(bad):
    with pytest.raises(BpfreeError, match=f"early_stopping.{next(iter(bad))}"):
        parse(EarlyStopping, bad, "early_stopping")


@pytest.mark.parametrize(("every_s", "saved_after"), [(0.0, [1, 2, 3, 4, 5, 6]), (60.0, [3, 6]), (1e9, [])])
def test_checkpoints_are_written_once_every_s_have_passed(tmp_path, monkeypatch, every_s, saved_after):
    import types

    from bpfree.engine import loop as training
    from bpfree.engine.checkpoint import Checkpoint
    from bpfree.engine.loop import Checkpointing

    now = [0.0]
    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    algo = Scripted({"train": losses(6, 5, 4, 3, 2, 1)}, [Stage("train")])
    algo.train_epoch = lambda stage, batches, train=algo.train_epoch: (
        now.__setitem__(0, now[0] + 25),
        train(stage, batches),
    )[1]
    saved = []
    checkpoint = Checkpoint(tmp_path / "checkpoint.pt")
    monkeypatch.setattr(checkpoint, "save", lambda state, epoch: saved.append(epoch))
    result = fit(
        algo, tiny_data(), EarlyStopping(max_epochs=6), seed=0, checkpointing=Checkpointing(checkpoint, every_s)
    )
    assert result.epochs == 6 and saved == saved_after and result.checkpoints == len(saved_after)


def test_a_negative_checkpoint_interval_is_refused():
    with pytest.raises(BpfreeError, match="checkpoint_every_s: Input should be greater than or equal to 0"):
        RunSpec(algorithm="bp", dataset="digits", seed=0).replace(checkpoint_every_s=-1)


# -- the loop's own timers and the profiler ------------------------------------------------------
class Sleepy(Scripted):
    """Scripted, with known time spent cutting batches, training and validating."""

    def train_epoch(self, stage, batches):
        for _ in batches.epoch(2):
            time.sleep(0.01)  # compute: 2 batches of the 4 samples
        return super().train_epoch(stage, batches)

    def evaluate(self, stage, split):
        time.sleep(0.03)
        return super().evaluate(stage, split)


def test_timed_batches_cut_the_same_batches_and_keep_their_time():
    split = Split(torch.arange(10.0)[:, None, None, None], torch.arange(10) % 2)
    plain, timed = Batches(split, seed=3), TimedBatches(split, seed=3)
    for _ in range(2):
        assert all(torch.equal(a[0], b[0]) for a, b in zip(plain.epoch(4), timed.epoch(4)))
    assert timed.data_s > 0


def test_fit_splits_its_time_by_the_loops_timers():
    algo = Sleepy({"train": losses(1.0, 0.9, 0.8)}, [Stage("train")])
    result = fit(algo, tiny_data(), EarlyStopping(max_epochs=3), seed=0)
    split = result.time_split
    assert split.compute_s == pytest.approx(3 * 0.02, abs=0.03)
    assert split.eval_s == pytest.approx(3 * 0.03, abs=0.03)
    assert 0 < split.data_s < split.compute_s
    assert split.checkpoint_s == 0 and split.covers == "whole fit"
    parts = split.data_s + split.compute_s + split.eval_s + split.checkpoint_s + split.measurement_s + split.other_s
    assert parts == pytest.approx(result.train_time_s, abs=0.01)
    assert sum(r.epoch_time_s for r in result.history) == pytest.approx(split.data_s + split.compute_s + split.eval_s)


def test_profiling_one_epoch_saves_its_trace(tmp_path):
    algo = Sleepy({"train": losses(1.0, 0.9, 0.8)}, [Stage("train")])
    result = fit(algo, tiny_data(), EarlyStopping(max_epochs=3), seed=0, profiling=Profiling(2, tmp_path))
    assert result.profile_trace == tmp_path / "profile_epoch2.json"
    assert "traceEvents" in result.profile_trace.read_text()
    assert [r.extra.get("profiled") for r in result.history] == [None, True, None]
