"""Which epoch a stage ends with, apart from when it stops (``early_stopping.restore_by``), the
test accuracy under each selection rule from one fit, parts that stop one by one, and a
resumed fit that selects what the uninterrupted one did.

A scripted algorithm (tests/test_training.py's) replays a list of (val_loss, val_accuracy)
per stage and sets its weight to the epoch number, so a test reads which epoch's weights a
rule chose from the weight itself."""

from __future__ import annotations

import math

import pytest
import torch
from test_training import Scripted, tiny_data

from bpfree.algorithms.base import Evaluation, Stage
from bpfree.core.errors import BpfreeError
from bpfree.core.spec import EarlyStopping, parse
from bpfree.engine.checkpoint import Checkpoint
from bpfree.engine.loop import Checkpointing, fit
from bpfree.engine.stopping import SELECTION_RULES, selections_reported

# the validation loss is lowest at epoch 2, the accuracy highest first at epoch 4 (tied at 5):
# the paper's BP logs show this shape in 30 of 33 runs (the best accuracy after the lowest loss)
PEAKS_APART = {"train": [(1.0, 0.50), (0.5, 0.70), (0.6, 0.80), (0.7, 0.90), (0.8, 0.90), (0.9, 0.60)]}


class Resumable(Scripted):
    """Scripted, with its place in the script kept in its state (as a real optimiser's is)."""

    def extra_state(self):
        return {"epoch_in_stage": self.epoch_in_stage}

    def load_extra_state(self, state):
        self.epoch_in_stage = state["epoch_in_stage"]


def run(script=PEAKS_APART, stages=None, algo_type=Scripted, **policy):
    algo = algo_type(script, stages or [Stage("train")])
    return algo, fit(algo, tiny_data(), EarlyStopping(**policy), seed=0)


@pytest.mark.parametrize(
    "restore_by, epoch",
    [("monitor", 2), ("val_loss", 2), ("val_accuracy", 4)],
)
def test_a_run_stopping_on_loss_restores_by_its_own_rule(restore_by, epoch):
    """Stopping on the validation loss (patience 3 ends at epoch 5) and restoring the first
    epoch with the highest validation accuracy are two rules: the paper's BP does both."""
    algo, result = run(patience=3, restore_by=restore_by)
    assert result.epochs == 5
    assert float(algo.net.weight) == epoch and result.restored_epoch == epoch


def test_the_restore_rule_is_strict_and_ignores_min_delta():
    """val_accuracy: strict improvement, no min_delta (the paper's tracker), while ``monitor``
    judges with the stopper's min_delta."""
    script = {"train": [(1.0, 0.50), (0.99, 0.505), (0.98, 0.51), (0.97, 0.40), (0.96, 0.40)]}
    algo, _ = run(script, patience=10, max_epochs=5, min_delta=0.1, restore_by="val_accuracy")
    assert float(algo.net.weight) == 3
    algo, _ = run(script, patience=10, max_epochs=5, min_delta=0.1, restore_by="monitor")
    assert float(algo.net.weight) == 1  # no later loss is 0.1 below epoch 1's


def test_every_single_stage_fit_keeps_each_selection_rules_weights():
    algo, result = run(patience=3, restore_by="val_accuracy")
    chosen = {name: (c.epoch, float(c.weights["weight"])) for name, c in result.chosen.items()}
    assert chosen == {"last": (5, 5.0), "min_val_loss": (2, 2.0), "max_val_accuracy": (4, 4.0)}
    assert set(result.chosen) == {"last", *SELECTION_RULES}


def test_fits_of_several_stages_or_of_parts_report_no_selections():
    assert selections_reported([Stage("train")])
    assert not selections_reported([Stage("layer1"), Stage("layer2")])  # MF: layer 2 trains on layer 1's end
    assert not selections_reported([Stage("predictors", parts=("a", "b"))])  # each part keeps its last
    assert not selections_reported([Stage("solve", max_epochs=1, early_stopping=False)])
    script = {"first": PEAKS_APART["train"], "second": PEAKS_APART["train"]}
    _, result = run(script, [Stage("first"), Stage("second")], patience=3)
    assert result.chosen == {}


def test_a_bad_restore_rule_is_refused_in_one_line():
    with pytest.raises(BpfreeError, match="restore_by.*monitor.*val_loss.*val_accuracy"):
        parse(EarlyStopping, {"restore_by": "val_acc"}, "early_stopping")


