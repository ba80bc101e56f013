"""The paper's way of training, kept as a yardstick for ``bpfree bench``.

Each reference loop trains the *same* model (a freshly built algorithm's ``net``, so the same
initial weights) with the same losses, optimiser and batch size as the algorithm does, but
the way the paper's code does it:

- a ``torch.utils.data.DataLoader`` over a dataset held on the CPU, every batch collated
  sample by sample and copied to the device with ``.to(device)``; the dataset is either
  :class:`PixelDataset` (uint8 pixels converted and normalised per sample, as torchvision's
  datasets with ``ToTensor()``/``Normalize`` deliver them to the paper's code) or a plain
  ``TensorDataset`` of normalised tensors (:func:`tensor_dataset`);
- ``loss.item()`` after every step (a device sync per batch) and the optimiser's default
  (per-parameter) implementation;
- FF's goodness prediction as a Python loop over the C labels;
- CaFo's and MF's frozen features recomputed for every batch of every epoch.

The math is written out here a second time, from docs/algorithms.md, rather than calling the
algorithm's own methods: tests train both on the same batches and compare the losses, so
each implementation checks the other. Only the pure equations (RMS norm, goodness, the FF
loss, the wrong-label draw) are shared.

The batch order comes from :class:`EpochSampler`, one seeded permutation per epoch, the
order :class:`bpfree.data.Batches` draws from the same seed; so a reference loop and the
algorithm see the same batches and their losses can be compared step for step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler, TensorDataset
from torchvision.transforms import v2

from bpfree.algorithms import Algorithm
from bpfree.algorithms.bp import Backprop
from bpfree.algorithms.cafo import CascadedForward, combine_block_scores, predictor_loss
from bpfree.algorithms.ff import ForwardForward, ff_loss, ff_relu, goodness, rms_normalise, uniform_wrong_labels
from bpfree.algorithms.mf import MonoForward
from bpfree.core.errors import BpfreeError
from bpfree.data import Split


def tensor_dataset(split: Split) -> TensorDataset:
    """Normalised images and labels, copied to the CPU."""
    return TensorDataset(split.x.cpu(), split.y.cpu())


class PixelDataset(Dataset):
    """uint8 images (N, C, H, W) on the CPU, each scaled to [0, 1] and normalised when it is
    fetched: what ``torchvision.datasets.MNIST(transform=Compose([ToTensor(), Normalize(...)]))``
    hands the paper's DataLoader (here without the PIL round trip, so if anything cheaper)."""

    def __init__(
        self, pixels: torch.Tensor, labels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> None:
        self.pixels, self.labels = pixels.cpu(), labels.cpu()
        self.transform = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.pixels[index]), self.labels[index]


class EpochSampler(Sampler[int]):
    """One permutation per epoch from a seeded CPU generator: the order ``Batches.epoch`` gives
    for the same seed. (``RandomSampler`` draws a second, unused permutation every epoch, so
    from the second epoch on its batches would differ.)"""

    def __init__(self, n: int, seed: int) -> None:
        self.n = n
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        return iter(torch.randperm(self.n, generator=self.generator).tolist())


class ReferenceLoop:
    """Trains ``algo.net`` stage by stage for a fixed number of epochs; ``fit`` returns the
    mean training loss of every epoch, as ``algo.train_epoch`` would have."""

    def __init__(self, algo: Algorithm, train: Dataset, seed: int) -> None:
        self.algo = algo
        self.params = algo.params
        self.device = algo.device
        self.dataset = train
        self.sampler = EpochSampler(len(self.dataset), seed)

    def loader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.params.batch_size, sampler=self.sampler)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for x, y in self.loader():
            yield x.to(self.device), y.to(self.device)

    def fit(self, epochs: int) -> list[float]:
        raise NotImplementedError

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def accuracy(self, test: Dataset, batch_size: int) -> float:
        self.algo.net.eval()
        correct = 0
        for x, y in DataLoader(test, batch_size=batch_size):
            x, y = x.to(self.device), y.to(self.device)
            correct += (self.scores(x).argmax(1) == y).sum().item()
        return correct / len(test)

    @staticmethod
    def step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()


class ReferenceBP(ReferenceLoop):
    def fit(self, epochs: int) -> list[float]:
        model, p = self.algo.net.model, self.params
        optimizer = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
        history = []
        for _ in range(epochs):
            model.train()
            losses = [self.step(optimizer, F.cross_entropy(model(x), y)) for x, y in self.batches()]
            history.append(sum(losses) / len(losses))
        return history

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.algo.net.model(x)


