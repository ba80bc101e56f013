"""A tuning study's journal file, read back: the one reader of every command that reads one
(``bpfree tune`` before it resumes a study, ``bpfree status``, ``bpfree dashboard``), and the
lock its writers share.

The file is Optuna's ``JournalFileBackend`` format: one JSON object per line, each an operation
(create a study, create a trial, set a param, report a value, ...). :func:`parse_journal` reads
it within :data:`MAX_JOURNAL_BYTES`, checks every line (JSON, then an operation Optuna knows with
the keys and types it needs), replays the lines through Optuna's public ``JournalStorage``, and
checks every trial as ``Study.add_trial`` does. It keeps the lines before the first that fails
any of these and says where that one is (:class:`Damage`): a line that parses but means nothing
(``{"op_code": 99}``, a trial created without its keys, a step that is text) is damage like a
cut line, never a crash of whoever reads it next.

:class:`FileLock` is the writers' lock: ``fcntl.flock`` on ``JOURNAL.lock``, which the kernel
drops when its process ends however it ends, so a SIGKILLed worker never leaves a lock behind
(Optuna's own symlink lock did: a relative journal path made its link dangle, and the next
worker spun on it for ever). No torch here."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import InMemoryStorage, JournalStorage
from optuna.storages.journal import BaseJournalBackend
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial

from bpfree.core.errors import BpfreeError
from bpfree.core.io import read_limited

MAX_JOURNAL_BYTES = 512 << 20  # a 50-trial study of 100 epochs each is about 2 MiB
NEWLINE = b"\n"
LOCK_SUFFIX = ".lock"  # JOURNAL.lock: the writers' lock (the name Optuna's own lock used)
# the longest name bpfree writes beside a journal NAME: the temporary file of its set-aside copy,
# ".NAME.corrupt-YYYYmmddTHHMMSS-PID.XXXXXXXX.tmp"; NAME must leave room for it within the file
# system's limit on a name (NAME_MAX, 255 bytes on Linux)
BESIDE_JOURNAL = len(".") + len(".corrupt-YYYYmmddTHHMMSS-4194304") + len(".XXXXXXXX.tmp")


# -- the writers' lock ------------------------------------------------------------------------
class FileLock:
    """An exclusive ``fcntl.flock`` on ``path`` (created if missing), held by this process
    until :meth:`release`; the kernel drops it when the process ends, however it ends (NFS
    included: Linux maps flock to byte-range locks there). Blocking, as Optuna's locks are, and
    with their ``acquire``/``release``: ``JournalFileBackend(path, lock_obj=FileLock(...))``."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = _open_lock_file(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open_lock_file(path: str) -> int:
    """The lock file, opened without following a link. A symbolic link there is the lock of
    Optuna's ``JournalFileSymlinkLock`` (what bpfree used before), left by a worker killed while
    it held it: removed, once."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    for attempt in range(2):
        try:
            return os.open(path, flags, 0o666)
        except OSError as err:
            if err.errno == errno.ELOOP and attempt == 0:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                continue
            raise BpfreeError(f"cannot open the lock file {path}: {err.strerror or err}") from None
    raise AssertionError("unreachable")


def writers_lock(journal: str | Path) -> FileLock:
    """The lock every write of ``journal`` takes (``JOURNAL.lock``)."""
    return FileLock(f"{journal}{LOCK_SUFFIX}")


def check_journal_name(journal: str | Path, what: str = "--storage") -> None:
    """A journal whose file name leaves no room for the files bpfree writes beside it (its
    lock, a set-aside copy, an atomic write's temporary file) is refused in one line, before
    any work: such a name failed only when the first of them was written."""
    name = Path(journal).name
    try:
        limit = os.pathconf(Path(journal).parent if str(Path(journal).parent) else ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    room = limit - BESIDE_JOURNAL
    if len(os.fsencode(name)) > room:
        raise BpfreeError(
            f"{what} {journal}: its file name is {len(os.fsencode(name))} bytes; at most {room} "
            f"(the file system allows {limit}, and bpfree writes NAME.ask.lock, NAME.corrupt-... beside it)"
        )


# -- reading it back ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Damage:
    """Where a journal stops being readable: the first line that is cut, no JSON, or no
    operation Optuna can replay, and why."""

    offset: int  # the byte the line begins at
    line: int  # counted from 1
    reason: str

    def __str__(self) -> str:
        return f"line {self.line} (byte {self.offset}): {self.reason}"


@dataclass
class JournalStudy:
    name: str
    directions: list[StudyDirection]
    user_attrs: dict[str, Any]
    trials: list[FrozenTrial]

    @property
    def maximize(self) -> bool:
        return StudyDirection.MAXIMIZE in self.directions


@dataclass
class Journal:
    """What a journal holds up to its first damaged line."""

    path: Path | None
    size: int  # bytes read
    kept: int  # bytes of the whole lines kept (before any damage)
    entries: int  # lines kept
    studies: list[JournalStudy] = field(default_factory=list)
    damage: Damage | None = None

    @property
    def trials(self) -> list[FrozenTrial]:
        """Every study's trials (a bpfree journal holds one study)."""
        return [t for s in self.studies for t in s.trials]

    def copy_into(self, storage: optuna.storages.BaseStorage, name: str | None = None) -> None:
        """Each study into ``storage`` (an in-memory one, say), renamed ``name`` where given."""
        for study in self.studies:
            copy = optuna.create_study(storage=storage, study_name=name or study.name, directions=study.directions)
            for key, value in study.user_attrs.items():
                copy.set_user_attr(key, value)
            copy.add_trials(study.trials)


def read_journal(path: str | Path, *, in_progress: bool = True, limit: int = MAX_JOURNAL_BYTES) -> Journal:
    """The journal at ``path``, read within ``limit`` bytes (a FIFO, a device or a larger file
    is one BpfreeError line) and checked (:func:`parse_journal`). ``in_progress``: a last line
    without its newline is one a worker is appending (left out, not damage); False where no
    writer can be at work (under the writers' lock): then it is damage."""
    path = Path(path)
    data = read_limited(path, limit, f"tuning journal {path}")
    journal = parse_journal(data, in_progress=in_progress)
    journal.path = path
    return journal


def parse_journal(data: bytes, *, in_progress: bool = True) -> Journal:
    """A journal's bytes, checked line by line and replayed; see the module's docstring."""
    entries: list[dict[str, Any]] = []
    offsets: list[int] = []
    damage = None
    start = 0
    while start < len(data):
        end = data.find(NEWLINE, start)
        if end < 0:  # the last line has no newline
            if not in_progress:
                damage = Damage(start, len(entries) + 1, "cut short (no newline at its end)")
            break
        problem = _entry_problem(data[start:end])
        if isinstance(problem, str):
            damage = Damage(start, len(entries) + 1, problem)
            break
        entries.append(problem)
        offsets.append(start)
        start = end + 1

    kept = len(entries)
    storage, failure = _replay(entries)
    if failure is not None:
        kept, reason = failure
        storage, _ = _replay(entries[:kept])  # what is before it replays (it did, just now)
        damage = Damage(offsets[kept], kept + 1, reason)
    studies, invalid = _studies(storage)
    if invalid is not None:  # a trial Optuna would not add: find the first line that makes it so
        low, high = 0, kept  # the first `low` lines make valid trials, the first `high` do not
        while high - low > 1:
            middle = (low + high) // 2
            if _studies(_replay(entries[:middle])[0])[1] is None:
                low = middle
            else:
                high = middle
        kept = low
        studies, _ = _studies(_replay(entries[:kept])[0])
        damage = Damage(offsets[kept], kept + 1, invalid)
    kept_bytes = offsets[kept] if kept < len(offsets) else start
    return Journal(None, len(data), kept_bytes, kept, studies, damage)


class _Entries(BaseJournalBackend):
    """A read-only journal backend over parsed lines, counting what Optuna has read: the line
    whose replay raises is the last one it read."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        self.entries = entries
        self.read = 0

    def read_logs(self, log_number_from: int) -> Iterator[dict[str, Any]]:
        for number in range(log_number_from, len(self.entries)):
            self.read = number + 1
            yield self.entries[number]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        raise PermissionError("a journal read back is read-only")


def _replay(entries: list[dict[str, Any]]) -> tuple[JournalStorage | None, tuple[int, str] | None]:
    """Optuna's storage replayed from ``entries``, or (None, (index of the line that failed, why))."""
    backend = _Entries(entries)
    try:
        return JournalStorage(backend), None
    except Exception as err:  # noqa: BLE001  (whatever Optuna's replay raises: the line is damage)
        return None, (max(backend.read - 1, 0), f"Optuna cannot replay it ({_first_line(err)})")


def _studies(storage: JournalStorage | None) -> tuple[list[JournalStudy], str | None]:
    """Every study with its trials, and the first reason a trial is not one Optuna would add
    to a study (``Study.add_trial``'s check: params within their distributions, a complete
    trial's values, ...), or None."""
    if storage is None:
        return [], None
    studies = []
    for frozen in storage.get_all_studies():
        trials = storage.get_all_trials(storage.get_study_id_from_name(frozen.study_name), deepcopy=False)
        with quiet_optuna():  # no "A new study created in memory" line on a reader's stderr
            check = optuna.create_study(storage=InMemoryStorage(), directions=frozen.directions)
        for trial in trials:
            problem = _trial_problem(trial)
            if problem is None:
                try:
                    check.add_trial(trial)
                except Exception as err:  # noqa: BLE001  (Optuna's own check of a trial)
                    problem = _first_line(err)
            if problem is not None:
                return studies, f"trial {trial.number} of study {frozen.study_name!r} is invalid: {problem}"
        studies.append(JournalStudy(frozen.study_name, list(frozen.directions), dict(frozen.user_attrs), trials))
    return studies, None


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's INFO lines (a study created in memory) left out for the block."""
    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(min(max(previous, optuna.logging.WARNING), optuna.logging.CRITICAL))
    try:
        yield
    finally:
        optuna.logging.set_verbosity(previous)


def _trial_problem(trial: FrozenTrial) -> str | None:
    if trial.values is not None and not all(_number(v) for v in trial.values):
        return f"its values {trial.values!r} are not numbers"
    for step, value in trial.intermediate_values.items():
        if not isinstance(step, int) or not (_number(value) or value is None):
            return f"its value at step {step!r} is {value!r}, not a number"
    return None


def _first_line(err: BaseException) -> str:
    text = (str(err).splitlines() or [""])[0] or type(err).__name__
    return f"{type(err).__name__}: {text}"[:200]


# -- one line, checked ---------------------------------------------------------------------------
def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _direction(value: Any) -> bool:
    return _integer(value) and value in (StudyDirection.MINIMIZE.value, StudyDirection.MAXIMIZE.value)


def _state(value: Any) -> bool:
    return _integer(value) and value in {s.value for s in optuna.trial.TrialState}


def _timestamp(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _optional(check):
    return lambda value: value is None or check(value)


def _list_of(check):
    return lambda value: isinstance(value, list) and all(check(v) for v in value)


def _mapping_of(check):
    return lambda value: isinstance(value, dict) and all(isinstance(k, str) and check(v) for k, v in value.items())


def _one_key(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and all(isinstance(k, str) for k in value)


def _steps(value: Any) -> bool:
    return _mapping_of(lambda v: v is None or _number(v))(value) and all(k.lstrip("-").isdigit() for k in value)


_ANY_MAPPING = _mapping_of(lambda v: True)
# each operation Optuna's journal writes (optuna.storages.journal._storage.JournalOperation): the
# keys it must have and what each holds; then the keys it may have
OPERATIONS: dict[int, tuple[str, dict[str, Any], dict[str, Any]]] = {
    0: ("create study", {"study_name": lambda v: isinstance(v, str), "directions": _list_of(_direction)}, {}),
    1: ("delete study", {"study_id": _integer}, {}),
    2: ("set a study's user attribute", {"study_id": _integer, "user_attr": _one_key}, {}),
    3: ("set a study's system attribute", {"study_id": _integer, "system_attr": _one_key}, {}),
    4: (
        "create trial",
        {"study_id": _integer, "datetime_start": _optional(_timestamp)},
        {
            "state": _state,
            "value": _optional(_number),
            "values": _optional(_list_of(_number)),
            "datetime_complete": _timestamp,
            "distributions": _mapping_of(lambda v: isinstance(v, str)),
            "params": _mapping_of(_number),
            "user_attrs": _ANY_MAPPING,
            "system_attrs": _ANY_MAPPING,
            "intermediate_values": _steps,
        },
    ),
    5: (
        "set a trial's param",
        {
            "trial_id": _integer,
            "param_name": lambda v: isinstance(v, str),
            "param_value_internal": _number,
            "distribution": lambda v: isinstance(v, str),
        },
        {},
    ),
    6: (
        "set a trial's state",
        {"trial_id": _integer, "state": _state, "values": _optional(_list_of(_number))},
        {"datetime_start": _timestamp, "datetime_complete": _timestamp},
    ),
    7: ("report a value", {"trial_id": _integer, "step": _integer, "intermediate_value": _optional(_number)}, {}),
    8: ("set a trial's user attribute", {"trial_id": _integer, "user_attr": _one_key}, {}),
    9: ("set a trial's system attribute", {"trial_id": _integer, "system_attr": _one_key}, {}),
    10: ("discard trials", {}, {}),  # Rustuna's; Optuna skips it
}


def _entry_problem(line: bytes) -> dict[str, Any] | str:
    """The line as an operation, or why it is none."""
    try:
        entry = json.loads(line)
    except RecursionError:
        return "it nests too deeply"
    except ValueError as err:  # JSON, or UTF-8
        return f"no JSON ({str(err).splitlines()[0][:120]})"
    if not isinstance(entry, dict):
        return "not a JSON object"
    op = entry.get("op_code")
    if not _integer(op) or op not in OPERATIONS:
        return f"op_code {op!r} is no journal operation (valid: 0 to {max(OPERATIONS)})"
    if not isinstance(entry.get("worker_id"), str):
        return f"op_code {op} without a worker_id"
    what, required, optional = OPERATIONS[op]
    for key, check in required.items():
        if key not in entry:
            return f"op_code {op} ({what}) without {key!r}"
        if not check(entry[key]):
            return f"op_code {op} ({what}): {key!r} is {_shown(entry[key])}"
    for key, check in optional.items():
        if key in entry and not check(entry[key]):
            return f"op_code {op} ({what}): {key!r} is {_shown(entry[key])}"
    if op == 6:  # RUNNING needs its start, a finished state its end (Optuna reads them)
        state = optuna.trial.TrialState(entry["state"])
        if state == optuna.trial.TrialState.RUNNING and "datetime_start" not in entry:
            return "op_code 6 (set a trial's state) to RUNNING without 'datetime_start'"
        if state.is_finished() and "datetime_complete" not in entry:
            return "op_code 6 (set a trial's state) to a finished state without 'datetime_complete'"
    if op == 4 and "params" in entry and not set(entry["params"]) <= set(entry.get("distributions") or {}):
        return "op_code 4 (create trial): a param without its distribution"
    if op == 4 and optuna.trial.TrialState(entry.get("state", 0)).is_finished() and "datetime_complete" not in entry:
        return "op_code 4 (create trial): a finished trial without 'datetime_complete'"
    return entry


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