# -- parts that stop one by one (CaFo's per-predictor stopping) ------------------------------------
class TwoParts(Resumable):
    """A stage of two parts, each with its own scripted validation loss; stop_part records."""

    def __init__(self, script, stages):
        super().__init__(script, stages)
        self.stopped_at: dict[int, int] = {}

    def evaluate(self, stage, split):
        a, b = self.script["a"][self.epoch_in_stage - 1], self.script["b"][self.epoch_in_stage - 1]
        return Evaluation(a + b, 0.5, (Evaluation(a, 0.5), Evaluation(b, 0.5)))

    def stop_part(self, stage, index):
        self.stopped_at[index] = self.epoch_in_stage


def test_each_part_has_its_own_stopper_and_the_stage_ends_when_all_have_stopped():
    # part a is best at epoch 1 and stops after 2 bad epochs (epoch 3); b improves until epoch 5
    script = {"a": [1.0, 1.1, 1.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], "b": [5, 4, 3, 2, 1, 2, 3, 4, 5]}
    stages = [Stage("predictors", restore_best=False, parts=("a", "b"))]
    algo, result = run(script, stages, algo_type=TwoParts, patience=2, max_epochs=20)
    assert algo.stopped_at == {0: 3, 1: 7}  # a's later gains come too late: it has stopped
    assert result.epochs == 7 and float(algo.net.weight) == 7
    assert [r.extra["parts_stopped"] for r in result.history] == [0, 0, 1, 1, 1, 1, 2]
    # one stopper on the sum would have gone on: the sum improves at epoch 4 (0.1 + 2)
    joint_algo, joint = run(script, [Stage("predictors", restore_best=False)], algo_type=TwoParts, patience=2)
    assert joint.epochs == 7 and joint_algo.stopped_at == {}


# -- a resumed fit selects what the uninterrupted one did -------------------------------------------
class Killed(Exception):
    pass


@pytest.mark.parametrize("kill_after", [1, 3, 4])
def test_a_fit_resumed_from_its_checkpoint_restores_the_same_epoch(tmp_path, kill_after):
    policy = EarlyStopping(patience=3, restore_by="val_accuracy")
    reference_algo, reference = run(algo_type=Resumable, patience=3, restore_by="val_accuracy")
    checkpoint = Checkpoint(tmp_path / "checkpoint.pt")

    def kill(record):
        if record.epoch == kill_after + 1:  # the checkpoint of epoch kill_after is on disk
            raise Killed

    algo = Resumable(PEAKS_APART, [Stage("train")])
    with pytest.raises(Killed):
        fit(algo, tiny_data(), policy, seed=0, checkpointing=Checkpointing(checkpoint, 0.0), on_epoch_end=kill)
    state = Checkpoint(tmp_path / "checkpoint.pt").load()
    assert state is not None and len(state.history) == kill_after
    resumed_algo = Resumable(PEAKS_APART, [Stage("train")])
    resumed = fit(resumed_algo, tiny_data(), policy, seed=0, resume=state)
    assert float(resumed_algo.net.weight) == float(reference_algo.net.weight) == 4
    assert resumed.restored_epoch == reference.restored_epoch == 4
    assert [r.val_loss for r in resumed.history] == [r.val_loss for r in reference.history]
    assert {k: c.epoch for k, c in resumed.chosen.items()} == {k: c.epoch for k, c in reference.chosen.items()}


def test_a_checkpoint_whose_selection_does_not_fit_the_model_is_refused(tmp_path):
    """A saved selection's weights are checked against the model before anything is restored."""
    from bpfree.engine.checkpoint import check_fits
    from bpfree.engine.loop import EpochRecord

    checkpoint = Checkpoint(tmp_path / "checkpoint.pt")
    algo = Resumable(PEAKS_APART, [Stage("train")])
    fit(algo, tiny_data(), EarlyStopping(patience=3), seed=0, checkpointing=Checkpointing(checkpoint, 0.0))
    state = checkpoint.load()
    state.handlers["selections"]["max_val_accuracy"]["weights"] = {"weight": torch.zeros(3)}
    with pytest.raises(ValueError, match="handlers.selections.max_val_accuracy.weights"):
        check_fits(state, algo, EarlyStopping(patience=3), EpochRecord)
    state.handlers["selections"]["max_val_accuracy"] = {"best": math.nan, "epoch": 1, "weights": None}
    with pytest.raises(ValueError, match="not a number"):
        check_fits(state, algo, EarlyStopping(patience=3), EpochRecord)
