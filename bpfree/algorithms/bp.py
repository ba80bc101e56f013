"""Backpropagation: the BP-free model's own body plus one Linear(n_L, C) head, trained end to
end with cross-entropy and AdamW (docs/algorithms.md#backpropagation-bp)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bpfree.algorithms.base import Algorithm, Evaluation, MinibatchParams, Stage, evaluate_scores, mean_loss
from bpfree.core.errors import BpfreeError
from bpfree.core.registry import ALGORITHMS
from bpfree.data import Split
from bpfree.data.batches import Batches
from bpfree.models import build_body
from bpfree.models.mlp import MLPInit


@dataclass(frozen=True)
class BPParams(MinibatchParams):
    lr: float = 1e-3
    weight_decay: float = 1e-4
    # an MLP body's initialisation (bpfree.models.mlp.MLP; the paper's code: kaiming-relu for
    # MF's twin, pytorch for FF's); a CNN body has the CaFo blocks' own
    init: MLPInit = "pytorch-zero-bias"
    # the output layer: PyTorch's default, or N(0, 0.01) weights and bias 0 (the paper's MF_MLP
    # output layer: MF's twin)
    head_init: Literal["pytorch", "normal-0.01"] = "pytorch"


@ALGORITHMS.register("bp")
class Backprop(Algorithm):
    name = "bp"
    Params = BPParams
    arch_kinds = ("mlp", "cnn")
    default_arch = "mlp:1000,1000"

    def __init__(self, arch, info, params: BPParams, device, seed) -> None:
        super().__init__(arch, info, params, device, seed)
        if arch.kind == "mlp":
            body = build_body(arch, info.input_shape, init=params.init)
        elif params.init != BPParams.init:
            raise BpfreeError(f"bp's init {params.init!r} is for an MLP body; {arch} has the CaFo blocks' own")
        else:
            body = build_body(arch, info.input_shape)
        head = nn.Linear(body.out_features, info.num_classes)
        if params.head_init == "normal-0.01":
            nn.init.normal_(head.weight, mean=0.0, std=0.01)
            nn.init.zeros_(head.bias)
        self.net.model = nn.Sequential(body, nn.Flatten(), head)
        self.net.to(device)
        self.optimizer = torch.optim.AdamW(
            self.net.parameters(), lr=params.lr, weight_decay=params.weight_decay, fused=True
        )

    def train_epoch(self, stage: Stage, batches: Batches) -> float:
        self.net.train()
        losses = []
        for x, y in batches.epoch(self.params.batch_size):
            loss = F.cross_entropy(self.net.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss)
        return mean_loss(losses)

    @torch.no_grad()
    def evaluate(self, stage: Stage, split: Split) -> Evaluation:
        self.net.eval()
        return evaluate_scores(self.net.model, split)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.model(x)

    def extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_extra_state(self, state) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
