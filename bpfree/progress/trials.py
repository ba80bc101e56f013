"""What a trial cost, read from its journal entry: the trial table (bpfree.tuning.records) and
``bpfree status`` sum the same numbers. No optuna import here: a trial is read, never built."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bpfree.core.io import finite

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


def abandoned_attempts(attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A trial's attempts lost to a kill or a stop signal (its ``abandoned`` attribute)."""
    attempts = attrs.get("abandoned")
    return [dict(a) for a in attempts if isinstance(a, dict)] if isinstance(attempts, list) else []


def trial_cost(trial: FrozenTrial) -> tuple[float | None, float | None, float | None, str | None]:
    """(epochs, time_s, energy_j, energy_source) a trial cost, every attempt counted: what the
    trial table says, and ``bpfree status`` sums. None: not known. Values of the wrong type in
    a hand-edited journal count as unknown.

    A trial whose worker died without telling its end (failed as stale, or still running) has
    its epochs as the last it reported and its time from its start to its last heartbeat. The
    attempts a stop signal or a kill abandoned (its ``abandoned`` attribute; it was run again)
    add their epochs and time; a killed attempt's epochs and energy are not known."""
    attrs = trial.user_attrs
    epochs = finite(attrs.get("epochs"))
    if epochs is None and trial.intermediate_values:
        epochs = float(max(trial.intermediate_values))
    time_s = finite(attrs.get("time_s", attrs.get("train_time_s")))
    beat = finite(attrs.get("heartbeat"))
    if time_s is None and trial.datetime_start is not None and beat is not None:
        time_s = round(max(0.0, beat - trial.datetime_start.timestamp()), 3)
    for attempt in abandoned_attempts(attrs):
        if finite(attempt.get("epochs")) is not None:
            epochs = (epochs or 0.0) + finite(attempt.get("epochs"))
        if finite(attempt.get("time_s")) is not None:
            time_s = round((time_s or 0.0) + finite(attempt.get("time_s")), 3)
    source = attrs.get("energy_source")
    return epochs, time_s, finite(attrs.get("energy_j")), source if isinstance(source, str) else None
