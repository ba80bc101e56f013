"""The study's tables as one set: written by ``bpfree aggregate`` and read back by ``bpfree
figures``, with limits.

:func:`write_table_set` removes the set's record (``tables.set.json``) first, writes every table
(each file atomically), then writes the record last: each file's name and SHA-256. A kill in
between leaves no record, so a mix of new and old tables (a summary of two runs beside methods
of four) is never taken for a set. :func:`check_table_set` refuses, in one line, a folder
without the record or with a table that is not the one recorded; :func:`read_table` reads a
CSV within :data:`bpfree.core.io.MAX_TABLE_BYTES` and says in one line where polars cannot."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from bpfree import __version__
from bpfree.core.errors import BpfreeError
from bpfree.core.io import MAX_TABLE_BYTES, read_json, read_limited, remove_stale_temporaries, write_json_atomic
from bpfree.core.outputs import TABLE_SET
from bpfree.report.tables import Tables, write_tables


def write_table_set(tables: Tables, out_dir: str | Path) -> list[Path]:
    """Every table (bpfree.report.tables.write_tables), then the set's record; the paths."""
    out_dir = Path(out_dir)
    record = out_dir / TABLE_SET
    # temporaries of an earlier write that a kill interrupted (aggregate is the folder's only writer)
    remove_stale_temporaries(out_dir, of=lambda name: name.rsplit(".", 1)[-1] in ("csv", "md", "tex", "json"))
    record.unlink(missing_ok=True)  # from here until the record is written again, no set
    written = write_tables(tables, out_dir)
    files = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in written}
    write_json_atomic(
        record,
        {
            "written_by": "bpfree aggregate",
            "bpfree_version": __version__,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "runs": tables.summary.height,
            "files": files,
        },
    )
    return [*written, record]


def check_table_set(directory: str | Path, names: list[str] | None = None) -> dict[str, str]:
    """The set's record ({file name: SHA-256}) once every table in it (or those of ``names``)
    is the one recorded; one BpfreeError line otherwise, saying to run bpfree aggregate again."""
    directory = Path(directory)
    record = directory / TABLE_SET
    again = f"run bpfree aggregate --out-dir {directory} again"
    if not record.exists():
        raise BpfreeError(
            f"{directory} holds no complete set of tables (no {TABLE_SET}: bpfree aggregate was interrupted, "
            f"or they were written by an earlier bpfree); {again}"
        )
    doc = read_json(record, "table set record")
    files = doc.get("files") if isinstance(doc, dict) else None
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise BpfreeError(f"{record} is not a table set record (no 'files' of names and digests); {again}")
    for name, digest in files.items():
        if names is not None and name not in names:
            continue
        if Path(name).name != name:
            raise BpfreeError(f"{record} names {name!r}, not a file of {directory}; {again}")
        path = directory / name
        if not path.exists():
            raise BpfreeError(f"{path} is missing from the set of tables bpfree aggregate wrote; {again}")
        if hashlib.sha256(read_limited(path, MAX_TABLE_BYTES, f"table {path}")).hexdigest() != digest:
            raise BpfreeError(
                f"{path} is not the table bpfree aggregate wrote with the others (it changed, or the set was "
                f"half rewritten); {again}"
            )
    return files
