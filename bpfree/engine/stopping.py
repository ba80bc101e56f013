"""What a stage keeps from epoch to epoch to decide when it ends and which weights it ends
with: early stoppers and best-weight selections. Each owns its state, saves it as plain data
for the run's checkpoint and checks a saved state before it is restored, so that a resumed run
stops at the same epoch and selects the same weights as the uninterrupted one.

    EarlyStopper   the run's early-stopping rule (``EarlyStopping``: monitor, mode, patience,
                   min_delta), for a stage or for one part of it (CaFo's predictors)
    Selection      the weights of a stage's best epoch by one rule: the rule a run restores by
                   (``early_stopping.restore_by``), or one whose test accuracy is only reported
                   (``SELECTION_RULES``)

    StageStopping  a stage's stoppers: one, or one per part
    Selections     a stage's selections: the restore rule's and the reported rules'

Nothing of the loop or the checkpoint file: both import this."""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bpfree.algorithms.base import Algorithm, Evaluation, Stage
from bpfree.core.record import SELECTIONS
from bpfree.core.spec import EarlyStopping

Metric = Literal["val_loss", "val_accuracy"]
Mode = Literal["min", "max"]


@dataclass(frozen=True)
class Rule:
    """A best epoch: the one whose ``metric`` beats every earlier one by more than
    ``min_delta`` in the ``mode`` direction (the first of equals; strict improvement)."""

    metric: Metric
    mode: Mode
    min_delta: float = 0.0

    def better(self, value: float, best: float) -> bool:
        if math.isnan(value):
            return False
        return value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta

    @property
    def worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf


def _rule_named(name: str) -> Rule:
    """``min_val_loss`` -> the lowest val_loss; ``max_val_accuracy`` -> the highest val_accuracy."""
    mode, metric = name.split("_", 1)
    return Rule(metric, mode)  # type: ignore[arg-type]


# the selection rules whose test accuracy every single-stage run reports beside its own
# (``test_accuracy_by_selection``; their names are the record's, SELECTIONS, besides "last"):
# the paper's BP tracker is max_val_accuracy, strict, no min_delta
SELECTION_RULES: dict[str, Rule] = {name: _rule_named(name) for name in SELECTIONS if name != "last"}


def restore_rule(policy: EarlyStopping) -> Rule:
    """The rule a run restores by: the monitored value as the stopper judges it (``monitor``,
    min_delta included), or the lowest validation loss or highest validation accuracy (strict,
    no min_delta: the paper's checkpoint tracker)."""
    if policy.restore_by == "monitor":
        return Rule(policy.monitor, policy.mode, policy.min_delta)
    return SELECTION_RULES["min_val_loss" if policy.restore_by == "val_loss" else "max_val_accuracy"]


