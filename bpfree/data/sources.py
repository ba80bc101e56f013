"""The registered datasets. Each is an object with ``info``, ``val`` (the validation rule)
and ``load(root, download) -> RawData`` (:class:`bpfree.data.core.DatasetSource`). Nothing
here reaches the network unless ``download=True``; every file read from a data root is
checked against its recorded digest first (:mod:`bpfree.data.checksums`)."""

from __future__ import annotations

import hashlib
import pickle
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpfree.data.checksums import DatasetCorrupt, file_digest, record, verify_files
from bpfree.data.core import DatasetInfo, FixedTail, RawData, ValRule
from bpfree.errors import BpfreeError, DatasetMissing
from bpfree.io import write_bytes_atomic
from bpfree.registry import DATASETS


def _missing(name: str, root: Path) -> DatasetMissing:
    return DatasetMissing(f"dataset {name!r} is not under {root}; fetch it with: bpfree download {name} --root {root}")


@dataclass(frozen=True)
class Digits:
    """scikit-learn's 1,797 real 8x8 handwritten digits, shipped with the package (offline).

    It has no official test split: a fixed, stratified 25% (seed 0, the same for every run)
    is the test set, and a seeded 15% of the rest validates (digits is small; 10% would
    leave early stopping ~130 samples to judge by)."""

    info: DatasetInfo = DatasetInfo("digits", 10, (1, 8, 8), (0.3053,), (0.3760,))
    val: float = 0.15
    test_fraction: float = 0.25

    def load(self, root: Path, download: bool = False) -> RawData:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        x = (digits.images / 16.0).astype(np.float32)[:, None]
        y = digits.target.astype(np.int64)
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=self.test_fraction, stratify=y, random_state=0)
        return RawData(x_tr, y_tr, x_te, y_te)


