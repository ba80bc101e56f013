"""Tier 1: datasets held on the device as normalised tensors, with the paper's splits.
Imports core.

``load_splits(name, root=..., seed=..., device=...)`` returns a :class:`DataSplits`;
:class:`Batches` cuts an epoch into seeded minibatches on the device, augmenting CIFAR there.
A dataset (built-in or a plugin's) is a :class:`DatasetSource` registered with
``DATASETS.register(name)``; its ``load`` returns a :class:`RawData`; files it reads from a
data root are checked with :func:`verify_files` (docs/data.md).
"""

from bpfree.data import mnist5k as _mnist5k  # noqa: F401  (registers mnist-5k)
from bpfree.data import sources as _sources  # noqa: F401  (registers the datasets)
from bpfree.data.batches import Batches, augment_crop_flip
from bpfree.data.checksums import DatasetCorrupt, record_files, verify_files
from bpfree.data.core import (
    DatasetInfo,
    DatasetSource,
    DataSplits,
    FixedTail,
    RawData,
    Split,
    ValRule,
    load_splits,
    normalise,
)

__all__ = [
    "Batches",
    "DataSplits",
    "DatasetCorrupt",
    "DatasetInfo",
    "DatasetSource",
    "FixedTail",
    "RawData",
    "Split",
    "ValRule",
    "augment_crop_flip",
    "load_splits",
    "normalise",
    "record_files",
    "verify_files",
]
