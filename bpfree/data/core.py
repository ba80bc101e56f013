"""Dataclasses shared by every dataset, and the split/normalise protocol of the paper."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from bpfree.core.errors import BpfreeError
from bpfree.core.registry import DATASETS


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
    """What a dataset's ``load(root, download)`` returns, before splitting and normalising.

    - ``train_x``, ``test_x``: pixels on [0, 1], float32 numpy arrays (N, C, H, W) with
      (C, H, W) = ``info.input_shape``; ``train_y``, ``test_y``: int labels 0 .. classes-1, (N,).
    - ``val_x``, ``val_y`` (optional): a fixed validation set, the same for every seed. When
      given, the source's ``val`` rule is not used and training uses all of ``train_x``; when
      left ``None``, the source's ``val`` (a :data:`ValRule`) cuts validation from the
      training rows.

    ``load_splits`` normalises with ``info.mean`` / ``info.std`` and moves the tensors to the
    device; the test set is always exactly ``test_x``."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    val_x: np.ndarray | None = None
    val_y: np.ndarray | None = None


@dataclass(frozen=True)
class FixedTail:
    """Validation is the last ``n`` training rows, the same for every seed (MNIST: its last
    10,000, as in the paper's code)."""

    n: int


#: How a source cuts validation from its training rows: a float is a seeded random fraction
#: (a new cut per seed), :class:`FixedTail` a fixed tail. A bare int still means a fixed tail
#: (kept for sources written before :class:`FixedTail`).
ValRule = float | FixedTail | int


class DatasetSource(Protocol):
    """What ``DATASETS.register(name)`` takes (an object, not a class): ``info``, a ``val``
    rule (may be ``None`` when ``load`` returns ``val_x``/``val_y``) and ``load``. A source
    that also has ``download(root)`` needs fetching first (``bpfree download``; the
    workflow runs its download job); one without is used offline as it is."""

    info: DatasetInfo
    val: ValRule | None

    def load(self, root: Path, download: bool = False) -> RawData: ...


def normalise(x: torch.Tensor, info: DatasetInfo) -> torch.Tensor:
    mean = torch.tensor(info.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(info.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def train_val_indices(n: int, val: ValRule, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) row indices of ``n`` training rows under the rule ``val``: a fixed
    tail (:class:`FixedTail`, or a bare int) or a seeded random fraction (a float)."""
    if isinstance(val, (int, FixedTail)) and not isinstance(val, bool):
        tail = val.n if isinstance(val, FixedTail) else val
        if not 0 < tail < n:
            raise BpfreeError(
                f"a fixed validation tail of {tail} samples needs more than {tail} training "
                f"samples; this copy has {n} (is it truncated?)"
            )
        idx = np.arange(n)
        return idx[: n - tail], idx[n - tail :]
    if not isinstance(val, float) or not 0 < val < 1:
        raise BpfreeError(f"validation rule {val!r}: valid are a fraction in (0, 1) or FixedTail(n)")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _check_raw(name: str, raw: RawData, info: DatasetInfo) -> None:
    parts = [("train", raw.train_x, raw.train_y), ("test", raw.test_x, raw.test_y)]
    if (raw.val_x is None) != (raw.val_y is None):
        raise BpfreeError(f"dataset {name!r}: RawData needs both val_x and val_y, or neither")
    if raw.val_x is not None:
        parts.append(("val", raw.val_x, raw.val_y))
    for part, x, y in parts:
        if tuple(np.shape(x)[1:]) != info.input_shape or len(x) != len(y):
            raise BpfreeError(
                f"dataset {name!r}: {part}_x has shape {tuple(np.shape(x))} for {len(y)} labels; "
                f"expected (N, {', '.join(map(str, info.input_shape))}) with N = the number of labels"
            )


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
    _check_raw(name, raw, source.info)

    def split(x: np.ndarray, y: np.ndarray) -> Split:
        xt = normalise(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), source.info)
        return Split(xt, torch.from_numpy(np.asarray(y, dtype=np.int64))).to(device)

    if raw.val_x is not None:
        train, val = split(raw.train_x, raw.train_y), split(raw.val_x, raw.val_y)
    else:
        rule = getattr(source, "val", None)
        if rule is None:
            raise BpfreeError(
                f"dataset {name!r} has no validation set: its source needs a `val` rule "
                "(a fraction, or FixedTail(n)) or its RawData needs val_x and val_y"
            )
        tr, va = train_val_indices(len(raw.train_y), rule, seed)
        train, val = split(raw.train_x[tr], raw.train_y[tr]), split(raw.train_x[va], raw.train_y[va])
    return DataSplits(info=source.info, train=train, val=val, test=split(raw.test_x, raw.test_y))
