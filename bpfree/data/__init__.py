"""Datasets held on the device as normalised tensors, with the paper's splits.

``load_splits(name, root=..., seed=..., device=...)`` returns a :class:`DataSplits`;
:class:`Batches` cuts an epoch into seeded minibatches on the device, augmenting CIFAR there.
"""

from bpfree.data import sources as _sources  # noqa: F401  (registers the datasets)
from bpfree.data.batches import Batches, augment_crop_flip
from bpfree.data.core import DatasetInfo, DataSplits, Split, load_splits, normalise

__all__ = [
    "Batches",
    "DataSplits",
    "DatasetInfo",
    "Split",
    "augment_crop_flip",
    "load_splits",
    "normalise",
]
