"""Who runs a trial, and the trials whose worker is gone (killed, requeued, silent)."""

from __future__ import annotations

import sys
import time

import optuna
from optuna.trial import TrialState

from bpfree.core.spec import MAX_KILLED_ATTEMPTS
from bpfree.progress.trials import abandoned_attempts
from bpfree.progress.workers import last_heartbeat, stale_reason, worker_identity

__all__ = ["abandon_trial", "abandoned_attempts", "retry_stale_trials", "worker_identity"]


def retry_stale_trials(study: optuna.Study, stale_after: float) -> list[int]:
    """Put back in the study's queue (WAITING) the RUNNING trials whose worker is gone: on
    this host, a dead process; in a requeued SLURM job, the job's earlier run; on any host, no
    heartbeat (one per epoch) for ``stale_after`` seconds. The next ask runs such a trial
    again, with its params, before any new one, and it is counted once, as the trial it is: a
    SIGKILLed study ends with the trials of an uninterrupted one. A trial whose workers died
    :data:`MAX_KILLED_ATTEMPTS` times running it is failed instead. Each attempt lost is kept
    in the trial's ``abandoned`` attribute (its time to its last heartbeat). The journal
    backend has no heartbeat of its own (only RDBStorage has), hence this. Returns the trial
    numbers.

    Called under the ask lock (``_next_trial``), inside which every trial is asked and given
    its "worker" attribute: a RUNNING trial without one, seen under that lock, was asked by
    a worker that died before it could name itself."""
    me, now, changed = worker_identity(), time.time(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(trial, stale_after, now=now, me=me, under_ask_lock=True)
        if reason is None:
            continue
        beat = last_heartbeat(trial, now)
        attempts = abandoned_attempts(trial.user_attrs)
        start = trial.datetime_start.timestamp() if trial.datetime_start else beat
        attempts.append({"by": f"killed: {reason}", "epochs": None, "time_s": round(max(0.0, beat - start), 3)})
        killed = sum(str(a.get("by", "")).startswith("killed") for a in attempts)
        # Study.tell only finishes a trial this process asked for; the storage can change any
        storage = study._storage
        try:
            storage.set_trial_user_attr(trial._trial_id, "abandoned", attempts)
            if killed >= MAX_KILLED_ATTEMPTS:
                storage.set_trial_user_attr(trial._trial_id, "reason", f"stale: {reason} ({killed} times)")
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
                print(f"trial {trial.number}: failed, {reason}, for the {killed}th time", file=sys.stderr)
            else:
                storage.set_trial_user_attr(trial._trial_id, "worker", {})
                storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
                print(f"trial {trial.number}: run again, {reason}", file=sys.stderr)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile by its own worker or by another one
        changed.append(trial.number)
    return changed


def abandon_trial(study: optuna.Study, trial: optuna.Trial, by: str, epochs: int, time_s: float) -> None:
    """Put ``trial``, which this worker runs, back in the study's queue (WAITING), its params
    kept: a stop signal ended it, and it is run again (first) where the study resumes, not
    counted as failed. The attempt is kept in its ``abandoned`` attribute."""
    frozen = study.get_trials(deepcopy=False)[trial.number]
    if frozen.state != TrialState.RUNNING:
        return  # told meanwhile, or declared stale by another worker
    attempts = abandoned_attempts(frozen.user_attrs)
    attempts.append({"by": by, "epochs": epochs, "time_s": round(time_s, 3)})
    storage = study._storage  # Study.tell finishes a trial; only the storage can put one back
    try:
        storage.set_trial_user_attr(trial._trial_id, "abandoned", attempts)
        storage.set_trial_user_attr(trial._trial_id, "worker", {})
        storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
