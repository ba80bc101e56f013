"""The registered datasets. Each is an object with ``info``, ``val`` (the validation rule)
and ``load(root, download) -> RawData`` (:class:`bpfree.data.core.DatasetSource`). Nothing
here reaches the network unless ``download=True``; every file read from a data root is
checked against its recorded digest first (:mod:`bpfree.data.checksums`)."""

from __future__ import annotations

import importlib.util
import pickle
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from bpfree.core.errors import BpfreeError, DatasetMissing
from bpfree.core.registry import DATASETS
from bpfree.data.checksums import DatasetCorrupt, verify_files
from bpfree.data.content import collect_cifar, collect_files, install, pinned, wanted_files
from bpfree.data.core import DatasetInfo, FixedTail, RawData, ValRule


def _missing(name: str, root: Path) -> DatasetMissing:
    return DatasetMissing(f"dataset {name!r} is not under {root}; fetch it with: bpfree download {name} --root {root}")


def _sklearn_data(name: str) -> Path:
    """A data file shipped inside scikit-learn, found without importing it."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetMissing("dataset 'digits' needs scikit-learn installed (its data file ships inside it)")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name
    if not path.is_file():
        raise DatasetMissing(f"dataset 'digits': {path} is missing from the installed scikit-learn")
    return path


def digits_split() -> tuple[np.ndarray, np.ndarray]:
    """The fixed digits split's row indices (train, test), in scikit-learn's order."""
    text = resources.files("bpfree.data").joinpath("digits_split.csv").read_text(encoding="utf-8")
    lines = [line.split(",") for line in text.splitlines()[2:] if line]
    train = np.array([int(i) for kind, i in lines if kind == "train"], dtype=np.int64)
    test = np.array([int(i) for kind, i in lines if kind == "test"], dtype=np.int64)
    return train, test


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
        """The images as scikit-learn's ``load_digits`` reads them, from its file, without
        importing scikit-learn (about 1-2 s of every job), and split by the row indices its
        ``train_test_split`` gives (``digits_split.csv``, package data; a test checks them
        against the installed scikit-learn)."""
        rows = np.loadtxt(_sklearn_data("digits.csv.gz"), delimiter=",")
        x = (rows[:, :-1].reshape(-1, 8, 8) / 16.0).astype(np.float32)[:, None]
        y = rows[:, -1].astype(np.int64)
        train, test = digits_split()
        return RawData(x[train], y[train], x[test], y[test])


@dataclass(frozen=True)
class TorchvisionImages:
    """MNIST, Fashion-MNIST, CIFAR-10/100 in torchvision's on-disk layout. ``bpfree download``
    fetches them with torchvision, or imports a local copy (``--from PATH``); either way each
    file's content is checked against the digest pinned in :mod:`bpfree.data.content` and
    recorded (:mod:`bpfree.data.checksums`), and every load checks the files against that
    record before parsing them. MNIST's IDX files are parsed by torchvision; CIFAR's pickles by
    :func:`read_cifar`, which builds arrays and plain containers only."""

    info: DatasetInfo
    val: ValRule
    klass: str  # torchvision.datasets class name

    @property
    def _cifar(self) -> bool:
        return self.klass.startswith("CIFAR")

    @property
    def layout(self) -> str:
        """The folder under the root: torchvision's class name (MNIST-like) or CIFAR's base folder."""
        return {"CIFAR10": "cifar-10-batches-py", "CIFAR100": "cifar-100-python"}.get(self.klass, self.klass)

    def _class(self):
        import torchvision.datasets as tvd

        return getattr(tvd, self.klass)

    def files(self, train: bool | None = None) -> list[str]:
        """The files a load parses, relative to the root (``train``: only that part)."""
        rels = [w.rel for w in wanted_files(self.layout)]
        if train is None:
            return rels
        names = ("data_batch", "train") if train else ("test", "t10k")
        return [rel for rel in rels if Path(rel).name.startswith(names)]

    def known_digests(self) -> dict[str, tuple[str, str]]:
        """The pinned content digests of the files a load parses (bpfree.data.content)."""
        return pinned(self.layout)

    def load(self, root: Path, download: bool = False) -> RawData:
        if download and not all((root / f).is_file() for f in self.files()):
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
            raise BpfreeError(f"cannot read dataset {self.info.name!r} under {root}: {_first_line(err)}") from None
        return (x.astype(np.float32) / 255.0)[:, None], y.astype(np.int64)

    def import_from(self, root: Path, source: Path) -> None:
        """Import a local copy (``bpfree download NAME --root ROOT --from PATH``): every file
        checked against its pinned digest before anything is written into the root."""
        source = Path(source)
        if not source.exists():
            raise DatasetMissing(f"--from {source}: no such file or folder")
        if self._cifar:
            contents = collect_cifar(source, self.layout, self.info.name)
        else:
            contents = collect_files(source, wanted_files(self.layout), self.info.name)
        install(Path(root), contents, self.known_digests())

    def download(self, root: Path) -> None:
        """Record a copy already under the root (the files a load reads, or their archives:
        torchvision's or a distribution's recompressed ones), else fetch with torchvision; then
        check every file's content against its pinned digest and record it."""
        root = Path(root)
        refetch = (
            f"delete {root / self.layout} and run: bpfree download {self.info.name} --root {shlex.quote(str(root))}"
        )
        try:
            self.import_from(root, root)  # nothing to fetch when a checked copy is here
            return
        except DatasetMissing:
            pass
        except DatasetCorrupt as err:
            raise DatasetCorrupt(f"{err}; {refetch}") from None
        klass = self._class()
        for train in (True, False):
            try:
                klass(str(root), train=train, download=True)
            except (RuntimeError, OSError) as err:  # OSError: urllib's URLError, unreadable files
                raise BpfreeError(
                    f"could not download dataset {self.info.name!r} to {root}: {_one_line(err)}"
                ) from None
        try:
            self.import_from(root, root)
        except (DatasetMissing, DatasetCorrupt) as err:
            raise DatasetCorrupt(f"downloaded {self.info.name!r} fails its check: {err}; {refetch}") from None


def _one_line(err: BaseException) -> str:
    """The whole message of an error on one line (torchvision's download error puts its cause,
    urllib's, on the lines after a colon)."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return text or type(err).__name__


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
