"""Pay torch's one-time lazy costs before anything is measured, so that no fit window and no
first epoch carries them:

- the first optimiser built imports ``torch._dynamo`` (1-2 s of CPU), which on a small run
  was most of what the fit window measured;
- on a GPU, the first matrix product creates the cuBLAS handle, and the first convolution
  loads cuDNN (its libraries and handle: up to seconds), forward and backward alike.

Nothing here draws from a random generator: a seeded run is the same with or without it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def warm_up(device: torch.device | str) -> None:
    device = torch.device(device)
    torch.optim.AdamW([torch.zeros(1, requires_grad=True)])
    if device.type == "cuda":
        _matmul(device)
        _conv_block(device)
        torch.cuda.synchronize(device)


def _matmul(device: torch.device) -> None:
    """cuBLAS: its handle and workspace, forward and a backward's transposed products."""
    w = torch.ones(8, 8, device=device, requires_grad=True)
    (torch.ones(8, 8, device=device) @ w).sum().backward()


def _conv_block(device: torch.device) -> None:
    """cuDNN: one convolution + batch norm (training mode) + max pool, forward and backward,
    the layers of every CNN here. Constant tensors, not ``nn`` modules, whose initialisation
    would draw from the global generator."""
    x = torch.ones(2, 3, 8, 8, device=device, requires_grad=True)
    weight = torch.full((4, 3, 3, 3), 0.1, device=device, requires_grad=True)
    gamma = torch.ones(4, device=device, requires_grad=True)
    beta = torch.zeros(4, device=device, requires_grad=True)
    y = F.conv2d(x, weight, padding=1)
    y = F.batch_norm(y, None, None, gamma, beta, training=True)
    y = F.max_pool2d(F.relu(y), 2)
    y.sum().backward()
