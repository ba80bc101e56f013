"""Seeded minibatches cut from device-resident tensors; CIFAR augmentation as batched ops."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from bpfree.data.core import Split

PAD = 4  # CIFAR's random crop: reflect padding on every side


def draw_crop_flip(n: int, generator: torch.Generator, pad: int = PAD) -> torch.Tensor:
    """The crop offsets and flips of ``n`` samples, drawn from ``generator`` (on the CPU, so
    a run's augmentation is the same on any device): a (3, n) uint8 tensor of dy, dx, flip."""
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.stack([dy, dx, flip.long()]).to(torch.uint8)


def crop_flip(x: torch.Tensor, params: torch.Tensor, pad: int = PAD) -> torch.Tensor:
    """Random crop of the original size from a reflect-padded image, then a horizontal flip,
    per sample as ``params`` (``draw_crop_flip``'s, already on ``x``'s device) say, for the
    whole batch at once (no per-sample Python, no host-device copy)."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx, flip = params.long().unbind(0)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (n, h)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (n, w)
    cols = torch.where(flip.bool()[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def augment_crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = PAD) -> torch.Tensor:
    """``crop_flip`` with parameters drawn for this batch (one copy to the device)."""
    return crop_flip(x, draw_crop_flip(len(x), generator, pad).to(x.device), pad)


class Batches:
    """The training split of one run, cut into shuffled minibatches with a seeded generator.

    The generator lives on the CPU (index permutations are tiny) so that a run's batches are
    the same on any device; its state is part of a checkpoint. An epoch draws everything at
    its start, in the order it always has (the permutation, then each batch's crop offsets
    and flips), and copies it to the device once: no batch waits on a host-device copy."""

    def __init__(self, split: Split, *, seed: int, augment: bool = False, drop_last: bool = False) -> None:
        self.split = split
        self.augment = augment
        self.drop_last = drop_last  # a shuffled epoch leaves out its last partial batch
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.split)

    def epoch(self, batch_size: int, *, shuffle: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Minibatches of one pass; a shuffled one without its last partial batch when
        ``drop_last`` (an unshuffled pass, e.g. computing features, always covers every sample)."""
        n, device = len(self.split), self.split.x.device
        order = torch.randperm(n, generator=self.generator) if shuffle else None
        starts = range(0, kept_samples(n, batch_size, self.drop_last and shuffle), batch_size)
        if self.augment and n:  # per batch, as drawn before: the same numbers as ever for a seed
            params = torch.cat([draw_crop_flip(min(batch_size, n - s), self.generator) for s in starts], 1)
            params = params.to(device)  # one copy per epoch
        order = order.to(device) if order is not None else torch.arange(n, device=device)
        for start in starts:
            idx = order[start : start + batch_size]
            x = self.split.x.index_select(0, idx)
            if self.augment:
                x = crop_flip(x, params[:, start : start + batch_size])
            yield x, self.split.y.index_select(0, idx)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def kept_samples(n: int, batch_size: int, drop_last: bool) -> int:
    """How many of ``n`` samples an epoch trains on: all, or (``drop_last``) those of its full
    batches; a split smaller than one batch keeps its one partial batch."""
    if not drop_last or n < batch_size:
        return n
    return n - n % batch_size


def eval_batches(split: Split, batch_size: int = 2048) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(split), batch_size):
        yield split.x[start : start + batch_size], split.y[start : start + batch_size]
