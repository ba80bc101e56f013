"""A run's checkpoint read back by whoever only looks at it (``bpfree status``), with limits
and without torch: the plain fields of ``torch.save``'s zip (its ``data.pkl``), every tensor
left unbuilt. ``bpfree train`` restores checkpoints through torch (bpfree.engine.checkpoint);
this is for reading one while it runs, from any node.

Bounded: a zip whose central directory is larger than :data:`MAX_ZIP_DIRECTORY_BYTES` or
holds more than :data:`MAX_ZIP_ENTRIES` entries, or whose pickle is larger than
:data:`MAX_CHECKPOINT_PICKLE_BYTES`, is refused before it is read (a 1 MB zip holding a 1 GiB
pickle no longer takes gigabytes); what is unpickled is plain data only (no class the file
names is ever built). Typed: the fields a reader uses are checked, and a file that does not
hold them is one line saying what is wrong."""

from __future__ import annotations

import io
import math
import os
import pickle
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bpfree.core.errors import BpfreeError

MAX_CHECKPOINT_PICKLE_BYTES = 8 << 20  # a run of 80 epochs pickles to 15 KiB beside its tensors
MAX_ZIP_ENTRIES = 100_000  # torch.save writes one per tensor storage
MAX_ZIP_DIRECTORY_BYTES = 16 << 20
_EOCD, _EOCD64_LOCATOR, _EOCD64 = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"


@dataclass(frozen=True)
class CheckpointFields:
    """What a checkpoint says of its run, checked: the epochs in its history, the stage of
    the last one, the training time so far."""

    epochs: int
    stage: str | None
    train_time_s: float


class _Skeleton(pickle.Unpickler):
    """Unpickles a torch checkpoint's plain data without torch: every tensor (and anything
    but builtins) becomes None; nothing is constructed that the file names."""

    SAFE = {("collections", "OrderedDict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.SAFE:
            return super().find_class(module, name)
        return _nothing

    def persistent_load(self, pid: Any) -> None:
        return None


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def read_checkpoint_data(path: str | Path) -> dict[str, Any]:
    """The plain data of a run's checkpoint (``torch.save``'s zip: its ``data.pkl``), tensors
    as None, within the limits above; one BpfreeError line where it cannot be read."""
    path = Path(path)
    label = f"checkpoint {path}"
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise BpfreeError(f"{label} is not a regular file")
        with open(path, "rb") as fh:
            _check_directory(fh, info.st_size, label)
            with zipfile.ZipFile(fh) as archive:
                names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
                if not names:
                    raise BpfreeError(f"{label} is no torch checkpoint (no data.pkl in its zip)")
                member = archive.getinfo(names[0])
                if member.file_size > MAX_CHECKPOINT_PICKLE_BYTES:
                    raise BpfreeError(
                        f"{label}: its data.pkl is {member.file_size} bytes, more than the "
                        f"{MAX_CHECKPOINT_PICKLE_BYTES} a checkpoint's may have"
                    )
                with archive.open(member) as pickled:
                    raw = pickled.read(MAX_CHECKPOINT_PICKLE_BYTES + 1)
        if len(raw) > MAX_CHECKPOINT_PICKLE_BYTES:
            raise BpfreeError(f"{label}: its data.pkl is larger than the {MAX_CHECKPOINT_PICKLE_BYTES} bytes it may be")
        data = _Skeleton(io.BytesIO(raw)).load()
    except BpfreeError:
        raise
    except RecursionError:
        raise BpfreeError(f"{label} nests too deeply") from None
    except OSError as err:
        raise BpfreeError(f"cannot read {label}: {err.strerror or err}") from None
    except Exception as err:  # noqa: BLE001  (zipfile's and pickle's many ways to fail on a bad file)
        raise BpfreeError(f"{label} cannot be read ({type(err).__name__}: {_first_line(err)})") from None
    if not isinstance(data, dict):
        raise BpfreeError(f"{label} holds no checkpoint (not a mapping)")
    return data


def read_checkpoint_fields(path: str | Path) -> CheckpointFields:
    """The checkpoint's epochs, stage and training time, each checked (a history that is no
    list of rows, a time that is no finite number of seconds: one line)."""
    data = read_checkpoint_data(path)
    history = data.get("history")
    if history is None:
        history = []
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        raise BpfreeError(f"checkpoint {path}: its history is no list of epochs")
    stage = history[-1].get("stage") if history else None
    if stage is not None and not isinstance(stage, str):
        raise BpfreeError(f"checkpoint {path}: the stage of its last epoch is {stage!r}, not a name")
    seconds = data.get("train_time_s")
    if seconds is None:
        seconds = 0.0
    if not _number(seconds) or not math.isfinite(seconds) or seconds < 0:
        raise BpfreeError(f"checkpoint {path}: train_time_s is {seconds!r}, not a number of seconds")
    return CheckpointFields(len(history), stage, float(seconds))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _first_line(err: BaseException) -> str:
    return ((str(err).splitlines() or [""])[0])[:160]


def _check_directory(fh, size: int, label: str) -> None:
    """Refuse a zip whose central directory (its list of entries, which ``zipfile`` reads
    whole) is too large, from its end-of-directory record (zip64's where it has one)."""
    tail_size = min(size, 22 + 65535)
    fh.seek(size - tail_size)
    tail = fh.read(tail_size)
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) - at < 22:
        raise BpfreeError(f"{label} is no torch checkpoint (not a zip file)")
    entries, directory = struct.unpack("<HI", tail[at + 10 : at + 16])
    if (entries == 0xFFFF or directory == 0xFFFFFFFF) and at >= 20 and tail[at - 20 : at - 16] == _EOCD64_LOCATOR:
        (offset,) = struct.unpack("<Q", tail[at - 12 : at - 4])
        if offset + 56 <= size:
            fh.seek(offset)
            record = fh.read(56)
            if record[:4] == _EOCD64:
                entries, directory = struct.unpack("<QQ", record[32:48])
    if entries > MAX_ZIP_ENTRIES or directory > MAX_ZIP_DIRECTORY_BYTES:
        raise BpfreeError(
            f"{label}: its zip lists {entries} entries in {directory} bytes, more than a checkpoint's "
            f"(at most {MAX_ZIP_ENTRIES} in {MAX_ZIP_DIRECTORY_BYTES})"
        )
    fh.seek(0)
