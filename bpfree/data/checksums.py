"""Dataset files are checked against a recorded digest before they are parsed or unpickled.

The record is ``ROOT/.bpfree/checksums.json`` under a data root::

    {"version": 1, "files": {"cifar-10-batches-py/data_batch_1": {"md5": "c99c..."}, ...}}

``bpfree download`` writes it: torchvision's own MD5s for CIFAR's files (torchvision checked
the files against them), and for MNIST / Fashion-MNIST the SHA-256 of each extracted file,
taken from the archive whose MD5 torchvision knows. Anyone can record their own files with
:func:`record_files` (the tests do, for their small fakes; a plugin dataset may too).

A digest that matched is remembered in ``ROOT/.bpfree/verified.json`` by the file's size,
mtime and ctime, so that later loads do not hash again; a data root that cannot be written
only loses that cache. A file whose digest differs, or that has none recorded, is refused
with one line naming it and the command that fetches it again.

What this guards against: a truncated, corrupt or swapped file. Whoever can write a data
root can also rewrite its record, so the data root must be writable only by people you trust
(docs/data.md, "What bpfree trusts"); CIFAR's pickles are read with an unpickler that builds
arrays and plain containers only, so even such a file runs no code.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from collections.abc import Iterable, Mapping
from pathlib import Path

from bpfree.core.errors import BpfreeError, DatasetMissing
from bpfree.core.io import read_json, write_json_atomic

RECORD = Path(".bpfree") / "checksums.json"
CACHE = Path(".bpfree") / "verified.json"
ALGORITHMS = ("sha256", "md5")
_CHUNK = 1 << 20


class DatasetCorrupt(BpfreeError):
    """A dataset file does not match its recorded digest (or has none recorded)."""


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> dict:
    """A JSON object from ``path``, or {} if it is missing or not a JSON object (json only:
    nothing in it is executed)."""
    try:
        obj = read_json(path, "checksum record")  # bounded: size, UTF-8, nesting
    except BpfreeError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _rel(root: Path, path: Path) -> str:
    return Path(os.path.relpath(path, root)).as_posix()


def recorded(root: str | Path) -> dict[str, tuple[str, str]]:
    """``{relative path: (algorithm, hex digest)}`` from the root's record; malformed entries
    are left out (such a file then has no recorded digest and is refused)."""
    files = _read_json(Path(root) / RECORD).get("files")
    out: dict[str, tuple[str, str]] = {}
    if isinstance(files, dict):
        for rel, entry in files.items():
            if isinstance(entry, dict):
                for algorithm in ALGORITHMS:
                    if isinstance(entry.get(algorithm), str):
                        out[rel] = (algorithm, entry[algorithm].lower())
                        break
    return out


def record(root: str | Path, digests: Mapping[str, tuple[str, str]]) -> None:
    """Add or replace entries ``{relative path: (algorithm, hex digest)}`` in the root's
    record (written atomically)."""
    root = Path(root)
    for rel, (algorithm, _) in digests.items():
        if algorithm not in ALGORITHMS:
            raise ValueError(f"{rel}: unknown digest algorithm {algorithm!r}")
    files = {rel: {algorithm: digest} for rel, (algorithm, digest) in recorded(root).items()}
    files.update({rel: {algorithm: digest.lower()} for rel, (algorithm, digest) in digests.items()})
    write_json_atomic(root / RECORD, {"version": 1, "files": dict(sorted(files.items()))})


def record_files(root: str | Path, paths: Iterable[str | Path], algorithm: str = "sha256") -> None:
    """Hash the files (absolute, or relative to ``root``) as they are now and record them."""
    root = Path(root)
    record(root, {_rel(root, root / p): (algorithm, file_digest(root / p, algorithm)) for p in paths})


def _stamp(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def verify_files(
    root: str | Path,
    paths: Iterable[str | Path],
    *,
    dataset: str,
    known: Mapping[str, tuple[str, str]] | None = None,
    refetch: str | None = None,
) -> None:
    """Check each file (absolute, or relative to ``root``) against its digest: the root's
    record first, then ``known`` (digests the code carries, e.g. torchvision's MD5s). A
    missing file raises :class:`DatasetMissing`; a file that differs or has no digest raises
    :class:`DatasetCorrupt`, one line naming it and ``refetch`` (default: ``bpfree download``)."""
    root = Path(root)
    refetch = refetch or f"bpfree download {dataset} --root {shlex.quote(str(root))}"
    paths = [root / p for p in paths]
    for path in paths:
        if not path.is_file():
            raise DatasetMissing(f"dataset {dataset!r} is not complete: {path} is missing; fetch it with: {refetch}")
    expected = {**(known or {}), **recorded(root)}
    cache_path = root / CACHE
    cache = _read_json(cache_path)
    changed = False
    try:
        for path in paths:
            rel = _rel(root, path)
            if rel not in expected:
                raise DatasetCorrupt(
                    f"dataset file {path} has no recorded checksum (in {root / RECORD}); "
                    f"record a checked copy with: {refetch}"
                )
            algorithm, digest = expected[rel]
            stamp = {**_stamp(path), algorithm: digest}
            if cache.get(rel) == stamp:
                continue
            if file_digest(path, algorithm) != digest:
                cache.pop(rel, None)
                changed = True
                raise DatasetCorrupt(
                    f"dataset file {path} fails its {algorithm} check (altered, truncated or replaced); "
                    f"fetch it again with: {refetch}"
                )
            cache[rel] = stamp
            changed = True
    finally:
        if changed:
            try:
                write_json_atomic(cache_path, cache)
            except OSError:
                pass  # a read-only data root: verified again next time