class ReferenceFF(ReferenceLoop):
    def __init__(self, algo: ForwardForward, train: Dataset, seed: int) -> None:
        super().__init__(algo, train, seed)
        if self.params.negatives != "uniform":
            raise BpfreeError("the reference FF loop draws uniform negatives only")
        self.layers = algo.net.body.layers
        self.num_classes = algo.num_classes
        self.label_value = algo.label_value
        depth = len(self.layers)
        self.readout = list(range(1, depth)) if depth > 1 else [0]

    def with_label(self, x: torch.Tensor, labels: torch.Tensor | int) -> torch.Tensor:
        z = x.flatten(1).clone()
        if isinstance(labels, int):
            z[:, : self.num_classes] = 0.0
            z[:, labels] = self.label_value
        else:
            z[:, : self.num_classes] = F.one_hot(labels, self.num_classes).float() * self.label_value
        return z

    def hidden(self, z: torch.Tensor) -> list[torch.Tensor]:
        eps, hs = self.params.eps, []
        straight_through = self.params.relu_grad == "straight_through"
        z = rms_normalise(z, eps)
        for layer in self.layers:
            h = ff_relu(layer(z.detach()), straight_through)
            hs.append(h)
            z = rms_normalise(h, eps)
        return hs

    def neutral_features(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1).clone()
        z[:, : self.num_classes] = self.label_value / self.num_classes
        with torch.no_grad():
            hs = self.hidden(z)
            return torch.cat([rms_normalise(hs[i], self.params.eps) for i in self.readout], 1)

    def fit(self, epochs: int) -> list[float]:
        p, net = self.params, self.algo.net
        groups = [
            {"params": list(net.body.parameters()), "lr": p.lr, "weight_decay": p.weight_decay},
            {
                "params": list(net.classifier.parameters()),
                "lr": p.classifier_lr,
                "weight_decay": p.classifier_weight_decay,
            },
        ]
        optimizer = torch.optim.SGD(groups, momentum=p.momentum) if p.optimizer == "sgd" else torch.optim.AdamW(groups)
        generator = torch.Generator(device=self.device).manual_seed(self.algo.seed)
        softmax_mode = p.prediction == "softmax"
        history = []
        for epoch in range(1, epochs + 1):
            # loeweX's get_linear_cooldown_lr: linear to ~0 over the second half
            factor = 1.0 if epoch <= epochs // 2 else 2 * (1 + epochs - epoch) / epochs
            for group, base in zip(optimizer.param_groups, (p.lr, p.classifier_lr)):
                group["lr"] = base * factor
            net.train()
            losses = []
            for x, y in self.batches():
                logits = net.classifier(self.neutral_features(x)) if softmax_mode else None
                wrong = uniform_wrong_labels(y, self.num_classes, generator)
                n = len(y)
                hs = self.hidden(torch.cat([self.with_label(x, y), self.with_label(x, wrong)]))
                loss = 0.0
                for i, (layer, h) in enumerate(zip(self.layers, hs)):
                    g = goodness(h)
                    loss = loss + ff_loss(g[:n], g[n:], float(layer.out_features))
                    if p.peer_weight > 0:
                        loss = loss + p.peer_weight * self.peer_pressure(i, h[:n])
                if softmax_mode:
                    loss = loss + F.cross_entropy(logits, y)
                losses.append(self.step(optimizer, loss))
            history.append(sum(losses) / len(losses))
        return history

    def peer_pressure(self, i: int, h_pos: torch.Tensor) -> torch.Tensor:
        running = getattr(self.algo.net, f"peer_mean{i}")
        m = self.params.peer_momentum * running + (1 - self.params.peer_momentum) * h_pos.mean(0)
        running.copy_(m.detach())
        return (m.mean() - m).pow(2).mean()

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        if self.params.prediction == "softmax":
            return self.algo.net.classifier(self.neutral_features(x))
        return self.goodness_per_label(x)

    def goodness_per_label(self, x: torch.Tensor) -> torch.Tensor:
        """One forward pass per label, as the paper's code predicts."""
        columns = []
        for label in range(self.num_classes):
            hs = self.hidden(self.with_label(x, label))
            columns.append(sum(goodness(hs[i]) for i in self.readout))
        return torch.stack(columns, 1)


class ReferenceMF(ReferenceLoop):
    def __init__(self, algo: MonoForward, train: Dataset, seed: int) -> None:
        super().__init__(algo, train, seed)
        if self.params.training != "layerwise":
            raise BpfreeError("the reference MF loop trains layer by layer only")
        self.layers = algo.net.body.layers
        self.projections = algo.net.projections

    def fit(self, epochs: int) -> list[float]:
        p, history = self.params, []
        for i, (layer, projection) in enumerate(zip(self.layers, self.projections)):
            optimizer = torch.optim.Adam(
                [*layer.parameters(), *projection.parameters()], lr=p.lr, weight_decay=p.weight_decay
            )
            for _ in range(epochs):
                self.algo.net.train()
                losses = []
                for x, y in self.batches():
                    with torch.no_grad():  # the frozen layers below, again for every batch
                        a = x.flatten(1)
                        for frozen in self.layers[:i]:
                            a = torch.relu(frozen(a))
                    goodness_i = projection(torch.relu(layer(a)))
                    losses.append(self.step(optimizer, F.cross_entropy(goodness_i, y)))
                history.append(sum(losses) / len(losses))
            layer.requires_grad_(False)
            projection.requires_grad_(False)
        return history

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        a, goodness_per_layer = x.flatten(1), []
        for layer, projection in zip(self.layers, self.projections):
            a = torch.relu(layer(a))
            goodness_per_layer.append(projection(a))
        if self.params.prediction == "last":
            return goodness_per_layer[-1]
        return torch.stack(goodness_per_layer).sum(0)


