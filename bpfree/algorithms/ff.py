"""Forward-Forward (Hinton 2022, arXiv 2212.13345) on an MLP, as docs/algorithms.md#forward-forward-ff states.

Each layer is trained on its own to tell positive data (the image with its true label written
into the first C inputs) from negative data (the same image with a wrong label):

    x̂ = x / sqrt(mean(x²) + eps)                 RMS norm, no mean subtraction
    h_i = ReLU(W_i sg(x̂_{i-1}) + b_i)             each layer sees a detached input
    G_i = Σ_j h_ij²,  θ_i = n_i                   goodness (a SUM) against the layer's width
    L_i = ½ [mean softplus(−(G⁺_i − θ_i)) + mean softplus(G⁻_i − θ_i)] + λ·peer_i

(the FF term is the paper's code's BCE-with-logits averaged over the 2N positives and
negatives together). All layers step on every minibatch. Their graphs share no parameters
(each input is detached), so one backward of Σ_i L_i with one optimiser gives every layer
exactly its own gradient: the same as one optimiser step per layer.

Prediction (``params.prediction``):
- ``goodness`` (default; what the paper's code reports and early-stops on): Σ_i G_i over the
  readout layers for each of the C labels, argmax; all C labels go through the net as one
  batched pass. No classifier is trained (the paper's code trains one it never uses).
- ``softmax`` (loeweX's, cheaper; not what the paper reports): one pass with the neutral label,
  then a bias-free linear classifier on the normalised activities of the readout layers,
  trained with CE on detached activities (it never moves an FF weight).

Readout layers are 2..L (the first layer's goodness mostly measures the label it was just
given). A 1-layer net has no layer 2, so it reads out from its only layer.

Choices where the paper's code and the FF paper differ (docs/paper-code.md gives each, with
its default and the reason):
- ``init``: ``paper`` N(0, 1/n_out) weights (default) or ``kaiming`` N(0, 2/n_in); biases 0.
- ``label_value``: ``pixel_max`` (default: a fully-on pixel in the normalised scale, 2.82 on
  MNIST; measured better than the paper's on real MNIST images) or ``one`` (the paper's: 1.0
  written into the already normalised image, a raw intensity of 0.44 on MNIST).
- ``relu_grad``: ``straight_through`` (default, the paper's: ReLU forward, identity backward
  while training) or ``standard``. ∂G/∂h = 2h is 0 where a unit is off, so only the peer
  term's gradient (linear in h) differs between the two.
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
from bpfree.data.batches import Batches, eval_batches
from bpfree.models import build_body


@dataclass(frozen=True)
class FFParams(MinibatchParams):
    batch_size: int = 100
    lr: float = 1e-3
    weight_decay: float = 3e-4
    classifier_lr: float = 1e-2
    classifier_weight_decay: float = 3e-3
    optimizer: Literal["adamw", "sgd"] = "adamw"
    momentum: float = 0.9  # SGD only
    peer_weight: float = 0.03  # λ of peer normalisation; 0 turns it off
    peer_momentum: float = 0.9  # running mean m ← 0.9 m + 0.1 mean_batch(h)
    prediction: Literal["goodness", "softmax"] = "goodness"
    negatives: Literal["uniform", "hard"] = "uniform"
    eps: float = 1e-8  # of the RMS norm
    init: Literal["paper", "kaiming"] = "paper"  # N(0, 1/n_out) or N(0, 2/n_in) weights; biases 0
    label_value: Literal["pixel_max", "one"] = "pixel_max"  # a fully-on pixel, or 1.0 (normalised)
    relu_grad: Literal["straight_through", "standard"] = "straight_through"


# -- the equations ----------------------------------------------------------------------------
def rms_normalise(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x²) + eps) per sample: the length is removed, the direction kept, so a
    layer cannot pass its own goodness on to the next."""
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


def goodness(h: torch.Tensor) -> torch.Tensor:
    """G = Σ_j h_j² per sample (a sum, so that θ = width is the operating point)."""
    return h.pow(2).sum(dim=-1)


def ff_loss(goodness_pos: torch.Tensor, goodness_neg: torch.Tensor, threshold: float) -> torch.Tensor:
    """BCE with logits G − θ (label 1 for positives, 0 for negatives) averaged over all 2N
    samples, as the paper's code: (mean softplus(−(G⁺ − θ)) + mean softplus(G⁻ − θ)) / 2."""
    return (F.softplus(-(goodness_pos - threshold)).mean() + F.softplus(goodness_neg - threshold).mean()) / 2


class _StraightThroughReLU(torch.autograd.Function):
    """max(z, 0) forward; the gradient passes through unchanged, negative inputs included."""

    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def ff_relu(z: torch.Tensor, straight_through: bool) -> torch.Tensor:
    """ReLU; with ``straight_through`` its gradient is the identity (the paper's code, while
    training), so a unit that is off still learns to switch on."""
    return _StraightThroughReLU.apply(z) if straight_through else torch.relu(z)