@dataclass(frozen=True)
class TorchvisionImages:
    """MNIST, Fashion-MNIST, CIFAR-10/100 in torchvision's on-disk layout. ``bpfree download``
    fetches them with torchvision (which checks its MD5s) and records each file's digest
    (:mod:`bpfree.data.checksums`); every load checks the files against that record before
    parsing them. MNIST's IDX files are parsed by torchvision; CIFAR's pickles by
    :func:`read_cifar`, which builds arrays and plain containers only."""

    info: DatasetInfo
    val: ValRule
    klass: str  # torchvision.datasets class name

    @property
    def _cifar(self) -> bool:
        return self.klass.startswith("CIFAR")

    def _class(self):
        import torchvision.datasets as tvd

        return getattr(tvd, self.klass)

    def files(self, train: bool | None = None) -> list[str]:
        """The files a load parses, relative to the root (``train``: only that part)."""
        klass = self._class()
        if self._cifar:
            lists = {True: klass.train_list, False: klass.test_list}
            parts = [train] if train is not None else [True, False]
            return [f"{klass.base_folder}/{name}" for part in parts for name, _ in lists[part]]
        names = [name.removesuffix(".gz") for name, _ in klass.resources]
        if train is not None:
            names = [n for n in names if n.startswith("train" if train else "t10k")]
        return [f"{self.klass}/raw/{name}" for name in names]

    def known_digests(self) -> dict[str, tuple[str, str]]:
        """torchvision's MD5s of the files a load parses, where it has them (CIFAR; MNIST's
        are of the .gz archives, checked at download)."""
        if not self._cifar:
            return {}
        klass = self._class()
        return {f"{klass.base_folder}/{name}": ("md5", md5) for name, md5 in klass.train_list + klass.test_list}

    def load(self, root: Path, download: bool = False) -> RawData:
        if download:
            self.download(root)
        files = self.files()
        if not all((root / f).is_file() for f in files):
            raise _missing(self.info.name, root)
        verify_files(root, files, dataset=self.info.name, known=self.known_digests())
        if self._cifar:
            train = read_cifar([root / f for f in self.files(True)])
            test = read_cifar([root / f for f in self.files(False)])
            return RawData(*train, *test)
        return RawData(*self._read_idx(root, True), *self._read_idx(root, False))

    def _read_idx(self, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
        from torchvision.datasets.mnist import read_image_file, read_label_file

        images, labels = self.files(train)  # torchvision's order: images, then labels
        try:
            x = read_image_file(str(root / images)).numpy()
            y = read_label_file(str(root / labels)).numpy()
        except (RuntimeError, ValueError, OSError) as err:
            raise BpfreeError(f"cannot read dataset {self.info.name!r} under {root}: {_first_line(err)}") from err
        return (x.astype(np.float32) / 255.0)[:, None], y.astype(np.int64)

    def download(self, root: Path) -> None:
        """Fetch with torchvision (it checks its MD5s), then record the digests a load checks."""
        klass = self._class()
        for train in (True, False):
            try:
                klass(str(root), train=train, download=True)
            except (RuntimeError, OSError) as err:  # OSError: urllib's URLError, unreadable files
                raise BpfreeError(
                    f"could not download dataset {self.info.name!r} to {root}: {_first_line(err)}"
                ) from err
        if self._cifar:
            record(root, self.known_digests())  # torchvision found the files matching these
        else:
            record(root, self._idx_digests(root))

    def _idx_digests(self, root: Path) -> dict[str, tuple[str, str]]:
        """SHA-256 of each extracted IDX file, taken from its .gz archive after checking the
        archive against torchvision's MD5; an extracted file that differs from its archive is
        written again from it. (torchvision skips the download when the extracted files exist,
        so their own presence proves nothing.)"""
        import gzip

        raw = root / self.klass / "raw"
        refetch = f"delete {raw} and run: bpfree download {self.info.name} --root {shlex.quote(str(root))}"
        digests: dict[str, tuple[str, str]] = {}
        for archive_name, md5 in self._class().resources:
            archive, extracted = raw / archive_name, raw / archive_name.removesuffix(".gz")
            if not archive.is_file() or file_digest(archive, "md5") != md5:
                raise DatasetCorrupt(
                    f"cannot check {extracted}: its archive {archive} is missing or altered; {refetch}"
                )
            content = gzip.decompress(archive.read_bytes())
            sha = hashlib.sha256(content).hexdigest()
            if file_digest(extracted, "sha256") != sha:
                write_bytes_atomic(extracted, content)
            digests[f"{self.klass}/raw/{extracted.name}"] = ("sha256", sha)
        return digests


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


class _ArraysOnly(pickle.Unpickler):
    """An unpickler for CIFAR's batches: numpy arrays, dtypes and scalars, and Python's plain
    containers; any other global (the way a pickle runs code) is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): "reconstruct",
        ("numpy._core.multiarray", "_reconstruct"): "reconstruct",
        ("numpy.core.multiarray", "scalar"): "scalar",
        ("numpy._core.multiarray", "scalar"): "scalar",
        ("numpy", "ndarray"): "ndarray",
        ("numpy", "dtype"): "dtype",
        ("_codecs", "encode"): "encode",
    }

    def find_class(self, module: str, name: str):
        from numpy._core import multiarray

        kind = self._ALLOWED.get((module, name))
        if kind is None:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which bpfree does not load")
        return {
            "reconstruct": multiarray._reconstruct,
            "scalar": multiarray.scalar,
            "ndarray": np.ndarray,
            "dtype": np.dtype,
            "encode": _latin1_encode,
        }[kind]


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding != "latin1":  # how Python 3 pickles bytes at protocol 2; nothing else
        raise pickle.UnpicklingError(f"it asks for _codecs.encode with {encoding!r}")
    return text.encode("latin1")


def read_cifar(paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR's python batches: pixels (N, 3, 32, 32) on [0, 1] and labels (CIFAR-100: the fine
    ones), read with :class:`_ArraysOnly` (no code in a pickle can run)."""
    data, labels = [], []
    for path in paths:
        try:
            with open(path, "rb") as fh:
                entry = _ArraysOnly(fh, encoding="latin1").load()
        except Exception as err:  # noqa: BLE001  (a malformed pickle can raise nearly anything)
            raise BpfreeError(f"cannot read CIFAR file {path}: {type(err).__name__}: {_first_line(err)}") from None
        y = entry.get("labels", entry.get("fine_labels")) if isinstance(entry, dict) else None
        x = entry.get("data") if isinstance(entry, dict) else None
        if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != 3072 or y is None or len(y) != len(x):
            raise BpfreeError(f"cannot read CIFAR file {path}: not a CIFAR batch (data (N, 3072) and N labels)")
        data.append(x)
        labels.append(np.asarray(y, dtype=np.int64))
    x = np.concatenate(data).reshape(-1, 3, 32, 32).astype(np.float32) / 255.0
    return x, np.concatenate(labels)


DATASETS.register("digits")(Digits())
DATASETS.register("mnist")(
    TorchvisionImages(DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,)), FixedTail(10_000), "MNIST")
)
DATASETS.register("fashion-mnist")(
    TorchvisionImages(DatasetInfo("fashion-mnist", 10, (1, 28, 28), (0.2860,), (0.3530,)), 0.1, "FashionMNIST")
)
DATASETS.register("cifar10")(
    TorchvisionImages(
        DatasetInfo("cifar10", 10, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), True),
        0.1,
        "CIFAR10",
    )
)
DATASETS.register("cifar100")(
    TorchvisionImages(
        DatasetInfo("cifar100", 100, (3, 32, 32), (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), True),
        0.1,
        "CIFAR100",
    )
)
