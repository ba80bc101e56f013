"""The registered datasets. Each is an object with ``info``, ``val`` (the validation rule)
and ``load(root, download) -> RawData``. torchvision reads the real files; nothing here
reaches the network unless ``download=True``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpfree.data.core import DatasetInfo, RawData
from bpfree.errors import BpfreeError, DatasetMissing
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
    """MNIST, Fashion-MNIST, CIFAR-10/100 through torchvision's own dataset classes."""

    info: DatasetInfo
    val: int | float
    klass: str  # torchvision.datasets class name

    def _dataset(self, root: Path, train: bool, download: bool):
        import torchvision.datasets as tvd

        klass = getattr(tvd, self.klass)
        if self.klass.startswith("CIFAR") and not download:
            klass = _present_cifar(klass)
        try:
            return klass(str(root), train=train, download=download)
        except (RuntimeError, OSError) as err:  # OSError: urllib's URLError, unreadable files
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            if download:
                raise BpfreeError(f"could not download dataset {self.info.name!r} to {root}: {reason}") from err
            if isinstance(err, OSError):
                raise BpfreeError(f"cannot read dataset {self.info.name!r} under {root}: {reason}") from err
            raise _missing(self.info.name, root) from err

    def load(self, root: Path, download: bool = False) -> RawData:
        train = self._dataset(root, True, download)
        test = self._dataset(root, False, download)
        return RawData(*_pixels(train), *_pixels(test))

    def download(self, root: Path) -> None:
        self._dataset(root, True, True)
        self._dataset(root, False, True)


def _present_cifar(klass):
    """torchvision checks CIFAR's files by MD5 on every load; once downloaded (MD5-checked
    then) we only require that the files are there, so that a copy can be read quickly and
    the tests can read small files written in the real pickle format."""

    class Present(klass):
        meta = {**klass.meta, "md5": None}  # _load_meta MD5-checks the label names file too

        def _check_integrity(self) -> bool:
            base = Path(self.root) / self.base_folder
            return all((base / name).is_file() for name, _ in self.train_list + self.test_list)

    Present.__name__ = klass.__name__
    return Present


def _pixels(ds) -> tuple[np.ndarray, np.ndarray]:
    data = ds.data
    data = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
    x = data.astype(np.float32) / 255.0
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)  # MNIST (N,H,W); CIFAR (N,H,W,C)
    return x, np.asarray(ds.targets, dtype=np.int64)


DATASETS.register("digits")(Digits())
DATASETS.register("mnist")(
    TorchvisionImages(DatasetInfo("mnist", 10, (1, 28, 28), (0.1307,), (0.3081,)), 10_000, "MNIST")
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
