"""A study's journal file: Optuna's ``JournalFileBackend`` with whole-line appends under a lock
that dies with its process, repaired when damaged, and the workers' lock around count-and-ask."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import optuna

from bpfree.core.errors import BpfreeError
from bpfree.core.io import write_bytes_atomic, write_failed
from bpfree.core.journal import FileLock, read_journal, writers_lock
from bpfree.tuning.stop import deferred


class WholeLinesJournal(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file, whose entries are appended whole or not at all: a write that
    fails (a full disk) is cut back to the journal's length before it, under the writers'
    lock, and ends in one line naming the journal (bpfree.core.io.WriteFailed). Without this, the
    last line would be cut and every later start would find a damaged journal.

    The writers' lock is bpfree's (:func:`bpfree.core.journal.writers_lock`: a flock that dies
    with its process), not Optuna's symlink lock, which a worker SIGKILLed while holding it
    left behind for ever where the journal's path was relative. An append is never cut by a
    stop signal either: ``bpfree tune``'s handler waits for it (:func:`bpfree.tuning.stop.deferred`)."""

    def __init__(self, file_path: str) -> None:
        super().__init__(file_path, lock_obj=writers_lock(file_path))

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        with deferred(), optuna.storages.journal._file.get_lock_file(self._lock):
            fd = os.open(self._file_path, os.O_WRONLY | os.O_APPEND)
            try:
                before = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except OSError as err:
                    os.ftruncate(fd, before)  # frees what was written: possible on a full disk too
                    raise write_failed(err, self._file_path, "the tuning journal") from None
            finally:
                os.close(fd)


def repair_journal(path: str | Path) -> Path | None:
    """Set aside a damaged journal, keeping what can be kept; the copy's path, or None.

    Optuna appends one JSON line per operation, under a lock. A worker killed mid-write (on a
    network file system), a full disk or a hand edit leaves a line that does not parse, or one
    that parses but is no operation Optuna can replay (``{"op_code": 99}``, keys missing, a
    step that is text), and Optuna then fails on every start: a crash loop. Here the journal
    is read as every command reads one (:func:`bpfree.core.journal.read_journal`: each line
    checked, replayed, every trial checked), under the writers' lock so that no append is half
    done; if a line is damaged, the whole file is copied aside as ``NAME.corrupt-TIMESTAMP``
    and the journal keeps its lines before it, a consistent earlier state of the study (later
    trials are run again). One line on stderr says which. A file that is no journal at all
    (``--storage`` pointed at something else) is refused, not touched."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with writers_lock(path):
        journal = read_journal(path, in_progress=False)
        if journal.damage is None:
            return None
        data = path.read_bytes()
        if journal.entries == 0 and not data.startswith(JOURNAL_START):
            raise BpfreeError(
                f"{path} is not an Optuna journal (its first line is no journal entry); give another --storage"
            )
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        write_bytes_atomic(aside, data)
        write_bytes_atomic(path, data[: journal.kept])
        kept = f"kept its first {journal.entries} entries" if journal.entries else "the study starts afresh"
        print(
            f"bpfree: journal {path} is damaged at {journal.damage}; set aside as {aside.name}, {kept}",
            file=sys.stderr,
        )
        return aside


def refuse_other_file(path: str | Path) -> None:
    """A ``--storage`` that names a file which is no Optuna journal (a config, say) is refused
    in one line before anything is written beside it (its locks)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(JOURNAL_START))
    except (FileNotFoundError, IsADirectoryError):
        return
    except OSError as err:
        raise BpfreeError(f"cannot read the journal {path}: {err.strerror or err}") from None
    if head and not JOURNAL_START.startswith(head) and not head.startswith(JOURNAL_START):
        raise BpfreeError(
            f"{path} is not an Optuna journal (its first line is no journal entry); give another --storage"
        )


JOURNAL_START = b'{"op_code"'  # how Optuna's journal file begins (and every line of it)


def ask_lock(storage: str | Path) -> FileLock:
    """The workers' lock around count-and-ask (and every write of the study's files beside
    its journal): a flock on ``STORAGE.ask.lock``, which dies with its process, so that a
    worker SIGKILLed while holding it never leaves it held."""
    return FileLock(f"{storage}.ask.lock")
