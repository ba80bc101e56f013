"""Who runs a trial, and whether that worker is gone: one decision for the tuning workers that
put such a trial back in the queue (bpfree.tuning.workers) and for ``bpfree status``, which
shows it as stale. psutil is imported here, optuna never (a trial is read, not built)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import psutil

from bpfree.core.io import finite

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial


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


def stale_reason(
    trial: FrozenTrial,
    stale_after: float,
    *,
    now: float | None = None,
    me: Mapping[str, Any] | None = None,
    under_ask_lock: bool = False,
) -> str | None:
    """Why a RUNNING trial's worker is gone, or None while it may still be at work: on this
    host, a dead (or zombie) process or a reused pid; in a requeued SLURM job, the job's
    earlier run; on any host, no heartbeat (one per epoch; before the first, the trial's start)
    for ``stale_after`` seconds. ``me``: who asks (default: this process). ``under_ask_lock``:
    asked under the study's ask lock, inside which every trial is asked and named, so a
    RUNNING trial without a worker was asked by one that died before naming itself; outside
    it (``bpfree status``), such a trial may be being named right now: the heartbeat decides."""
    now = time.time() if now is None else now
    worker = trial.user_attrs.get("worker") or {}
    beat = last_heartbeat(trial, now)
    if not isinstance(worker, Mapping) or not worker:
        if under_ask_lock:
            return "its worker died between asking for it and naming itself"
    elif worker_gone(worker, worker_identity() if me is None else me):
        where = f"pid {worker.get('pid')} on {worker.get('host')}"
        if worker.get("slurm_job"):
            where += f", SLURM job {worker['slurm_job']} run {worker.get('slurm_restart')}"
        return f"its worker ({where}) is gone"
    if now - beat > stale_after:
        return f"no heartbeat for {now - beat:.0f} s from {worker}"
    return None


def last_heartbeat(trial: FrozenTrial, now: float) -> float:
    """When the trial's worker was last heard of: its heartbeat, else its start, else ``now``."""
    beat = finite(trial.user_attrs.get("heartbeat"))
    if beat is None:
        beat = trial.datetime_start.timestamp() if trial.datetime_start else now
    return beat


def worker_gone(worker: Mapping[str, Any], me: Mapping[str, Any]) -> bool:
    """Known to be dead, seen by ``me`` (a :func:`worker_identity`); anything unknown is left
    to the heartbeat."""
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
    if not isinstance(pid, int) or isinstance(pid, bool):
        return True  # unknown: leave it to the heartbeat
    try:
        process = psutil.Process(pid)
        if finite(started) is not None and abs(process.create_time() - started) > 1.0:
            return False  # the pid was reused by a later process
        if process.status() == psutil.STATUS_ZOMBIE:
            return False  # killed, not yet reaped by its parent
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True  # e.g. not ours to inspect: leave it to the heartbeat
    return True
