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


def fail_stale_trials(study: optuna.Study, stale_after: float) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker is gone: on this host, a dead process; in a
    requeued SLURM job, the job's earlier run; on any host, no heartbeat (one per epoch) for
    ``stale_after`` seconds. The journal backend has no heartbeat of its own (only RDBStorage
    has), hence this. Returns the trial numbers.

    Called under the ask lock (``_next_trial``), inside which every trial is asked and given
    its "worker" attribute: a RUNNING trial without one, seen under that lock, was asked by
    a worker that died before it could name itself (CI caught a SIGKILL there, and the trial
    then waited for a heartbeat that would never come)."""
    me, now, failed = worker_identity(), time.time(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker") or {}
        beat = trial.user_attrs.get("heartbeat")
        if beat is None:
            beat = trial.datetime_start.timestamp() if trial.datetime_start else now
        if not worker:
            reason = "stale: its worker died between asking for it and naming itself"
        elif _gone(worker, me):
            where = f"pid {worker.get('pid')} on {worker.get('host')}"
            if worker.get("slurm_job"):
                where += f", SLURM job {worker['slurm_job']} run {worker.get('slurm_restart')}"
            reason = f"stale: its worker ({where}) is gone"
        elif now - beat > stale_after:
            silent = f"{now - beat:.0f} s"
            reason = f"stale: no heartbeat for {silent} from {worker or 'an unknown worker'}"
        else:
            continue
        # Study.tell only finishes a trial this process asked for; the storage can finish any
        storage = study._storage
        try:
            storage.set_trial_user_attr(trial._trial_id, "reason", reason)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # finished meanwhile by its own worker or by another one
        failed.append(trial.number)
        print(f"trial {trial.number}: failed, {reason}", file=sys.stderr)
    return failed


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
