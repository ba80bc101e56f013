"""A run folder belongs to one run, held by one process at a time.

:func:`hold` takes an advisory lock (``fcntl.flock``) on ``DIR/.bpfree.lock`` for as long as
``bpfree train`` works in ``DIR``. The kernel drops it when the process ends, however it
ends: a SIGKILLed or requeued job leaves no stale lock, and the next one resumes from the
checkpoint. A second process meanwhile gets one line naming the holder (pid, host, since when),
or waits for it (``bpfree train --wait``). flock works on local file systems and on NFS
(Linux emulates it with byte-range locks there).

:func:`check` looks at the folder before any work: not empty, a directory that can be written,
and none of the files a run writes there existing as a directory. :func:`refuse_other_run`
refuses a folder that holds a finished run of another specification, which would otherwise be
overwritten."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bpfree.core.errors import BpfreeError
from bpfree.core.io import remove_stale_temporaries, writable_directory
from bpfree.core.outputs import RUN_FILES, RUN_METRICS
from bpfree.core.record import read_record

LOCK = ".bpfree.lock"
# the files a run writes in its folder (bpfree.engine.run): each must be a file or absent
OUTPUTS = RUN_FILES

_held: set[str] = set()  # folders this process holds (a nested hold is a no-op)


class RunFolderBusy(BpfreeError):
    """Another process holds the run folder."""


def check(out: str | Path, flag: str = "--out") -> Path:
    """The run folder ``out``, created if missing, or one line saying why it cannot be one."""
    if isinstance(out, str) and not out:
        raise BpfreeError(f"{flag} is empty; give the run's directory")
    folder = writable_directory(out, f"output directory ({flag})")
    for name in OUTPUTS:
        path = folder / name
        if path.is_dir():
            raise BpfreeError(
                f"{path} is a directory, but a run writes its {name} there: remove it or give another {flag}"
            )
        if path.exists() and not path.is_file():
            raise BpfreeError(f"{path} is not a regular file, but a run writes its {name} there: remove it")
    return folder


def holder(folder: str | Path) -> str:
    """Who holds ``folder``, as its lock file says ("pid 123 on host h since 2026-...")."""
    try:
        info = json.loads((Path(folder) / LOCK).read_text()[:4096])
        return f"pid {int(info['pid'])} on host {info['host']} (since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def hold(folder: str | Path, *, wait: bool = False) -> Iterator[None]:
    """Hold ``folder`` for the block: one process at a time. ``wait``: wait for the holder to
    end instead of failing. Stale temporaries of interrupted writes are removed once held."""
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _held:
        yield
        return
    fd = _acquire(folder, wait)
    _held.add(key)
    try:
        removed = remove_stale_temporaries(folder)
        if removed:
            names = ", ".join(p.name for p in removed)
            print(
                f"bpfree: removed {len(removed)} temporary file(s) of interrupted writes in {folder}: {names}",
                file=sys.stderr,
            )
        yield
    finally:
        _held.discard(key)
        try:
            os.unlink(folder / LOCK)  # still held: a waiter that opened it sees it gone and retries
        except OSError:
            pass
        os.close(fd)


def _acquire(folder: Path, wait: bool) -> int:
    path = folder / LOCK
    said = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as err:
            what = "is a symbolic link" if err.errno == errno.ELOOP else err.strerror
            raise BpfreeError(f"cannot lock the run folder {folder}: {path} {what}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                os.close(fd)
                raise RunFolderBusy(
                    f"run folder {folder} is in use by {holder(folder)}: wait for it to end (or give --wait "
                    "to wait), or give another --out"
                ) from None
            if not said:
                print(f"bpfree: run folder {folder} is in use by {holder(folder)}; waiting (--wait)", file=sys.stderr)
                said = True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
        except OSError as err:
            os.close(fd)
            raise BpfreeError(f"cannot lock the run folder {folder}: {err.strerror}") from None
        # the holder removes the file before it lets go: a lock on a removed file holds nothing
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:
            pass  # the lock holds all the same; only the note of who holds it is missing
        return fd


def refuse_other_run(folder: str | Path, digest: str, flag: str = "--out") -> None:
    """One line if ``folder`` holds a finished run (metrics.json) of another specification
    than ``digest``, or a metrics.json this bpfree cannot read: it is never overwritten."""

    path = Path(folder) / RUN_METRICS
    if not path.exists():
        return
    try:
        record = read_record(path)
    except BpfreeError as err:
        raise BpfreeError(
            f"{folder} holds a metrics.json this bpfree cannot read ({err}); give another {flag}, or remove "
            f"{path} to train there"
        ) from None
    if record.spec_digest != digest:
        raise BpfreeError(
            f"{folder} holds a finished run of another specification ({record.algorithm} {record.arch} on "
            f"{record.dataset} seed {record.seed}, spec digest {record.spec_digest}; this one is {digest}): "
            f"give another {flag}, or remove {path} to train this one there"
        )
