"""What the files of each torchvision dataset must contain, pinned here, and the import of a
local copy into a data root (``bpfree download NAME --root ROOT --from PATH``).

A digest here is of a file's *content*, whatever archive it travelled in: the SHA-256 of
each decompressed IDX file (MNIST, Fashion-MNIST), and torchvision's MD5 of each CIFAR batch
(CIFAR's batches are stored as they are in its archive). A copy of MNIST recompressed by a
distribution (Debian's ``dataset-fashion-mnist`` is) has other ``.gz`` digests than the
original archives but the same content, and is accepted; a copy with one byte changed is not.

Importing reads every file the dataset needs from ``PATH`` (a folder of the files, gzipped or
not, flat or in torchvision's layout, or for CIFAR its ``.tar.gz`` or extracted batches),
checks each against its pinned digest in memory, and only when all match writes them into
the data root (each file atomically) and records their digests; a copy that does not match
is refused in one line naming the file and what was expected, and the root is left as it was.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bpfree.core.errors import BpfreeError, DatasetMissing
from bpfree.core.io import write_bytes_atomic
from bpfree.data.checksums import DatasetCorrupt, file_digest, record

# SHA-256 of the decompressed IDX files. MNIST: the values published with the files' mirrors
# (two independent public lists agree); Fashion-MNIST: the same, and checked here against
# Debian's dataset-fashion-mnist, whose archives are recompressed but whose content is the
# original's.
IDX_SHA256: dict[str, dict[str, str]] = {
    "MNIST": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "FashionMNIST": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}

# torchvision's MD5s of CIFAR's python batches (torchvision.datasets.CIFAR10/100), pinned
# here so that a check does not depend on the installed torchvision.
CIFAR_MD5: dict[str, dict[str, str]] = {
    "cifar-10-batches-py": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
    },
    "cifar-100-python": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    },
}
CIFAR_ARCHIVES = {"cifar-10-batches-py": "cifar-10-python.tar.gz", "cifar-100-python": "cifar-100-python.tar.gz"}

# no file of these datasets is larger: a bigger (decompressed) file is refused unread
MAX_FILE_BYTES = 256 << 20
_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class Wanted:
    """One file a load reads: where it goes under the root, and its pinned content digest."""

    rel: str  # relative to the data root, e.g. FashionMNIST/raw/train-images-idx3-ubyte
    algorithm: str
    digest: str

    @property
    def name(self) -> str:
        return Path(self.rel).name


def wanted_files(layout: str) -> list[Wanted]:
    """The files of a dataset laid out as torchvision does: ``layout`` is the class name for
    MNIST-like datasets (``MNIST``, ``FashionMNIST``) or CIFAR's base folder."""
    if layout in IDX_SHA256:
        return [Wanted(f"{layout}/raw/{name}", "sha256", sha) for name, sha in IDX_SHA256[layout].items()]
    if layout in CIFAR_MD5:
        return [Wanted(f"{layout}/{name}", "md5", md5) for name, md5 in CIFAR_MD5[layout].items()]
    raise KeyError(f"no pinned content for {layout!r}")


def pinned(layout: str) -> dict[str, tuple[str, str]]:
    """``{relative path: (algorithm, digest)}`` of a layout's files, as a load checks them."""
    return {w.rel: (w.algorithm, w.digest) for w in wanted_files(layout)}


def digest_of(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data).hexdigest()


