"""Dataclasses shared by every dataset, and the split/normalise protocol of the paper."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bpfree.errors import BpfreeError
from bpfree.registry import DATASETS


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (channels, height, width)
    mean: tuple[float, ...]  # per channel, on the [0, 1] pixel scale
    std: tuple[float, ...]
    augment: bool = False  # random crop (reflect pad 4) + horizontal flip, CIFAR only

    @property
    def input_features(self) -> int:
        c, h, w = self.input_shape
        return c * h * w


@dataclass
class Split:
    """One split, normalised, as tensors on one device: x is (N, C, H, W) float32, y is (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass
class DataSplits:
    info: DatasetInfo
    train: Split
    val: Split
    test: Split


@dataclass
class RawData:
    """What a source returns: pixels on [0, 1] as float32 (N, C, H, W) numpy arrays, int labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def normalise(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    mean = torch.tensor(info.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def train_val_indices(n: int, val: int | float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Validation indices: a fixed tail (``val`` an int, MNIST's last 10k) or a seeded random
    fraction (``val`` a float, every other dataset)."""
    if isinstance(val, int):
        if not 0 < val < n:
            raise BpfreeError(
                f"a fixed validation tail of {val} samples needs more than {val} training "
                f"samples; this copy has {n} (is it truncated?)"
            )
        idx = np.arange(n)
        return idx[: n - val], idx[n - val :]
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def load_splits(
    name: str,
    *,
    root: str | Path = "data",
    seed: int = 0,
    device: torch.device | str = "cpu",
    download: bool = False,
) -> DataSplits:
    source = DATASETS.get(name)
    raw = source.load(Path(root), download=download)
    tr, va = train_val_indices(len(raw.train_y), source.val, seed)

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        xt = normalise(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), source.info)
        return Split(xt, torch.from_numpy(np.asarray(y, dtype=np.int64))).to(device)

    return DataSplits(
        info=source.info,
        train=split(raw.train_x[tr], raw.train_y[tr]),
        val=split(raw.train_x[va], raw.train_y[va]),
        test=split(raw.test_x, raw.test_y),
    )