def uniform_wrong_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """A wrong label per sample, uniform over the C−1 wrong ones: the true label shifted by
    1..C−1 (mod C), which can never land back on it."""
    shift = torch.randint(1, num_classes, y.shape, generator=generator, device=y.device)
    return (y + shift) % num_classes


def hard_wrong_labels(y: torch.Tensor, scores: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A wrong label per sample drawn from softmax(scores) with the true class masked out, so
    the labels the model finds most plausible are the negatives it sees most."""
    masked = scores.detach().float().scatter(1, y[:, None], float("-inf"))
    return torch.multinomial(masked.softmax(dim=1), 1, generator=generator).squeeze(1)


# -- the algorithm ----------------------------------------------------------------------------
@ALGORITHMS.register("ff")
class ForwardForward(Algorithm):
    name = "ff"
    Params = FFParams
    arch_kinds = ("mlp",)
    default_arch = "mlp:1000,1000,1000"

    def __init__(self, arch, info, params: FFParams, device, seed) -> None:
        super().__init__(arch, info, params, device, seed)
        if info.input_features < info.num_classes:
            raise BpfreeError(
                f"ff writes the label into the first {info.num_classes} inputs, but {info.name} "
                f"has only {info.input_features}"
            )
        self.num_classes = info.num_classes
        # pixel_max: the value of a fully-on pixel in the normalised scale (1.0 on [0, 1] inputs);
        # one: 1.0 in the normalised scale, as the paper's code writes it
        self.label_value = (1.0 - info.mean[0]) / info.std[0] if params.label_value == "pixel_max" else 1.0
        self.net.body = build_body(arch, info.input_shape)
        self.layers = self.net.body.layers
        self.thresholds = [float(layer.out_features) for layer in self.layers]
        depth = len(self.layers)
        self.readout = list(range(1, depth)) if depth > 1 else [0]
        self.net.classifier = nn.Linear(
            sum(self.layers[i].out_features for i in self.readout), self.num_classes, bias=False
        )
        for i, layer in enumerate(self.layers):
            self.net.register_buffer(f"peer_mean{i}", torch.full((layer.out_features,), 0.5))
        self._init_weights()
        self.net.to(device)

        groups = [
            {"params": list(self.net.body.parameters()), "lr": params.lr, "weight_decay": params.weight_decay},
            {
                "params": list(self.net.classifier.parameters()),
                "lr": params.classifier_lr,
                "weight_decay": params.classifier_weight_decay,
            },
        ]
        if params.optimizer == "sgd":
            self.optimizer = torch.optim.SGD(groups, momentum=params.momentum, fused=True)
        else:
            self.optimizer = torch.optim.AdamW(groups, fused=True)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.epoch = 0
        self.max_epochs = 1

    def _init_weights(self) -> None:
        # paper: N(0, 1/n_out), the paper's code. On RMS-normalised inputs (mean x² = 1) it
        # starts G_i at n_in/(2 n_out)·θ_i (0.39·θ on MNIST's first layer, 0.5·θ above).
        # kaiming: N(0, 2/n_in) gives E[G_i] = n_i = θ_i at the start.
        for layer in self.layers:
            if self.params.init == "kaiming":
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            else:
                nn.init.normal_(layer.weight, 0.0, layer.out_features**-0.5)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.net.classifier.weight)  # starts at uniform predictions

    # -- inputs ---------------------------------------------------------------------------------
    def embed(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Flattened x with one-hot ``labels`` written over its first C values."""
        x = x.flatten(1).clone()
        x[:, : self.num_classes] = F.one_hot(labels, self.num_classes).to(x.dtype) * self.label_value
        return x

    def embed_neutral(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened x with every label slot at value/C (the mean of the C one-hot labels)."""
        x = x.flatten(1).clone()
        x[:, : self.num_classes] = self.label_value / self.num_classes
        return x

    # -- forward --------------------------------------------------------------------------------
    def activities(self, x_embedded: torch.Tensor) -> Iterator[torch.Tensor]:
        """h_i for each layer in turn; layer i+1 sees rms_normalise(sg(h_i)). The ReLU's
        gradient is ``params.relu_grad`` (it only matters where a graph is built)."""
        z = rms_normalise(x_embedded, self.params.eps)
        straight_through = self.params.relu_grad == "straight_through"
        for layer in self.layers:
            h = ff_relu(layer(z.detach()), straight_through)
            yield h
            z = rms_normalise(h, self.params.eps)

    def layer_losses(self, x: torch.Tensor, y: torch.Tensor, negative_labels: torch.Tensor) -> list[torch.Tensor]:
        """L_i per layer for one minibatch: FF loss on positives and negatives + peer term."""
        n = x.shape[0]
        both = torch.cat([self.embed(x, y), self.embed(x, negative_labels)])
        losses = []
        for i, h in enumerate(self.activities(both)):
            g = goodness(h)
            loss = ff_loss(g[:n], g[n:], self.thresholds[i])
            if self.params.peer_weight > 0:
                loss = loss + self.params.peer_weight * self._peer_loss(i, h[:n])
            losses.append(loss)
        return losses

    def _peer_loss(self, i: int, h_pos: torch.Tensor) -> torch.Tensor:
        """Pulls each unit's running mean activity on positives towards the layer's mean, so
        units neither die nor take over. The current batch's share carries the gradient."""
        running = getattr(self.net, f"peer_mean{i}")
        m = self.params.peer_momentum * running + (1 - self.params.peer_momentum) * h_pos.mean(0)
        running.copy_(m.detach())
        return (m.mean() - m).pow(2).mean()

    def readout_features(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated normalised activities of the readout layers on the neutral label,
        without a graph: the classifier's gradient stops here."""
        with torch.no_grad():
            hs = list(self.activities(self.embed_neutral(x)))
            return torch.cat([rms_normalise(hs[i], self.params.eps) for i in self.readout], dim=1)

    def classifier_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.classifier(self.readout_features(x))

    @torch.no_grad()
    def layer_goodness_per_label(self, x: torch.Tensor) -> torch.Tensor:
        """(readout layers, N, C): G_i with each label embedded, all N·C inputs in one pass."""
        n, c = x.shape[0], self.num_classes
        labels = torch.arange(c, device=x.device).repeat(n)  # sample-major: row k*C + label
        embedded = self.embed(x.flatten(1).repeat_interleave(c, dim=0), labels)
        per_layer = [goodness(h).view(n, c) for h in self.activities(embedded)]
        return torch.stack([per_layer[i] for i in self.readout])

    def goodness_per_label(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C): Σ over readout layers of G with each label embedded."""
        return self.layer_goodness_per_label(x).sum(0)

    # -- training -------------------------------------------------------------------------------
    def begin_stage(self, stage: Stage, max_epochs: int) -> None:
        self.epoch, self.max_epochs = 0, max_epochs

    def _cooldown(self) -> float:
        """LR factor: 1 for the first half of the epoch budget in force, then linear to
        ~0 (2·(1 + E − e)/E at epoch e of E). If early stopping ends the run in the first
        half, the cooldown never starts."""
        e, total = self.epoch, self.max_epochs
        return 1.0 if e <= total // 2 else 2.0 * (1 + total - e) / total

    def train_epoch(self, stage: Stage, batches: Batches) -> float:
        self.net.train()
        self.epoch += 1
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self._cooldown()
        softmax_mode = self.params.prediction == "softmax"
        losses = []
        for x, y in batches.epoch(self.params.batch_size):
            logits = self.classifier_logits(x) if softmax_mode else None
            if self.params.negatives == "hard":
                scores = logits if softmax_mode else self.goodness_per_label(x)
                negative_labels = hard_wrong_labels(y, scores, self.generator)
            else:
                negative_labels = uniform_wrong_labels(y, self.num_classes, self.generator)
            loss = torch.stack(self.layer_losses(x, y, negative_labels)).sum()
            if softmax_mode:
                loss = loss + F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss)
        return mean_loss(losses)

    @torch.no_grad()
    def evaluate(self, stage: Stage, split: Split) -> Evaluation:
        """softmax: the classifier's CE and accuracy. goodness: the FF loss of the readout
        layers with the true label as positive and every wrong label as negative (weighted
        1/(C−1), as one negative per sample in training), and goodness-prediction accuracy."""
        self.net.eval()
        if self.params.prediction == "softmax":
            return evaluate_scores(self.classifier_logits, split)
        total_loss, correct = 0.0, 0
        for x, y in eval_batches(split, 256):
            g = self.layer_goodness_per_label(x)  # (layers, N, C)
            theta = torch.tensor([self.thresholds[i] for i in self.readout], device=g.device)
            theta = theta[:, None, None]
            is_true = F.one_hot(y, self.num_classes).bool()[None]
            logits = g - theta  # (layers, N, C)
            pos = torch.where(is_true, F.softplus(-logits), 0.0).sum(2)
            neg = torch.where(is_true, 0.0, F.softplus(logits)).sum(2) / (self.num_classes - 1)
            total_loss += float((pos + neg).sum())
            correct += int((g.sum(0).argmax(1) == y).sum())
        n = max(len(split), 1)
        return Evaluation(total_loss / n, correct / n)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.params.prediction == "softmax":
            return self.classifier_logits(x)
        return self.goodness_per_label(x)

    def extra_state(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "epoch": self.epoch,
            "max_epochs": self.max_epochs,
        }

    def load_extra_state(self, state) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.epoch, self.max_epochs = state["epoch"], state["max_epochs"]