def read_content(path: Path) -> bytes:
    """A file's bytes, decompressed if it is gzipped (by its magic, not its name), at most
    :data:`MAX_FILE_BYTES`."""
    try:
        with open(path, "rb") as fh:
            gzipped = fh.read(2) == _GZIP_MAGIC
        opener = gzip.open if gzipped else open
        with opener(path, "rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise BpfreeError(f"cannot read {path}: {getattr(err, 'strerror', None) or err}") from None
    if len(data) > MAX_FILE_BYTES:
        raise DatasetCorrupt(f"{path} holds more than {MAX_FILE_BYTES >> 20} MiB: not a file of this dataset")
    return data


def _candidates(source: Path, wanted: Wanted) -> list[Path]:
    """Where a copy of ``wanted`` may lie under ``source``: flat, in ``raw/``, or in the
    root's own layout; plain or gzipped."""
    folders = [source, source / "raw", source / Path(wanted.rel).parent]
    names = [wanted.name, wanted.name + ".gz"]
    seen: list[Path] = []
    for folder in folders:
        for name in names:
            path = folder / name
            if path.is_file() and path not in seen:
                seen.append(path)
    return seen


def collect_files(source: Path, files: list[Wanted], dataset: str) -> dict[str, bytes]:
    """Each wanted file's checked content, from the files under ``source`` (a folder): for
    each, the first copy found whose content matches; one that exists but differs is refused."""
    if not source.is_dir():
        raise BpfreeError(f"--from {source}: not a folder (give the folder that holds {dataset}'s files)")
    out: dict[str, bytes] = {}
    for wanted in files:
        copies = _candidates(source, wanted)
        if not copies:
            raise DatasetMissing(
                f"--from {source}: no {wanted.name} (nor {wanted.name}.gz) in it, in raw/ or in "
                f"{Path(wanted.rel).parent}/; it must hold {', '.join(w.name for w in files)}"
            )
        out[wanted.rel] = _first_matching(copies, wanted, dataset)
    return out


def _first_matching(copies: list[Path], wanted: Wanted, dataset: str) -> bytes:
    found = ""
    for path in copies:
        data = read_content(path)
        got = digest_of(data, wanted.algorithm)
        if got == wanted.digest:
            return data
        found = found or f"{path}: its content's {wanted.algorithm} is {got}"
    raise DatasetCorrupt(
        f"{found}, expected {wanted.digest} ({dataset}'s original {wanted.name}): not imported, nothing written"
    )


def collect_cifar(source: Path, base: str, dataset: str) -> dict[str, bytes]:
    """CIFAR's batches from its ``.tar.gz`` (``source`` itself, or inside the folder
    ``source``) or from its extracted batches (flat, or in the base folder). A tar's members
    are read in memory, never extracted: no name in it can point outside."""
    files = wanted_files(base)
    archive = source if source.is_file() else source / CIFAR_ARCHIVES[base]
    if archive.is_file():
        return _from_tar(archive, files, dataset)
    return collect_files(source, files, dataset)


def _from_tar(archive: Path, files: list[Wanted], dataset: str) -> dict[str, bytes]:
    by_name = {w.name: w for w in files}
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                wanted = by_name.get(Path(member.name).name)
                if wanted is None or not member.isfile() or wanted.rel in out:
                    continue
                if member.size > MAX_FILE_BYTES:
                    raise DatasetCorrupt(f"{archive}: {member.name} is larger than any file of {dataset}")
                fh = tar.extractfile(member)
                data = fh.read() if fh is not None else b""
                got = digest_of(data, wanted.algorithm)
                if got != wanted.digest:
                    raise DatasetCorrupt(
                        f"{archive}: {member.name}'s {wanted.algorithm} is {got}, expected {wanted.digest} "
                        f"({dataset}'s original {wanted.name}): not imported, nothing written"
                    )
                out[wanted.rel] = data
    except (OSError, EOFError, tarfile.TarError) as err:
        raise BpfreeError(f"cannot read {archive} as a tar archive: {err}") from None
    missing = [w.name for w in files if w.rel not in out]
    if missing:
        raise DatasetMissing(f"{archive} lacks {', '.join(missing)}: not {dataset}'s archive")
    return out


def install(root: Path, contents: Mapping[str, bytes], digests: Mapping[str, tuple[str, str]]) -> None:
    """Write checked contents into the root (each file atomically, a file already equal to its
    content left alone) and record their digests; the record is written last, so an
    interrupted import leaves nothing that a load would accept unchecked."""
    if root.exists() and not root.is_dir():
        raise BpfreeError(f"--root {root} is a file, not a folder")
    for rel, data in contents.items():
        path = root / rel
        algorithm, digest = digests[rel]
        if path.is_file() and _file_matches(path, algorithm, digest):
            continue
        if path.is_symlink() or path.is_dir():
            raise BpfreeError(f"cannot write {path}: a {'link' if path.is_symlink() else 'folder'} is in the way")
        write_bytes_atomic(path, data)
    record(root, {rel: digests[rel] for rel in contents})


def _file_matches(path: Path, algorithm: str, digest: str) -> bool:
    try:
        return file_digest(path, algorithm) == digest
    except OSError:
        return False
