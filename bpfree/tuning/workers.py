"""Who runs a trial, and the trials whose worker is gone (killed, requeued, silent)."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Mapping
from typing import Any

import optuna
import psutil
from optuna.trial import TrialState

from bpfree.core.spec import MAX_KILLED_ATTEMPTS


def worker_identity() -> dict[str, Any]:
    """Who runs a trial: enough to tell later that it is gone. The process's start time
    tells a reused pid from the original; SLURM's job, task and restart count tell a
    requeued job (same job id, on any node) from the run of it that was pre-empted."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": psutil.Process().create_time(),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "slurm_task": os.environ.get("SLURM_PROCID"),
        "slurm_restart": os.environ.get("SLURM_RESTART_COUNT", "0"),
    }


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
        worker = trial.user_attrs.get("worker") or {}
        beat = trial.user_attrs.get("heartbeat")
        if not isinstance(beat, (int, float)) or isinstance(beat, bool):
            beat = trial.datetime_start.timestamp() if trial.datetime_start else now
        if not isinstance(worker, dict) or not worker:
            reason = "its worker died between asking for it and naming itself"
        elif _gone(worker, me):
            where = f"pid {worker.get('pid')} on {worker.get('host')}"
            if worker.get("slurm_job"):
                where += f", SLURM job {worker['slurm_job']} run {worker.get('slurm_restart')}"
            reason = f"its worker ({where}) is gone"
        elif now - beat > stale_after:
            reason = f"no heartbeat for {now - beat:.0f} s from {worker}"
        else:
            continue
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


def abandoned_attempts(attrs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A trial's attempts lost to a kill or a stop signal (its ``abandoned`` attribute)."""
    attempts = attrs.get("abandoned")
    return [dict(a) for a in attempts if isinstance(a, dict)] if isinstance(attempts, list) else []


def _gone(worker: Mapping[str, Any], me: Mapping[str, Any]) -> bool:
    """Known to be dead (anything unknown is left to the heartbeat)."""
    if all(worker.get(k) == me[k] for k in ("host", "pid", "started")):
        # this very process, which runs its trials one after another and asks for the next
        # only between them: a trial of its own still RUNNING lost its end (a repaired journal)
        return True
    same_slurm_task = worker.get("slurm_job") is not None and (worker.get("slurm_job"), worker.get("slurm_task")) == (
        me["slurm_job"],
        me["slurm_task"],
    )
    if same_slurm_task and worker.get("slurm_restart") != me["slurm_restart"]:
        return True  # SLURM runs a job once at a time: this is its requeued run
    if worker.get("host") == me["host"]:
        return not _alive(worker.get("pid"), worker.get("started"))
    return False


def _alive(pid: Any, started: Any = None) -> bool:
    if not isinstance(pid, int):
        return True  # unknown: leave it to the heartbeat
    try:
        process = psutil.Process(pid)
        if isinstance(started, (int, float)) and abs(process.create_time() - started) > 1.0:
            return False  # the pid was reused by a later process
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # killed, not yet reaped by its parent
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # e.g. not ours to inspect: leave it to the heartbeat
    return True
