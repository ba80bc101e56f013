"""Mono-Forward (Gong, Li & Abdulla 2025, arXiv 2501.09238) on an MLP, as docs/algorithms.md#mono-forward-mf
states.

Each layer learns from its own projection onto the classes, never from the layers above:

    a_0 = x,  a_i = ReLU(W_i sg(a_{i-1}) + b_i)
    G_i = a_i M_iᵀ                     M_i ∈ R^{C×n_i}, no bias
    L_i = CE(softmax(G_i), y)          ∂L_i/∂M_i = (softmax(G_i) − Y)ᵀ a_i; none reaches layer i−1

Training (``params.training``):
- ``layerwise`` (default, the paper's code): one stage per layer ("layer1", "layer2", ...).
  Layer i trains on the frozen features of the layers below until early stopping on its own
  validation CE, then is frozen.
- ``simultaneous``: one stage; every layer steps on every minibatch, each on a detached input.

Prediction (``params.prediction``): argmax a_L M_Lᵀ (``last``, default) or argmax Σ_i a_i M_iᵀ
(``sum``).

Initialisation (``params.init``): bpfree's default, PyTorch's default weights U(±1/√n_in) for
W_i with zero biases, or the paper's code's ``kaiming-relu``, U(±√(6/n_in)) with zero biases;
M_i always PyTorch's default U(±1/√n_i), as the paper's code. Its per-layer early stopping keeps a layer's *last* epoch (no restore);
``layer_end`` chooses: ``last`` (default, the paper's) or ``best`` (the run's policy decides,
``early_stopping.restore_best``). docs/paper-code.md lists every difference from the paper's code.
"""

from __future__ import annotations

from collections.abc import Iterator
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
class MFParams(MinibatchParams):
    lr: float = 1e-3
    weight_decay: float = 0.0
    epochs_per_layer: int | None = None  # cap per stage; None: the run's max_epochs
    training: Literal["layerwise", "simultaneous"] = "layerwise"
    prediction: Literal["last", "sum"] = "last"
    # layer-wise: a layer ends with its last epoch (the paper's code) or, when the run's policy
    # restores, with its best one (by its validation CE, which favours an early epoch of layer 2+)
    layer_end: Literal["last", "best"] = "last"
    # the hidden layers W_i (bpfree.models.mlp.MLP): bpfree's default, or the paper's MF_MLP
    # (kaiming-relu: U(±√(6/n_in)), 2.45 times the default's bound); M_i always PyTorch's default
    init: MLPInit = "pytorch-zero-bias"


