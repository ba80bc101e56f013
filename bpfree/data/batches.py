"""Seeded minibatches cut from device-resident tensors; CIFAR augmentation as batched ops."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from bpfree.data.core import Split


def augment_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop of the original size from a reflect-padded image, then a random horizontal
    flip, each drawn per sample, for the whole batch at once (no per-sample Python)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (n, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


class Batches:
    """The training split of one run, cut into shuffled minibatches with a seeded generator.

    The generator lives on the CPU (index permutations are tiny) so that a run's batches are
    the same on any device; its state is part of a checkpoint."""

    def __init__(self, split: Split, *, seed: int, augment: bool = False) -> None:
        self.split = split
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.split)

    def epoch(self, batch_size: int, *, shuffle: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        if shuffle:
            order = torch.randperm(n, generator=self.generator).to(self.split.x.device)
        else:
            order = torch.arange(n, device=self.split.x.device)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            x = self.split.x.index_select(0, idx)
            if self.augment:
                x = augment_crop_flip(x, self.generator)
            yield x, self.split.y.index_select(0, idx)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def eval_batches(split: Split, batch_size: int = 2048) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(split), batch_size):
        yield split.x[start : start + batch_size], split.y[start : start + batch_size]