def _number(value: Any, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
        raise ValueError(f"{name} is {value!r}, not a number")
    return float(value)


def _integer(value: Any, name: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{name} is {value!r}, not an integer >= {low}")
    return value


class EarlyStopper:
    """The run's early stopping for one stage, or one part of a stage."""

    def __init__(self, policy: EarlyStopping) -> None:
        self.policy = policy
        self.rule = Rule(policy.monitor, policy.mode, policy.min_delta)
        self.best = self.rule.worst
        self.best_epoch = -1
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record one epoch's monitored value; True when it is a new best."""
        if self.rule.better(value, self.best):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.policy.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]

    @staticmethod
    def check_state(state: Any, where: str) -> None:
        if not isinstance(state, Mapping) or set(state) != {"best", "best_epoch", "bad_epochs"}:
            raise ValueError(f"{where} is not an early stopper's state (best, best_epoch, bad_epochs)")
        _number(state["best"], f"{where}.best")
        _integer(state["best_epoch"], f"{where}.best_epoch", -1)  # -1: none yet
        _integer(state["bad_epochs"], f"{where}.bad_epochs", 0)


class Selection:
    """The weights of a stage's best epoch by ``rule``: a copy is taken at each new best (the
    copy is replaced, never changed in place, so a state taken earlier stays valid)."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.best = rule.worst
        self.epoch = -1  # counted over the whole run; -1: none yet
        self.weights: dict[str, Any] | None = None

    def update(self, value: float, epoch: int, weights: Mapping[str, Any]) -> bool:
        if not self.rule.better(value, self.best):
            return False
        self.best, self.epoch, self.weights = value, epoch, copy.deepcopy(dict(weights))
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "epoch": self.epoch, "weights": self.weights}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best, self.epoch, self.weights = state["best"], state["epoch"], state["weights"]

    @staticmethod
    def check_state(state: Any, where: str, same_as_net) -> None:
        """``same_as_net(weights, where)`` raises ValueError if the weights do not fit the model."""
        if not isinstance(state, Mapping) or set(state) != {"best", "epoch", "weights"}:
            raise ValueError(f"{where} is not a selection's state (best, epoch, weights)")
        _number(state["best"], f"{where}.best")
        _integer(state["epoch"], f"{where}.epoch", -1)
        if state["weights"] is not None:
            same_as_net(state["weights"], f"{where}.weights")
        elif state["epoch"] != -1:
            raise ValueError(f"{where} names epoch {state['epoch']} but holds no weights")


def stage_budget(stage: Stage, policy: EarlyStopping) -> int:
    """A stage's epoch budget (:meth:`EarlyStopping.stage_budget`)."""
    return policy.stage_budget(stage.max_epochs)


def selections_reported(stages: list[Stage]) -> bool:
    """Whether a fit reports its test accuracy under each selection rule: one stage, early
    stopped as a whole. A later stage trains on what an earlier one ended with, so the
    rules of an earlier stage cannot be compared without training the rest again (MF,
    CaFo-DFA); parts that stop one by one (CaFo's per-predictor stopping) each keep their last."""
    return len(stages) == 1 and stages[0].early_stopping and not stages[0].parts


class StageStopping:
    """A stage's early stopping: one stopper on the stage's monitored value, or one per part
    (``Stage.parts``) on that part's own; a part that stops is frozen (``stop_part``) and the
    stage ends once every part has stopped. A stage without early stopping runs its budget."""

    def __init__(self, stage: Stage, policy: EarlyStopping) -> None:
        self.stage, self.policy = stage, policy
        count = (len(stage.parts) or 1) if stage.early_stopping else 0
        self.stoppers = [EarlyStopper(policy) for _ in range(count)]
        self.stopped: list[bool] = [False] * count

    @property
    def done(self) -> bool:
        return bool(self.stoppers) and all(self.stopped)

    def _monitored(self, evaluation: Evaluation) -> float:
        return evaluation.loss if self.policy.monitor == "val_loss" else evaluation.accuracy

    def after_epoch(self, algo: Algorithm, evaluation: Evaluation, epoch: int) -> None:
        values = evaluation.parts if self.stage.parts else (evaluation,)
        if len(values) != len(self.stoppers) and self.stoppers:
            raise RuntimeError(f"{algo.name}'s evaluation has {len(values)} parts, its stage {len(self.stoppers)}")
        for i, (stopper, part) in enumerate(zip(self.stoppers, values)):
            if self.stopped[i]:
                continue
            stopper.update(self._monitored(part), epoch)
            if stopper.should_stop:
                self.stopped[i] = True
                if self.stage.parts:
                    algo.stop_part(self.stage, i)

    def describe(self) -> dict[str, Any]:
        """What the epoch's history row says of the parts (none without parts)."""
        if not self.stage.parts:
            return {}
        return {"parts_stopped": sum(self.stopped)}

    def state_dict(self) -> list[dict[str, Any]]:
        return [{**s.state_dict(), "stopped": done} for s, done in zip(self.stoppers, self.stopped)]

    def load_state_dict(self, states: list[dict[str, Any]], algo: Algorithm) -> None:
        for i, (stopper, state) in enumerate(zip(self.stoppers, states)):
            stopper.load_state_dict(state)
            self.stopped[i] = bool(state["stopped"])

    def check_state(self, states: Any) -> None:
        if not isinstance(states, list) or len(states) != len(self.stoppers):
            raise ValueError(f"handlers.stopping holds no {len(self.stoppers)} stoppers' states")
        for i, state in enumerate(states):
            if not isinstance(state, dict) or not isinstance(state.get("stopped"), bool):
                raise ValueError(f"handlers.stopping[{i}] is not a stopper's state")
            EarlyStopper.check_state({k: v for k, v in state.items() if k != "stopped"}, f"handlers.stopping[{i}]")


class Selections:
    """The weights of a stage's best epochs: by the rule the run restores by (when the policy
    and the stage restore), and, for a single-stage fit, by every reported rule
    (``SELECTION_RULES``), a rule shared by both kept once. Each keeps a copy of the weights
    (the reported ones cost up to two more copies of the model)."""

    RESTORE = "restore"

    def __init__(self, stage: Stage, policy: EarlyStopping, report: bool) -> None:
        self.kept: dict[str, Selection] = {}
        self.restore_name: str | None = None
        if report:
            self.kept = {name: Selection(rule) for name, rule in SELECTION_RULES.items()}
        if policy.restore_best and stage.restore_best and stage.early_stopping:
            rule = restore_rule(policy)
            shared = next((name for name, s in self.kept.items() if s.rule == rule), None)
            if shared is None:
                self.kept[self.RESTORE] = Selection(rule)
                shared = self.RESTORE
            self.restore_name = shared

    def after_epoch(self, algo: Algorithm, evaluation: Evaluation, epoch: int) -> None:
        weights = None
        for selection in self.kept.values():
            value = evaluation.loss if selection.rule.metric == "val_loss" else evaluation.accuracy
            if selection.rule.better(value, selection.best):
                weights = weights if weights is not None else algo.net.state_dict()
                selection.update(value, epoch, weights)

    @property
    def restored(self) -> Selection | None:
        """The selection the stage ends with, if it restores and has a best epoch."""
        chosen = self.kept.get(self.restore_name) if self.restore_name else None
        return chosen if chosen is not None and chosen.weights is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {name: s.state_dict() for name, s in self.kept.items()}

    def load_state_dict(self, states: dict[str, Any]) -> None:
        for name, selection in self.kept.items():
            selection.load_state_dict(states[name])

    def check_state(self, states: Any, same_as_net) -> None:
        if not isinstance(states, dict) or set(states) != set(self.kept):
            raise ValueError(
                f"handlers.selections holds {sorted(states) if isinstance(states, dict) else states!r}, not {sorted(self.kept)}"
            )
        for name, state in states.items():
            Selection.check_state(state, f"handlers.selections.{name}", same_as_net)
