from __future__ import annotations

import torch
from torch import nn

from bpfree.core.errors import BpfreeError
from bpfree.core.registry import ARCHITECTURES


class ConvBlock(nn.Sequential):
    """CaFo's block: Conv3x3 (stride 1, pad 1, no bias) -> ReLU -> MaxPool2x2 -> BatchNorm2d.

    As the paper's code (its CaFoBlock, also the BP twin's body): the convolution has no bias
    (a block with BatchNorm is built without one), its weights are Kaiming-uniform for ReLU
    (U(±√(6/fan_in))), and BatchNorm keeps PyTorch's defaults (eps 1e-5, momentum 0.1)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_uniform_(conv.weight, mode="fan_in", nonlinearity="relu")
        super().__init__(conv, nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(out_channels))


@ARCHITECTURES.register("cnn")
class CNN(nn.Module):
    """A cascade of :class:`ConvBlock`; ``forward`` returns the last block's map flattened.
    ``block_shapes[i]`` is block i's output (C, H, W); on 8x8 digits three blocks end at 1x1."""

    def __init__(self, channels: tuple[int, ...], input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        c, h, w = input_shape
        if min(h, w) < 2 ** len(channels):
            raise BpfreeError(
                f"cnn with {len(channels)} blocks halves the image {len(channels)} times and needs "
                f"inputs of at least {2 ** len(channels)} px; this dataset has {h}x{w}"
            )
        sizes = [c, *channels]
        self.blocks = nn.ModuleList(ConvBlock(a, b) for a, b in zip(sizes, sizes[1:]))
        self.block_shapes = []
        for ch in channels:
            h, w = h // 2, w // 2
            self.block_shapes.append((ch, h, w))
        self.out_features = channels[-1] * h * w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x.flatten(1)
