"""One trial: a configuration trained and scored, in its own measurement window, whatever its end."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from bpfree.core.errors import is_out_of_memory
from bpfree.core.spec import RunSpec
from bpfree.data import DataSplits
from bpfree.engine.run import prepare, train_configuration
from bpfree.measure import TRIAL, Meter
from bpfree.tuning.space import SearchSpace
from bpfree.tuning.study import OBJECTIVE


@dataclass(frozen=True)
class TrialOutcome:
    state: TrialState
    value: float | None
    reason: str  # "" when complete
    epochs: int
    train_time_s: float
    time_s: float | None = None  # the trial's measured window: building, fitting, validating
    energy_j: float | None = None  # the computing device's energy over that window
    energy_source: str | None = None  # nvml-counter, rapl, estimate... (never an estimate called measured)


# -- one trial ------------------------------------------------------------------------------
def trial_spec(base: RunSpec, space: SearchSpace, trial: optuna.Trial, device: torch.device) -> RunSpec:
    """The trial's run specification: the study's spec with the params the trial sampled
    (and the space's fixed ones), checked and completed by the same ``prepare`` as ``bpfree
    train``'s, so that ``bpfree train --spec`` re-runs the trial."""
    spec, _, _ = prepare(base.replace(params=space.params(trial.params)), device)
    return spec


def run_trial(
    trial: optuna.Trial,
    spec: RunSpec,
    data: DataSplits,
    device: torch.device,
    pruner: str,
    meter: Meter | None = None,
    score: str = "final_model",
    reported: Collection[int] = (),
) -> TrialOutcome:
    """One trial in its own measurement window (TRIAL: building the model, every epoch, the
    final validation), whatever its end: its time and energy are part of the study's cost.
    ``reported``: the epochs whose value an abandoned attempt of this trial reported already."""
    if meter is None:
        return _train_trial(trial, spec, data, device, pruner, score, reported)
    with meter.window(TRIAL) as window:
        outcome = _train_trial(trial, spec, data, device, pruner, score, reported)
    energy = window.result.of(meter.primary_domain)
    return dataclasses.replace(
        outcome, time_s=window.result.time_s, energy_j=energy.joules, energy_source=energy.source
    )


def _train_trial(
    trial: optuna.Trial,
    spec: RunSpec,
    data: DataSplits,
    device: torch.device,
    pruner: str,
    score: str,
    reported: Collection[int] = (),
) -> TrialOutcome:
    """Train the trial's configuration as ``bpfree train`` would (bpfree.engine.run's
    train_configuration); report validation accuracy per epoch (global epoch number as the
    step) so the pruner can stop it. ``score``: the value is the final model's validation
    accuracy (``final_model``) or the best epoch's (``best_epoch``, as the paper's BP
    objective scored). Nothing raised here escapes but KeyboardInterrupt (a stop signal:
    :mod:`bpfree.tuning.stop`), which carries what the attempt trained (``attempt``:
    epochs, seconds) to the caller, who abandons the trial."""
    epochs, started = 0, time.perf_counter()
    best_epoch = -math.inf

    def on_epoch_end(record) -> None:
        nonlocal epochs, best_epoch
        epochs = record.epoch
        if math.isfinite(record.val_accuracy):
            best_epoch = max(best_epoch, record.val_accuracy)
            if record.epoch not in reported:  # an abandoned attempt's report of it stands
                trial.report(record.val_accuracy, record.epoch)
        set_attr(trial, "heartbeat", time.time())
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at epoch {record.epoch} by the {pruner} pruner: val accuracy {record.val_accuracy:.4f}"
            )

    def ended(state: TrialState, reason: str) -> TrialOutcome:
        return TrialOutcome(state, None, reason, epochs, time.perf_counter() - started)

    trained = None
    try:
        trained = train_configuration(spec, data, device=device, on_epoch_end=on_epoch_end)
        result = trained.fit
        value = best_epoch if score == "best_epoch" else trained.val_accuracy
        if result.status != "ok":
            return ended(TrialState.PRUNED, f"{result.status}: non-finite loss at epoch {result.epochs}")
        if not math.isfinite(value):
            return ended(TrialState.PRUNED, f"non-finite {OBJECTIVE}")
        return TrialOutcome(TrialState.COMPLETE, value, "", result.epochs, result.train_time_s)
    except optuna.TrialPruned as pruned:
        return ended(TrialState.PRUNED, str(pruned))
    except KeyboardInterrupt as stop:  # a stop signal: the caller abandons the trial, to be run again
        stop.attempt = (epochs, time.perf_counter() - started)
        raise
    except Exception as err:  # noqa: BLE001  (any failure of one configuration is that trial's)
        if is_out_of_memory(err):
            return ended(TrialState.FAIL, f"out of memory: {_first_line(err)}")
        return ended(TrialState.FAIL, f"{type(err).__name__}: {_first_line(err)}")
    finally:
        del trained
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the next trial's model may be larger


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [""])[0]


def finish_trial(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome) -> None:
    set_attr(trial, "epochs", outcome.epochs)
    set_attr(trial, "train_time_s", round(outcome.train_time_s, 3))
    if outcome.time_s is not None:
        set_attr(trial, "time_s", round(outcome.time_s, 3))
    if outcome.energy_j is not None:
        set_attr(trial, "energy_j", outcome.energy_j)
        set_attr(trial, "energy_source", outcome.energy_source)
    if outcome.reason:
        set_attr(trial, "reason", outcome.reason)
    values = outcome.value if outcome.state == TrialState.COMPLETE else None
    study.tell(trial, values, state=outcome.state, skip_if_finished=True)


def set_attr(trial: optuna.Trial, key: str, value: Any) -> None:
    try:
        trial.set_user_attr(key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass  # another worker declared this trial stale; its record stands
