"""A study's journal file: Optuna's ``JournalFileBackend`` with whole-line appends, repaired when
damaged, and the workers' lock around count-and-ask."""

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

NEWLINE = b"\n"  # ends every journal entry


class WholeLinesJournal(optuna.storages.journal.JournalFileBackend):
    """Optuna's journal file, whose entries are appended whole or not at all: a write that
    fails (a full disk) is cut back to the journal's length before it, under the writers'
    lock, and ends in one line naming the journal (bpfree.core.io.WriteFailed). Without this, the
    last line would be cut and every later start would find a damaged journal."""

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        with optuna.storages.journal._file.get_lock_file(self._lock):
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
    network file system), a full disk or a hand edit leaves a line that does not parse, and
    Optuna then fails on every start: a crash loop. Here the whole file is copied aside as
    ``NAME.corrupt-TIMESTAMP`` and the journal keeps its lines before the first damaged one,
    a consistent earlier state of the study (later trials are run again); if even those do
    not replay, the study starts afresh. One line on stderr says which. A file that is no
    journal at all (``--storage`` pointed at something else) is refused, not touched."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(path))  # the writers' lock
    lock.acquire()
    try:
        data = path.read_bytes()
        good = _readable_prefix(data)
        if good == len(data):
            return None
        if good == 0 and not (data.startswith(b'{"op_code"') and NEWLINE not in data):
            raise BpfreeError(
                f"{path} is not an Optuna journal (its first line is no journal entry); give another --storage"
            )
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
        write_bytes_atomic(aside, data)
        write_bytes_atomic(path, data[:good])
        try:
            optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
            kept = f"kept its first {data[:good].count(NEWLINE)} entries"
        except Exception:  # noqa: BLE001  (a journal that parses but does not replay)
            write_bytes_atomic(path, b"")
            kept = "its readable part does not replay either: the study starts afresh"
        print(
            f"bpfree: journal {path} is damaged at byte {good} of {len(data)}; set aside as {aside.name}, {kept}",
            file=sys.stderr,
        )
        return aside
    finally:
        lock.release()


def _readable_prefix(data: bytes) -> int:
    """The length of the journal's leading whole lines that parse as journal entries."""
    end = 0
    while (newline := data.find(NEWLINE, end)) >= 0:
        try:
            entry = json.loads(data[end:newline])
        except ValueError:  # JSON or UTF-8
            break
        if not isinstance(entry, dict) or "op_code" not in entry:
            break
        end = newline + 1
    return end


ASK_LOCK_GRACE_S = 30  # a lock file unchanged this long was left by a killed worker


def ask_lock(storage: str | Path) -> optuna.storages.journal.BaseJournalFileLock:
    """The workers' lock around count-and-ask: the file ``STORAGE.ask.lock``, made with
    O_EXCL. Not Optuna's symlink lock: that one breaks a stale lock by the mtime of the link's
    *target*, and this lock guards no file of its own, so a dangling link left by a worker
    SIGKILLed while holding it was never broken and every later worker waited forever."""
    return optuna.storages.journal.JournalFileOpenLock(f"{storage}.ask", grace_period=ASK_LOCK_GRACE_S)
