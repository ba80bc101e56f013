from __future__ import annotations

import torch
from torch import nn

from bpfree.core.registry import ARCHITECTURES


@ARCHITECTURES.register("mlp")
class MLP(nn.Module):
    """Flatten, then Linear -> ReLU for each hidden width. ``layers`` is public so that
    layer-local algorithms (FF, MF) can train each layer on its own.

    Initialisation, as the paper's code (its MF_MLP, also the BP twin of MF): PyTorch's default
    weights (Kaiming-uniform with a = √5, i.e. U(±1/√fan_in)) and zero biases. FF replaces the
    weights with its own scheme (``FFParams.init``)."""

    def __init__(self, widths: tuple[int, ...], input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        sizes = [input_shape[0] * input_shape[1] * input_shape[2], *widths]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        for layer in self.layers:
            nn.init.zeros_(layer.bias)
        self.out_features = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer in self.layers:
            h = torch.relu(layer(h))
        return h