class ReferenceCaFo(ReferenceLoop):
    def __init__(self, algo: CascadedForward, train: Dataset, seed: int) -> None:
        super().__init__(algo, train, seed)
        if self.params.predictor_loss == "mse":
            raise BpfreeError("the reference CaFo loop trains CE or SL predictors only")
        self.body = algo.net.body
        self.blocks = algo.net.body.blocks
        self.predictors = algo.net.predictors

    def fit(self, epochs: int) -> list[float]:
        history = []
        if self.algo.train_blocks:
            history += self.fit_dfa(epochs)
            self.blocks.requires_grad_(False)
        if self.params.batchnorm == "recompute":
            self.fill_batchnorm_statistics()
        p = self.params
        optimizer = torch.optim.Adam(
            self.predictors.parameters(), lr=p.predictor_lr, weight_decay=p.predictor_weight_decay
        )
        for _ in range(epochs):
            losses = []
            for x, y in self.batches():
                features = self.block_features(x)  # the frozen blocks, again for every batch
                loss = sum(predictor_loss(p.predictor_loss, w(f), y) for w, f in zip(self.predictors, features))
                losses.append(self.step(optimizer, loss))
            history.append(sum(losses) / len(losses))
        return history

    def fit_dfa(self, epochs: int) -> list[float]:
        """Direct Feedback Alignment with explicit gradients: block i < L gets δh_i = e B_i."""
        head, p = self.algo.net.head, self.params
        feedback = [getattr(self.algo.net, f"feedback{i}") for i in range(len(self.blocks) - 1)]
        optimizer = torch.optim.Adam(
            [*self.blocks.parameters(), *head.parameters()], lr=p.dfa_lr, weight_decay=p.dfa_weight_decay
        )
        history = []
        for _ in range(epochs):
            self.algo.net.train()
            losses = []
            for x, y in self.batches():
                h, hidden = x, []
                for block in self.blocks:
                    h = block(h.detach())
                    hidden.append(h)
                logits = head(h.flatten(1))
                loss = F.cross_entropy(logits, y)
                error = (torch.softmax(logits, 1) - F.one_hot(y, logits.shape[1]).float()).detach() / len(y)
                deltas = [(error @ b).view_as(h_i) for h_i, b in zip(hidden[:-1], feedback)]
                optimizer.zero_grad()
                torch.autograd.backward([loss, *hidden[:-1]], [None, *deltas])
                optimizer.step()
                losses.append(loss.item())
            history.append(sum(losses) / len(losses))
        return history

    @torch.no_grad()
    def fill_batchnorm_statistics(self) -> None:
        """One train-mode pass with a cumulative average, as the algorithm does before its
        predictors learn (identical math needs the identical statistics)."""
        norms = [m for m in self.blocks.modules() if isinstance(m, nn.BatchNorm2d)]
        momenta = [bn.momentum for bn in norms]
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None
        self.body.train()
        for x, _ in self.batches():
            self.body(x)
        for bn, momentum in zip(norms, momenta):
            bn.momentum = momentum

    @torch.no_grad()
    def block_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        self.body.eval()
        features, h = [], x
        for block in self.blocks:
            h = block(h)
            features.append(h.flatten(1))
        return features

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        scores = [w(f) for w, f in zip(self.predictors, self.block_features(x))]
        return combine_block_scores(self.params.predictor_loss, self.params.aggregate, scores)


REFERENCES: dict[type[Algorithm], type[ReferenceLoop]] = {
    Backprop: ReferenceBP,
    ForwardForward: ReferenceFF,
    MonoForward: ReferenceMF,
    CascadedForward: ReferenceCaFo,  # cafo-rand and cafo-dfa
}


def reference_loop(algo: Algorithm, train: Dataset, seed: int) -> ReferenceLoop:
    """The paper-style loop for ``algo`` over ``train`` (a CPU dataset of (image, label))."""
    for klass, loop in REFERENCES.items():
        if isinstance(algo, klass):
            return loop(algo, train, seed)
    raise BpfreeError(f"no reference loop for algorithm {algo.name!r}; have: bp, ff, mf, cafo-*")
