from __future__ import annotations

import math
from typing import Literal, get_args

import torch
from torch import nn

from bpfree.core.errors import BpfreeError
from bpfree.core.registry import ARCHITECTURES

# how an MLP's hidden layers start (MF's and BP's ``init``; FF has its own, FFParams.init)
MLPInit = Literal["pytorch-zero-bias", "pytorch", "kaiming-relu"]
MLP_INITS: tuple[str, ...] = get_args(MLPInit)


@ARCHITECTURES.register("mlp")
class MLP(nn.Module):
    """Flatten, then Linear -> ReLU for each hidden width. ``layers`` is public so that
    layer-local algorithms (FF, MF) can train each layer on its own.

    ``init`` (every scheme first draws nn.Linear's own weights and biases, so a seed gives
    the same draws up to that point):

    - ``pytorch-zero-bias`` (bpfree's default): PyTorch's default weights, Kaiming-uniform with
      a = √5, i.e. U(±1/√n_in); biases 0.
    - ``pytorch``: PyTorch's default weights and biases, both U(±1/√n_in): the paper's BP twin
      of FF (an ``nn.Sequential`` of ``nn.Linear``).
    - ``kaiming-relu``: U(±√(6/n_in)), biases 0: the paper's ``MF_MLP`` (MF and its BP twin),
      which calls ``kaiming_uniform_(w, a=√5, nonlinearity="relu")``: with ``nonlinearity="relu"``
      the gain is √2 and ``a`` is ignored, so its bound is √6 ≈ 2.45 times PyTorch's default.

    FF replaces the weights with its own scheme (``FFParams.init``)."""

    def __init__(
        self, widths: tuple[int, ...], input_shape: tuple[int, int, int], init: MLPInit = "pytorch-zero-bias"
    ) -> None:
        super().__init__()
        if init not in MLP_INITS:
            raise BpfreeError(f"unknown MLP init {init!r}; valid: {', '.join(MLP_INITS)}")
        sizes = [input_shape[0] * input_shape[1] * input_shape[2], *widths]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        for layer in self.layers:
            if init == "kaiming-relu":
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), nonlinearity="relu")
            if init != "pytorch":
                nn.init.zeros_(layer.bias)
        self.out_features = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer in self.layers:
            h = torch.relu(layer(h))
        return h
