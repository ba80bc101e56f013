"""Files in and out, safely.

Writes are atomic: a temporary file in the same directory, fsync, then rename, so that a
reader (or a resumed job) never sees half a file. A write that fails (a full disk, a read-only
mount) raises :class:`WriteFailed`, one line naming the path and what was being written; the
temporary file is removed and the previous version of the file, if any, stands.

Reads of what a user gives are bounded: :func:`read_yaml` (spec files, params, configs,
search spaces) refuses a file larger than :data:`MAX_YAML_BYTES`, text that is not UTF-8, and
YAML whose aliases expand to more than :data:`MAX_YAML_VALUES` values or nest deeper than
:data:`MAX_YAML_DEPTH` (an alias bomb), before building anything from it; :func:`read_json`
does the same for JSON. Every path is literal: nothing here expands wildcards."""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from bpfree.core.errors import BpfreeError

MAX_YAML_BYTES = 1 << 20  # 1 MiB: a spec, params or config file is a few KiB
MAX_YAML_VALUES = 100_000  # scalars, lists and mappings, every alias followed
MAX_YAML_DEPTH = 64  # nesting of lists and mappings
MAX_JSON_BYTES = 64 << 20  # a run's metrics.json is tens of KiB
MAX_TABLE_BYTES = 256 << 20  # a CSV table read back (the tables, Snakemake's benchmarks): a grid's are MiBs


class WriteFailed(BpfreeError, OSError):
    """A file could not be written (its ``errno`` is the OSError's): one line, and nothing
    half-written is left. Also an OSError, so that callers catching OSError still do."""


# what a file is, for the message when it cannot be written
_WHAT = {
    "checkpoint.pt": "the run's checkpoint",
    "history.csv": "the run's history",
    "metrics.json": "the run's metrics",
    "spec.yaml": "the run's spec",
    "best_params.yaml": "the best parameters",
}


def _what(path: Path) -> str:
    if path.name in _WHAT:
        return _WHAT[path.name]
    if path.name.endswith(".trials.csv"):
        return "the trial table"
    return "a file"


def write_failed(err: OSError, path: str | Path, what: str | None = None) -> WriteFailed:
    """The one-line error for ``err`` raised writing ``what`` to ``path``."""
    if isinstance(err, WriteFailed):
        return err
    path = Path(path)
    what = what or _what(path)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        text = (
            f"no space left on the device writing {what} to {path}; nothing half-written is kept (its "
            "previous version, if any, stands): free space and run the same command again"
        )
    else:
        text = f"cannot write {what} to {path}: {err.strerror or err}"
    failed = WriteFailed(text)
    failed.errno = err.errno
    return failed


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | Path, data: bytes, what: str | None = None) -> None:
    """``data`` as ``path``, atomically; ``what`` names the file in an error (default: from
    its name, e.g. "the run's checkpoint")."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise write_failed(err, path, what) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; results are for sharing
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_failed(err, path, what) from None
        raise


# the temporary files write_bytes_atomic makes: ".NAME." + mkstemp's 8 characters + ".tmp"
TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def temporary_of(name: str) -> str | None:
    """The file whose atomic write made the temporary file ``name``, or None if it is none."""
    return name[1:-13] if TEMPORARY.match(name) else None


def remove_stale_temporaries(directory: str | Path, of: Callable[[str], bool] | None = None) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes (a SIGKILL between creating
    and renaming) left in ``directory``; the paths removed. ``of``: only those of the files
    whose name it accepts. Call it only while no other process can be writing those files
    there (holding the run folder's lock, a study's ask lock, or as their only writer)."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        target = temporary_of(entry.name)
        if target is None or (of is not None and not of(target)):
            continue
        if entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
            except OSError:
                continue
            removed.append(Path(entry.path))
    return removed


def write_text_atomic(path: str | Path, text: str, what: str | None = None) -> None:
    write_bytes_atomic(path, text.encode(), what)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Strict JSON: NaN and infinities (a diverged run's accuracy) are written as null."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=False, default=str, allow_nan=False)
    write_text_atomic(path, text + "\n")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_yaml_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, yaml.safe_dump(obj, sort_keys=False))


def write_csv_atomic(path: str | Path, rows: Iterable[Mapping[str, Any]], fieldnames: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def write_history_atomic(path: str | Path, rows: list[Mapping[str, Any]]) -> None:
    """A run's history.csv: one row per epoch, HISTORY_COLUMNS first, then every other key
    the rows hold, in the order they first appear."""
    from bpfree.core.outputs import HISTORY_COLUMNS

    extra = [k for r in rows for k in r if k not in HISTORY_COLUMNS]
    write_csv_atomic(path, rows, HISTORY_COLUMNS + list(dict.fromkeys(extra)))


def writable_directory(path: str | Path, what: str = "output directory") -> Path:
    """``path``, created if missing and proven writable by creating a file in it, so that a
    job fails before its work, not after (``os.access`` says yes to root on a read-only
    mount). An empty path is refused (it would be the current directory)."""
    if isinstance(path, str) and not path:
        raise BpfreeError(f"{what} is empty; give a directory")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BpfreeError(f"{what} {path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BpfreeError(f"cannot create {what} {path}: {err.strerror or err}") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise BpfreeError(f"cannot write to {what} {path}: {err.strerror or err}") from None
    return path


def output_file(path: str | Path, what: str) -> Path:
    """A file that will be written later, checked now: not empty, not a directory or other
    non-file, and its directory writable (created if missing). ``what`` names it ("--out")."""
    if isinstance(path, str) and not path:
        raise BpfreeError(f"{what} is empty; give a file path")
    path = Path(path)
    if path.is_dir():
        raise BpfreeError(f"{what} {path} is a directory; give a file path")
    if path.exists() and not path.is_file():
        raise BpfreeError(f"{what} {path} is not a regular file; give a file path")
    writable_directory(path.parent, f"the directory of {what}")
    return path


# -- reading, with limits -------------------------------------------------------------------
def read_limited(path: str | Path, limit: int, label: str | None = None) -> bytes:
    """The bytes of the regular file ``path``, refused in one line beyond ``limit`` bytes (a
    FIFO or a device such as /dev/zero is refused without reading it)."""
    path = Path(path)
    label = label or str(path)
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise BpfreeError(f"{label} is a directory, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise BpfreeError(f"{label} is not a regular file")
        if info.st_size > limit:
            raise BpfreeError(f"{label} is {info.st_size} bytes, more than the {limit} this file may have")
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as err:
        raise BpfreeError(f"cannot read {label}: {err.strerror or err}") from None
    if len(data) > limit:
        raise BpfreeError(f"{label} is more than {limit} bytes, more than this file may have")
    return data


def decode_utf8(data: bytes, label: str) -> str:
    """``data`` as UTF-8 text (a leading byte-order mark dropped), or one line saying where
    it is not."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise BpfreeError(
            f"{label} is not UTF-8 text (byte {data[err.start]:#04x} at offset {err.start}); save it as UTF-8"
        ) from None