@ALGORITHMS.register("mf")
class MonoForward(Algorithm):
    name = "mf"
    Params = MFParams
    arch_kinds = ("mlp",)
    default_arch = "mlp:1000,1000"

    def __init__(self, arch, info, params: MFParams, device, seed) -> None:
        super().__init__(arch, info, params, device, seed)
        if params.epochs_per_layer is not None and params.epochs_per_layer < 1:
            raise BpfreeError(f"mf's epochs_per_layer must be >= 1 or null, got {params.epochs_per_layer}")
        self.net.body = build_body(arch, info.input_shape, init=params.init)
        self.layers = self.net.body.layers
        self.net.projections = nn.ModuleList(
            nn.Linear(layer.out_features, info.num_classes, bias=False) for layer in self.layers
        )
        self.net.to(device)
        self.optimizer: torch.optim.Optimizer | None = None
        self._cache: Batches | None = None  # frozen features of the training split, one stage

    # -- the equations --------------------------------------------------------------------------
    def layer_forward(self, i: int, a_prev: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_i, G_i) from a_{i-1}; the input is detached, so L_i stops at layer i."""
        a = torch.relu(self.layers[i](a_prev.detach()))
        return a, self.net.projections[i](a)

    def layer_loss(self, i: int, a_prev: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.layer_forward(i, a_prev)[1], y)

    @torch.no_grad()
    def features(self, x: torch.Tensor, depth: int) -> torch.Tensor:
        """a_depth: the input run through the first ``depth`` layers (a_0 = flattened x)."""
        a = x.flatten(1)
        for layer in self.layers[:depth]:
            a = torch.relu(layer(a))
        return a

    @torch.no_grad()
    def goodness_per_layer(self, x: torch.Tensor) -> list[torch.Tensor]:
        a, goodness = x.flatten(1), []
        for i in range(len(self.layers)):
            a, g = self.layer_forward(i, a)
            goodness.append(g)
        return goodness

    # -- stages ---------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        cap = self.params.epochs_per_layer
        if self.params.training == "simultaneous":
            return [Stage("train", max_epochs=cap)]
        restore = self.params.layer_end == "best"
        return [Stage(f"layer{i + 1}", max_epochs=cap, restore_best=restore) for i in range(len(self.layers))]

    def _trained_layers(self, stage: Stage) -> list[int]:
        if self.params.training == "simultaneous":
            return list(range(len(self.layers)))
        return [int(stage.name.removeprefix("layer")) - 1]

    def begin_stage(self, stage: Stage, max_epochs: int) -> None:
        trained = self._trained_layers(stage)
        parameters = [
            p for i in trained for module in (self.layers[i], self.net.projections[i]) for p in module.parameters()
        ]
        self.optimizer = torch.optim.Adam(
            parameters, lr=self.params.lr, weight_decay=self.params.weight_decay, fused=True
        )
        self._cache = None

    def end_stage(self, stage: Stage) -> None:
        if self.params.training == "layerwise":
            (i,) = self._trained_layers(stage)
            self.layers[i].requires_grad_(False)
            self.net.projections[i].requires_grad_(False)
        self._cache = None

    # -- training -------------------------------------------------------------------------------
    def _layer_inputs(self, i: int, batches: Batches) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Minibatches of (a_{i-1}, y) for training layer i.

        The layers below are frozen for the whole stage, so on unaugmented data their output
        on the training split is computed once per stage and then cut into batches. The cache
        shares the run's generator, so the batch order is what it would have been."""
        bs = self.params.batch_size
        if i == 0 or batches.augment:
            for x, y in batches.epoch(bs):
                yield self.features(x, i), y
            return
        if self._cache is None or self._cache.split.y is not batches.split.y:
            cached = torch.cat([self.features(x, i) for x, _ in batches.epoch(4096, shuffle=False)])
            self._cache = Batches(Split(cached, batches.split.y), seed=0, drop_last=batches.drop_last)
        self._cache.generator = batches.generator
        yield from self._cache.epoch(bs)

    def train_epoch(self, stage: Stage, batches: Batches) -> float:
        self.net.train()
        trained = self._trained_layers(stage)
        losses = []
        if self.params.training == "simultaneous":
            for x, y in batches.epoch(self.params.batch_size):
                a, loss = x.flatten(1), 0.0
                for i in trained:
                    a, g = self.layer_forward(i, a)
                    loss = loss + F.cross_entropy(g, y)
                self._step(loss)
                losses.append(loss)
        else:
            (i,) = trained
            for a_prev, y in self._layer_inputs(i, batches):
                loss = self.layer_loss(i, a_prev, y)
                self._step(loss)
                losses.append(loss)
        return mean_loss(losses)

    def _step(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    @torch.no_grad()
    def evaluate(self, stage: Stage, split: Split) -> Evaluation:
        """Layer-wise: the CE/accuracy of the stage's own layer. Simultaneous: of the predictor."""
        self.net.eval()
        if self.params.training == "simultaneous":
            return evaluate_scores(self.predict, split)
        (i,) = self._trained_layers(stage)
        return evaluate_scores(lambda x: self.layer_forward(i, self.features(x, i))[1], split)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        goodness = self.goodness_per_layer(x)
        return goodness[-1] if self.params.prediction == "last" else torch.stack(goodness).sum(0)

    def extra_state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict() if self.optimizer is not None else None}

    def load_extra_state(self, state) -> None:
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
