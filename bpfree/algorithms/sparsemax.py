"""Sparsemax and the sparsemax loss (Martins & Astudillo 2016), the "SL" predictor loss of CaFo.

sparsemax(z) is the Euclidean projection of z onto the probability simplex:

    sparsemax(z) = argmin_{p ∈ Δ} ||p − z||²  =  max(z − τ(z), 0)

with τ chosen so the result sums to 1. Sorting z descending (z_(1) ≥ z_(2) ≥ ...), the support
size is k(z) = max{k : 1 + k z_(k) > Σ_{j≤k} z_(j)} and τ(z) = (Σ_{j≤k(z)} z_(j) − 1) / k(z).

The sparsemax loss, with S(z) the support and Y one-hot,

    L(z, Y) = −z·Y + ½ Σ_{j∈S(z)} (z_j² − τ(z)²) + ½

is convex with gradient ∂L/∂z = sparsemax(z) − Y (the paper's gradient). Written with τ
differentiable (through the sorted values) autograd gives exactly that gradient.
"""

from __future__ import annotations

import torch


def sparsemax_threshold(z: torch.Tensor) -> torch.Tensor:
    """τ(z), shape (N, 1), for scores z of shape (N, C); differentiable in z."""
    z_sorted = z.sort(dim=1, descending=True).values
    cumulative = z_sorted.cumsum(dim=1)
    k = torch.arange(1, z.shape[1] + 1, device=z.device, dtype=z.dtype)
    # the condition holds for k = 1..k(z) and fails after, so counting it gives k(z)
    support_size = (1 + k * z_sorted > cumulative).sum(dim=1, keepdim=True)
    return (cumulative.gather(1, support_size - 1) - 1) / support_size.to(z.dtype)


def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Row-wise projection of z (N, C) onto the simplex: sums to 1, exact zeros off support."""
    return torch.clamp(z - sparsemax_threshold(z), min=0)


def sparsemax_loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean sparsemax loss of scores z (N, C) against integer labels y (N,)."""
    tau = sparsemax_threshold(z)
    support = (z > tau).detach()
    z_true = z.gather(1, y[:, None]).squeeze(1)
    inside = torch.where(support, z * z - tau * tau, torch.zeros_like(z)).sum(dim=1)
    return (-z_true + 0.5 * inside + 0.5).mean()