def read_yaml(path: str | Path, what: str = "") -> Any:
    """YAML from a file as plain data (safe: no object is ever built from a tag), within the
    limits above; one BpfreeError line for anything else. ``what`` prefixes the path in
    messages ("params file")."""
    label = f"{what} {path}" if what else str(path)
    return loads_yaml(decode_utf8(read_limited(path, MAX_YAML_BYTES, label), label), label)


def loads_yaml(text: str, label: str = "YAML") -> Any:
    """YAML text as plain data: composed first, its size with every alias followed checked,
    only then built."""
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters already
    except yaml.YAMLError as err:
        raise BpfreeError(f"{label} is not valid YAML: {str(err).splitlines()[0]}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, label)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        raise BpfreeError(f"{label} is not valid YAML: {str(err).splitlines()[0]}") from None
    except RecursionError:
        raise BpfreeError(f"{label} nests lists or mappings too deeply (at most {MAX_YAML_DEPTH})") from None
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _check_expansion(root: yaml.Node, label: str) -> None:
    """Refuse a document whose aliases expand to more than MAX_YAML_VALUES values, nest
    deeper than MAX_YAML_DEPTH, or refer to themselves: counted on the composed nodes (each
    shared node once), without building the data."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()
    stack = [root]
    while stack:
        node = stack[-1]
        key = id(node)
        if key in size:
            stack.pop()
            continue
        children = _children(node)
        if key not in open_:
            open_.add(key)
            pending = [c for c in children if id(c) not in size]
            for child in pending:
                if id(child) in open_:
                    raise BpfreeError(f"{label}: a YAML alias refers to itself (a recursive structure)")
            if pending:
                stack.extend(pending)
                continue
        size[key] = 1 + sum(size[id(c)] for c in children)
        depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
        open_.discard(key)
        stack.pop()
        if size[key] > MAX_YAML_VALUES:
            raise BpfreeError(
                f"{label}: its YAML expands to more than {MAX_YAML_VALUES} values (aliases followed): "
                "an alias bomb? write the values out"
            )
        if depth[key] > MAX_YAML_DEPTH:
            raise BpfreeError(f"{label} nests lists or mappings too deeply (at most {MAX_YAML_DEPTH})")


def finite(value: Any) -> float | None:
    """``value`` as a finite float, or None: a number read back that a reader sums (text, a
    boolean, NaN or 1e400 in a hand-edited file count as unknown, never as a crash)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    return float(value) if math.isfinite(value) else None


def read_json(path: str | Path, what: str = "", limit: int = MAX_JSON_BYTES) -> Any:
    """JSON from a file, within ``limit`` bytes, as UTF-8; one BpfreeError line otherwise."""
    label = f"{what} {path}" if what else str(path)
    text = decode_utf8(read_limited(path, limit, label), label)
    try:
        return json.loads(text)
    except ValueError as err:
        raise BpfreeError(f"{label} is not valid JSON: {err}") from None
    except RecursionError:
        raise BpfreeError(f"{label} nests lists or objects too deeply") from None
