"""Cascaded-Forward (Zhao et al. 2023, arXiv 2303.09728) on the CNN, as docs/algorithms.md#cascaded-forward-cafo-rand-cafo-dfa
states.

The blocks h_i = Block_i(h_{i-1}) (Conv3x3 → ReLU → MaxPool2 → BatchNorm) are *frozen* when the
predictors learn; each block i has a linear predictor (W_i, b_i) on flatten(h_i):

    s_i = flatten(h_i) W_iᵀ + b_i                 (N, C) scores of block i (``predictor_bias``)
    prediction = argmax Σ_i s_i                   (``aggregate: logits``, the paper's code)
              or argmax Σ_i softmax(s_i)          (``aggregate: probabilities``, the CaFo paper;
                                                   sparsemax(s_i) for the SL loss)

Block features, two registered variants sharing :class:`CaFoParams`:
- ``cafo-rand``: blocks keep their random initialisation (never updated).
- ``cafo-dfa``: first a stage "dfa" trains the blocks by Direct Feedback Alignment. An auxiliary
  Linear+CE head on the last block gets its true gradient; every other block i receives the
  global error through a fixed random matrix,

      e = softmax(head(h_L)) − Y,   δh_i = e B_i    (B_i ∈ R^{C × |h_i|}, Gaussian, rows unit norm)

  and each block sees only a detached input, so no error travels backwards between blocks.

Predictors (stage "predictors"), all blocks in the same pass, loss ``predictor_loss``:
- ``ce``: cross-entropy, minibatch Adam, early stopping on validation.
- ``sl``: sparsemax loss (gradient sparsemax(s_i) − Y), minibatch Adam, early stopping.
- ``mse``: ridge regression in closed form, W_iᵀ = (X_iᵀX_i + λI)⁻¹ X_iᵀY, by one solve (no
  inverse) after one pass that accumulates X_iᵀX_i and X_iᵀY; a single epoch.

BatchNorm (``batchnorm``): the blocks run in eval mode whenever features are taken, so
features and test predictions never depend on the batch. With ``recompute`` (default) the
running statistics are first refilled from one pass over the training data in train mode (a
cumulative average, not the 0.1-momentum one); with ``keep`` (the paper's code) they are what
its blocks have: its CNN sizes each block by one train-mode forward of a zero image, which
moves every running variance from 1 to 0.9 (momentum 0.1, a batch variance of 0) and leaves the
means at 0; so cafo-rand's random blocks divide by √0.9 and subtract nothing, and cafo-dfa's
start its DFA epochs from there (their 0.1-momentum averages of the last DFA steps remain).

Predictor stopping (``stopping``): ``joint`` stops the predictors together on their summed
validation loss; ``per-predictor`` (the paper's code, which trains them one after another) gives
each its own early stopping on its own validation loss: a predictor that stops is frozen, the
others go on, and each keeps its last epoch. The predictors share no parameter and the blocks
are frozen, so training them side by side gives each the updates it would get alone, on the
same batch order.

docs/paper-code.md lists every difference from the paper's code, with its default and reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from bpfree.algorithms.base import Algorithm, Evaluation, MinibatchParams, Stage, evaluate_scores, mean_loss
from bpfree.algorithms.sparsemax import sparsemax, sparsemax_loss
from bpfree.core.errors import BpfreeError
from bpfree.core.registry import ALGORITHMS
from bpfree.data import Split
from bpfree.data.batches import Batches, eval_batches, kept_samples
from bpfree.models import CNN


@dataclass(frozen=True)
class CaFoParams(MinibatchParams):
    predictor_loss: Literal["ce", "mse", "sl"] = "ce"
    predictor_lr: float = 1e-3  # Adam, CE and SL predictors (the original code's rand-CE setting)
    predictor_weight_decay: float = 0.0
    ridge_lambda: float = 1.0  # λ of the MSE predictors' ridge solve (on sums, not means)
    dfa_lr: float = 1e-4  # Adam on the blocks and the auxiliary head (cafo-dfa only)
    dfa_epochs: int = 10
    dfa_weight_decay: float = 0.0
    predictor_bias: bool = True  # the paper's code's predictors have a bias (the CaFo paper's none)
    aggregate: Literal["logits", "probabilities"] = "logits"  # Σ_i s_i (paper's code) or Σ_i softmax(s_i)
    batchnorm: Literal["recompute", "keep"] = "recompute"  # refill running statistics, or the paper's
    # CE and SL predictors: one early-stopping decision on their summed validation loss
    # (joint), or each predictor on its own validation loss, frozen once it stops and keeping
    # its last epoch (per-predictor, the paper's code); MSE's closed form has none
    stopping: Literal["joint", "per-predictor"] = "joint"


# -- the predictor losses, as functions of the block's scores s (N, C) and labels y (N,) ------------
def predictor_loss(kind: str, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == "ce":
        return F.cross_entropy(scores, y)
    if kind == "sl":
        return sparsemax_loss(scores, y)
    # mse: Σ_c (s_c − Y_c)², averaged over samples (what the ridge solve minimises, plus λ||W||²)
    return (scores - F.one_hot(y, scores.shape[1]).to(scores.dtype)).square().sum(1).mean()


def predictor_probabilities(kind: str, scores: torch.Tensor) -> torch.Tensor:
    return sparsemax(scores) if kind == "sl" else torch.softmax(scores, dim=1)


def combine_block_scores(kind: str, aggregate: str, scores: list[torch.Tensor]) -> torch.Tensor:
    """The cascade's (N, C) class scores: Σ_i s_i (``logits``, as the paper's code evaluates) or
    Σ_i softmax(s_i) (``probabilities``, sparsemax for the SL loss, as the CaFo paper)."""
    if aggregate == "logits":
        return sum(scores)
    return sum(predictor_probabilities(kind, s) for s in scores)


def ridge_solve(gram: torch.Tensor, cross: torch.Tensor, ridge_lambda: float) -> torch.Tensor:
    """W = (XᵀX + λI)⁻¹ XᵀY, shape (D, C), from gram = XᵀX (D, D) and cross = XᵀY (D, C).
    A linear solve in float64: never an explicit inverse, and sums over many samples keep
    their precision."""
    eye = torch.eye(gram.shape[0], dtype=torch.float64, device=gram.device)
    return torch.linalg.solve(gram.double() + ridge_lambda * eye, cross.double())


def feedback_matrices(num_classes: int, block_sizes: list[int], seed: int) -> list[torch.Tensor]:
    """Fixed Gaussian B_i ∈ R^{C × |h_i|}, each row scaled to unit norm; drawn from their own
    seeded CPU generator so they are the same on every device."""
    generator = torch.Generator().manual_seed(seed)
    matrices = []
    for size in block_sizes:
        b = torch.randn(num_classes, size, generator=generator)
        matrices.append(b / b.norm(dim=1, keepdim=True))
    return matrices


class CascadedForward(Algorithm):
    """Shared by ``cafo-rand`` and ``cafo-dfa``; ``train_blocks`` tells them apart."""

    Params = CaFoParams
    arch_kinds = ("cnn",)
    default_arch = "cnn:32,128,512"
    train_blocks: ClassVar[bool]

    def __init__(self, arch, info, params: CaFoParams, device, seed) -> None:
        super().__init__(arch, info, params, device, seed)
        _check(params)
        self.net.body = CNN(arch.widths, info.input_shape)
        self.blocks = self.net.body.blocks
        self.block_sizes = [math.prod(shape) for shape in self.net.body.block_shapes]
        num_classes = info.num_classes
        self.net.predictors = nn.ModuleList(
            nn.Linear(size, num_classes, bias=params.predictor_bias) for size in self.block_sizes
        )
        if params.batchnorm == "keep":
            sizing_probe(self.blocks)
        if self.train_blocks:
            self.net.head = nn.Linear(self.block_sizes[-1], num_classes)  # DFA's auxiliary head
            nn.init.zeros_(self.net.head.bias)  # as the paper's code
            for i, b in enumerate(feedback_matrices(num_classes, self.block_sizes[:-1], seed)):
                self.net.register_buffer(f"feedback{i}", b)
        else:
            self.blocks.requires_grad_(False)
        self.net.to(device)
        self.optimizer: torch.optim.Optimizer | None = None
        self._calibrated = False  # BatchNorm statistics refilled for the predictor stage
        self._features: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # id(y) -> (y, features)
        self._stopped: set[int] = set()  # predictors stopped (stopping: per-predictor)

    @property
    def feedback(self) -> list[torch.Tensor]:
        return [getattr(self.net, f"feedback{i}") for i in range(len(self.blocks) - 1)]

    # -- stages ---------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        closed_form = self.params.predictor_loss == "mse"
        # MSE is one closed-form solve: a single epoch, nothing for early stopping to watch
        if closed_form:
            predictors = Stage("predictors", max_epochs=1, early_stopping=False)
        elif self.params.stopping == "per-predictor":
            names = tuple(f"predictor{i + 1}" for i in range(len(self.blocks)))
            predictors = Stage("predictors", restore_best=False, parts=names)
        else:
            predictors = Stage("predictors")
        if self.train_blocks:
            return [Stage("dfa", max_epochs=self.params.dfa_epochs, early_stopping=False), predictors]
        return [predictors]

    def begin_stage(self, stage: Stage, max_epochs: int) -> None:
        p = self.params
        if stage.name == "dfa":
            parameters = [*self.blocks.parameters(), *self.net.head.parameters()]
            self.optimizer = torch.optim.Adam(parameters, lr=p.dfa_lr, weight_decay=p.dfa_weight_decay, fused=True)
        elif p.predictor_loss == "mse":
            self.optimizer = None  # a closed-form solve
        else:
            self.optimizer = torch.optim.Adam(
                self.net.predictors.parameters(), lr=p.predictor_lr, weight_decay=p.predictor_weight_decay, fused=True
            )
        self._calibrated = False
        self._features.clear()
        self._stopped.clear()

    def stop_part(self, stage: Stage, index: int) -> None:
        self._stopped.add(index)
        self.net.predictors[index].requires_grad_(False)

    def end_stage(self, stage: Stage) -> None:
        if stage.name == "dfa":
            self.blocks.requires_grad_(False)  # frozen from here on
        self._features.clear()

    def train_epoch(self, stage: Stage, batches: Batches) -> float:
        if stage.name == "dfa":
            return self._dfa_epoch(batches)
        if not self._calibrated:
            if self.params.batchnorm == "recompute":
                self.calibrate_batchnorm(batches)
            self._calibrated = True
        if self.params.predictor_loss == "mse":
            return self._ridge_epoch(batches)
        return self._predictor_epoch(batches)

    # -- DFA (cafo-dfa's first stage) -----------------------------------------------------------
    def dfa_objective(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(surrogate, head CE). ``surrogate.backward()`` leaves the DFA update in ``.grad``:
        the true CE gradient for the head and the last block, and J_iᵀ(e B_i) for block i < L.

        Each block's input is detached, so the CE reaches the last block only; for the others
        Σ_n ⟨h_i, sg(δh_i)⟩ has gradient J_iᵀ δh_i. δh_i carries the 1/N of the mean CE, so DFA's
        and the head's gradients are on the same scale."""
        h, hidden = x, []
        for block in self.blocks:
            h = block(h.detach())
            hidden.append(h)
        logits = self.net.head(h.flatten(1))
        head_loss = F.cross_entropy(logits, y)
        with torch.no_grad():
            error = (torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).to(logits.dtype)) / len(y)
        surrogate = head_loss
        for h_i, b_i in zip(hidden[:-1], self.feedback):
            surrogate = surrogate + (h_i.flatten(1) * (error @ b_i)).sum()
        return surrogate, head_loss

    def _dfa_epoch(self, batches: Batches) -> float:
        self.net.train()
        losses = []
        for x, y in batches.epoch(self.params.batch_size):
            surrogate, head_loss = self.dfa_objective(x, y)
            self.optimizer.zero_grad(set_to_none=True)
            surrogate.backward()
            self.optimizer.step()
            losses.append(head_loss)
        return mean_loss(losses)

    # -- frozen features ------------------------------------------------------------------------
    @torch.no_grad()
    def calibrate_batchnorm(self, batches: Batches) -> None:
        """Refill every BatchNorm's running mean/var from one pass over the training data in
        train mode, as a cumulative average (momentum None); left at their initial 0/1 (random
        blocks) or lagging behind the last DFA steps, eval-mode features would be off."""
        norms = [m for m in self.blocks.modules() if isinstance(m, nn.BatchNorm2d)]
        momenta = [bn.momentum for bn in norms]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None
        self.net.body.train()
        for x, _ in batches.epoch(self.params.batch_size):
            self.net.body(x)
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum
        self.net.eval()

    @torch.no_grad()
    def block_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """flatten(h_i) for every block, blocks in eval mode (running statistics)."""
        self.net.body.eval()
        features, h = [], x
        for block in self.blocks:
            h = block(h)
            features.append(h.flatten(1))
        return features

    def _cached_features(self, split: Split) -> torch.Tensor:
        """All blocks' features of a split, side by side (N, Σ|h_i|), computed once per stage:
        the blocks are frozen while the predictors learn."""
        key = id(split.y)
        if key not in self._features or self._features[key][0] is not split.y:
            x = torch.cat([torch.cat(self.block_features(xb), 1) for xb, _ in eval_batches(split)])
            self._features[key] = (split.y, x)
        return self._features[key][1]

    def _feature_batches(self, batches: Batches) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
        """Shuffled minibatches of (per-block features, y). Unaugmented data: cut from the cached
        features with the run's generator (the same order ``batches.epoch`` would give);
        augmented data: every batch augmented afresh, then through the frozen blocks once."""
        bs = self.params.batch_size
        if batches.augment:
            for x, y in batches.epoch(bs):
                yield self.block_features(x), y
            return
        features, y = self._cached_features(batches.split), batches.split.y
        order = torch.randperm(len(y), generator=batches.generator).to(y.device)
        order = order[: kept_samples(len(y), bs, batches.drop_last)]
        for idx in order.split(bs):
            yield list(features.index_select(0, idx).split(self.block_sizes, 1)), y.index_select(0, idx)

    # -- predictors -----------------------------------------------------------------------------
    def block_scores(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [predictor(f) for predictor, f in zip(self.net.predictors, features)]

    def _predictor_epoch(self, batches: Batches) -> float:
        """CE or SL: every block's predictor that has not stopped steps on every minibatch
        (their losses are independent, so one backward of the sum gives each its own gradient;
        a stopped one gets none, and Adam leaves a parameter without a gradient alone)."""
        self.net.predictors.train()
        kind, losses = self.params.predictor_loss, []
        active = [i for i in range(len(self.blocks)) if i not in self._stopped]
        for features, y in self._feature_batches(batches):
            loss = sum(predictor_loss(kind, self.net.predictors[i](features[i]), y) for i in active)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss)
        return mean_loss(losses)

    @torch.no_grad()
    def _ridge_epoch(self, batches: Batches) -> float:
        """MSE: accumulate X_iᵀX_i and X_iᵀY over one pass, then solve for each W_i. The training
        loss Σ_i mean_n ||x W_i − y||² follows from the same sums:
        tr(WᵀXᵀXW) − 2 tr(WᵀXᵀY) + N, with no second pass. With ``predictor_bias`` X gets a
        column of ones, whose weight is the bias (penalised by λ like the rest)."""
        bias = self.params.predictor_bias
        sizes = [d + bias for d in self.block_sizes]
        grams = [torch.zeros(d, d, dtype=torch.float64, device=self.device) for d in sizes]
        c = self.info.num_classes
        crosses = [torch.zeros(d, c, dtype=torch.float64, device=self.device) for d in sizes]
        n = 0
        for features, y in self._feature_batches(batches):
            target = F.one_hot(y, c).to(features[0].dtype)
            for gram, cross, x in zip(grams, crosses, features):
                if bias:
                    x = torch.cat([x, torch.ones_like(x[:, :1])], 1)
                gram += x.T @ x
                cross += x.T @ target
            n += len(y)
        loss = 0.0
        for predictor, gram, cross in zip(self.net.predictors, grams, crosses):
            w = ridge_solve(gram, cross, self.params.ridge_lambda)
            if bias:
                predictor.weight.copy_(w[:-1].T)
                predictor.bias.copy_(w[-1])
            else:
                predictor.weight.copy_(w.T)
            loss += float(((w * (gram @ w)).sum() - 2 * (w * cross).sum() + n) / n)
        return loss

    @torch.no_grad()
    def evaluate(self, stage: Stage, split: Split) -> Evaluation:
        """DFA stage: the auxiliary head's CE and accuracy. Predictor stage: the summed predictor
        losses (what the predictors minimise) and the accuracy of the combined scores."""
        self.net.eval()
        if stage.name == "dfa":
            return evaluate_scores(lambda x: self.net.head(self.block_features(x)[-1]), split)
        kind = self.params.predictor_loss
        features = list(self._cached_features(split).split(self.block_sizes, 1))
        scores = self.block_scores(features)
        losses = [float(predictor_loss(kind, s, split.y)) for s in scores]
        combined = combine_block_scores(kind, self.params.aggregate, scores)
        accuracy = float((combined.argmax(1) == split.y).float().mean())
        parts = ()
        if stage.parts:  # each predictor's own validation loss and accuracy
            parts = tuple(
                Evaluation(loss, float((s.argmax(1) == split.y).float().mean())) for loss, s in zip(losses, scores)
            )
        return Evaluation(sum(losses), accuracy, parts)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Σ_i s_i (``aggregate: logits``) or Σ_i softmax(s_i) (sparsemax for SL)."""
        self.net.eval()
        scores = self.block_scores(self.block_features(x))
        return combine_block_scores(self.params.predictor_loss, self.params.aggregate, scores)

    def extra_state(self) -> dict:
        # "calibrated": the BatchNorm statistics (buffers in self.net) are already refilled; a
        # resumed run must not refill them again, which would also draw a batch order
        return {
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "calibrated": self._calibrated,
            "stopped": sorted(self._stopped),
        }

    def load_extra_state(self, state) -> None:
        if self.optimizer is not None and state.get("optimizer") is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self._calibrated = state.get("calibrated", False)
        self._stopped = set()
        for index in state.get("stopped", []):
            self.stop_part(Stage("predictors"), int(index))


@torch.no_grad()
def sizing_probe(blocks: nn.ModuleList) -> None:
    """What the paper's CNN leaves in its blocks' BatchNorm statistics when it sizes each block
    by a train-mode forward of one zero image (CaFoBlock.get_output_shape): the convolution has
    no bias, so every channel's batch mean and variance are 0, and one momentum update moves
    the running mean to 0 and the running variance from 1 to 1 - momentum (0.9). Written as that
    update, not as the forward itself, which a 1x1 map (three blocks on 8x8 digits) refuses."""
    for bn in blocks.modules():
        if isinstance(bn, nn.BatchNorm2d):
            momentum = bn.momentum if bn.momentum is not None else 1.0
            bn.running_mean.mul_(1 - momentum)
            bn.running_var.mul_(1 - momentum)
            bn.num_batches_tracked += 1


def _check(p: CaFoParams) -> None:
    positive = {
        "predictor_lr": p.predictor_lr,
        "dfa_lr": p.dfa_lr,
        "batch_size": p.batch_size,
        "dfa_epochs": p.dfa_epochs,
    }
    non_negative = {
        "ridge_lambda": p.ridge_lambda,
        "predictor_weight_decay": p.predictor_weight_decay,
        "dfa_weight_decay": p.dfa_weight_decay,
    }
    problems = [f"{k} must be > 0, got {v}" for k, v in positive.items() if v <= 0]
    problems += [f"{k} must be >= 0, got {v}" for k, v in non_negative.items() if v < 0]
    if problems:
        raise BpfreeError("cafo: " + "; ".join(problems))


@ALGORITHMS.register("cafo-rand")
class CaFoRand(CascadedForward):
    name = "cafo-rand"
    train_blocks = False


@ALGORITHMS.register("cafo-dfa")
class CaFoDFA(CascadedForward):
    name = "cafo-dfa"
    train_blocks = True
