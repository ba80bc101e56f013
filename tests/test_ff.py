"""Forward-Forward: the equations of docs/algorithms.md#forward-forward-ff, gradient isolation, and a smoke run."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bpfree.algorithms import build_algorithm
from bpfree.algorithms.ff import (
    ff_loss,
    ff_relu,
    goodness,
    hard_wrong_labels,
    rms_normalise,
    uniform_wrong_labels,
)
from bpfree.core.registry import DATASETS
from bpfree.core.spec import EarlyStopping
from bpfree.data import DatasetInfo, DataSplits, Split
from bpfree.engine.loop import fit
from bpfree.models import parse_arch

SMALL = DatasetInfo("small", 4, (1, 2, 3), (0.5,), (0.25,))  # 6 inputs, 4 classes


def build(arch="mlp:5,7,3", info=SMALL, seed=0, **params):
    return build_algorithm("ff", parse_arch(arch), info, params, seed=seed)


def softplus(v: float) -> float:
    return math.log1p(math.exp(v))


def test_goodness_is_the_sum_of_squares_and_threshold_is_the_width():
    h = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 4.0]])
    assert goodness(h).tolist() == [5.0, 25.0]
    assert build("mlp:5,7,3").thresholds == [5.0, 7.0, 3.0]
    # BCE with logits G − θ over positives (label 1) and negatives (label 0), averaged over all
    # 2N samples as the paper's code: (softplus(−(G⁺ − θ)) + softplus(G⁻ − θ)) / 2 per pair
    expected = (softplus(-(5 - 3)) + softplus(25 - 3)) / 2
    assert ff_loss(torch.tensor([5.0]), torch.tensor([25.0]), 3.0).item() == pytest.approx(expected)
    pair = ff_loss(torch.tensor([5.0, 25.0]), torch.tensor([25.0, 5.0]), 3.0).item()
    assert pair == pytest.approx((softplus(-2) + softplus(22) + softplus(-22) + softplus(2)) / 4)
    g_pos, g_neg = torch.tensor([5.0, 1.0]), torch.tensor([25.0, 2.0])
    bce = F.binary_cross_entropy_with_logits(torch.cat([g_pos, g_neg]) - 3.0, torch.tensor([1.0, 1, 0, 0]))
    assert ff_loss(g_pos, g_neg, 3.0).item() == pytest.approx(bce.item())


def test_rms_normalise_scales_without_subtracting_the_mean():
    x = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    out = rms_normalise(x, eps=0.0)
    assert torch.allclose(out[0], x[0] / math.sqrt(12.5))
    assert torch.allclose(out[1], torch.tensor([1.0, 1.0]))  # a constant vector stays put
    assert torch.allclose(out.pow(2).mean(1), torch.ones(2))


def test_layer_loss_on_hand_set_weights():
    algo = build("mlp:2", peer_weight=0.0)
    layer = algo.layers[0]
    with torch.no_grad():
        layer.weight.zero_()
        layer.weight[0, 4] = 1.0  # unit 0 copies input 4, unit 1 copies input 5 (past the label)
        layer.weight[1, 5] = 2.0
        layer.bias.zero_()
    x = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 1.0]]).view(1, 1, 2, 3)
    # embedded: label value (1−0.5)/0.25 = 2 in slot y; rms over 6 values
    pos = algo.embed(x, torch.tensor([0]))
    assert pos.tolist() == [[2.0, 0.0, 0.0, 0.0, 1.0, 1.0]]
    scale = 1 / math.sqrt((4 + 1 + 1) / 6)
    g = (1 * scale) ** 2 + (2 * scale) ** 2  # same for any label: the weights ignore the slots
    (loss,) = algo.layer_losses(x, torch.tensor([0]), torch.tensor([1]))
    assert loss.item() == pytest.approx((softplus(-(g - 2)) + softplus(g - 2)) / 2, rel=1e-5)


def test_label_embedding_and_neutral_label():
    algo = build()
    x = torch.randn(3, 1, 2, 3)
    original = x.clone()
    embedded = algo.embed(x, torch.tensor([2, 0, 3]))
    value = (1 - 0.5) / 0.25
    assert torch.equal(embedded[:, :4], F.one_hot(torch.tensor([2, 0, 3]), 4).float() * value)
    assert torch.equal(embedded[:, 4:], x.flatten(1)[:, 4:])
    assert torch.allclose(algo.embed_neutral(x)[:, :4], torch.full((3, 4), value / 4))
    assert torch.equal(x, original)  # the batch itself is not written into
    # the paper's code writes 1.0 into the normalised image (0.0 in the other slots)
    paper = build(label_value="one").embed(x, torch.tensor([2, 0, 3]))
    assert torch.equal(paper[:, :4], F.one_hot(torch.tensor([2, 0, 3]), 4).float())


def test_straight_through_relu_passes_the_gradient_of_units_that_are_off():
    z = torch.tensor([-2.0, -0.5, 0.0, 1.5], requires_grad=True)
    out = ff_relu(z, straight_through=True)
    assert out.tolist() == [0.0, 0.0, 0.0, 1.5]
    out.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert z.grad.tolist() == [1.0, 2.0, 3.0, 4.0]  # identity backward, negatives included
    z.grad = None
    ff_relu(z, straight_through=False).backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert z.grad.tolist() == [0.0, 0.0, 0.0, 4.0]


@pytest.mark.parametrize("relu_grad", ["straight_through", "standard"])
def test_relu_gradient_option_reaches_units_that_are_off(relu_grad):
    """∂G/∂h = 2h is 0 where a unit is off, so the FF loss never moves it either way; the peer
    term (linear in h) does, through the straight-through gradient only."""
    algo = build("mlp:6", relu_grad=relu_grad, peer_weight=0.03)
    with torch.no_grad():
        algo.layers[0].weight.zero_()
        algo.layers[0].bias.copy_(torch.tensor([-1.0, -1.0, -1.0, 1.0, 2.0, 3.0]))  # 3 units off
    x, y = torch.randn(8, 1, 2, 3), torch.randint(0, 4, (8,))
    (loss,) = algo.layer_losses(x, y, uniform_wrong_labels(y, 4, algo.generator))
    loss.backward()
    off_units_moved = algo.layers[0].bias.grad[:3].abs().sum().item() > 0
    assert off_units_moved == (relu_grad == "straight_through")
    assert algo.layers[0].bias.grad[3:].abs().sum().item() > 0


def test_uniform_negatives_never_carry_the_true_label_and_cover_the_rest_evenly():
    generator = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (200_000,), generator=generator)
    wrong = uniform_wrong_labels(y, 10, generator)
    assert not (wrong == y).any()
    # every (true, wrong) pair with true != wrong is about equally likely: 1/90 each
    counts = torch.bincount(y * 10 + wrong, minlength=100).view(10, 10).float()
    off_diagonal = counts[~torch.eye(10, dtype=torch.bool)]
    expected = len(y) / 90
    assert (off_diagonal - expected).abs().max() < 0.12 * expected


def test_hard_negatives_never_carry_the_true_label_and_follow_the_scores():
    generator = torch.Generator().manual_seed(0)
    n = 20_000
    y = torch.randint(0, 4, (n,), generator=generator)
    scores = torch.tensor([5.0, 0.0, 0.0, 0.0]).repeat(n, 1)
    scores[torch.arange(n), y] = 100.0  # the true class is by far the most "plausible"
    wrong = hard_wrong_labels(y, scores, generator)
    assert not (wrong == y).any()
    # where class 0 is wrong, it dominates (e^5 against 1 and 1)
    rows = y != 0
    assert (wrong[rows] == 0).float().mean() > 0.95


def test_no_gradient_reaches_the_layer_below():
    algo = build("mlp:5,7,3")
    x, y = torch.randn(8, 1, 2, 3), torch.randint(0, 4, (8,))
    losses = algo.layer_losses(x, y, uniform_wrong_labels(y, 4, algo.generator))
    losses[1].backward()
    assert algo.layers[0].weight.grad is None and algo.layers[0].bias.grad is None
    assert algo.layers[1].weight.grad.abs().sum() > 0
    assert algo.layers[2].weight.grad is None


def test_classifier_gradient_never_reaches_ff_weights():
    algo = build("mlp:5,7,3")
    x, y = torch.randn(8, 1, 2, 3), torch.randint(0, 4, (8,))
    F.cross_entropy(algo.classifier_logits(x), y).backward()
    assert all(p.grad is None for p in algo.net.body.parameters())
    assert algo.net.classifier.weight.grad.abs().sum() > 0
    # it reads the normalised activities of layers 2..L: 7 + 3 features
    assert algo.net.classifier.in_features == 10


def test_one_layer_net_reads_out_from_its_only_layer():
    algo = build("mlp:6", prediction="softmax")
    assert algo.readout == [0] and algo.net.classifier.in_features == 6
    x = torch.randn(5, 1, 2, 3)
    assert algo.predict(x).shape == (5, 4)
    assert build("mlp:6", prediction="goodness").predict(x).shape == (5, 4)


def test_default_predicts_by_goodness_and_trains_no_classifier():
    """The paper's code reports goodness prediction; the softmax classifier is an option."""
    data = mnist_shaped(n_train=100, n_eval=20)
    algo = build("mlp:16,16", info=data.info)
    assert algo.params.prediction == "goodness"
    fit(algo, data, EarlyStopping(max_epochs=1), seed=0)
    assert torch.equal(algo.net.classifier.weight, torch.zeros_like(algo.net.classifier.weight))
    x = data.test.x
    assert torch.equal(algo.predict(x), algo.goodness_per_label(x))


def test_batched_goodness_prediction_equals_a_loop_over_labels():
    algo = build("mlp:5,7,3", prediction="goodness", seed=3)
    x = torch.randn(6, 1, 2, 3)
    batched = algo.predict(x)
    for label in range(4):
        with torch.no_grad():
            hs = list(algo.activities(algo.embed(x, torch.full((6,), label))))
        looped = goodness(hs[1]) + goodness(hs[2])  # layers 2..L, not the first
        assert torch.allclose(batched[:, label], looped, rtol=1e-5)


@pytest.mark.parametrize("init, expected", [("kaiming", 1000.0), ("paper", 392.0)])
def test_init_sets_where_first_layer_goodness_starts(init, expected):
    # kaiming N(0, 2/n_in): E[G] = n = θ. paper N(0, 1/n_out): E[G] = n_in / 2 = 392 on MNIST
    info = DATASETS.get("mnist").info
    algo = build("mlp:1000", info=info, init=init)
    assert torch.equal(algo.layers[0].bias, torch.zeros(1000))
    with torch.no_grad():
        h = next(algo.activities(algo.embed(torch.randn(512, 1, 28, 28), torch.zeros(512, dtype=torch.long))))
    assert goodness(h).mean().item() == pytest.approx(expected, rel=0.15)


def test_paper_init_draws_weights_with_std_one_over_sqrt_fan_out():
    algo = build("mlp:400,100", info=DATASETS.get("mnist").info)  # the default init
    assert algo.layers[0].weight.std().item() == pytest.approx(400**-0.5, rel=0.02)
    assert algo.layers[1].weight.std().item() == pytest.approx(100**-0.5, rel=0.02)


def test_peer_running_mean_and_cooldown():
    algo = build("mlp:5", peer_weight=0.03)
    x, y = torch.randn(8, 1, 2, 3), torch.randint(0, 4, (8,))
    with torch.no_grad():
        h_pos = next(algo.activities(algo.embed(x, y)))
    algo.layer_losses(x, y, uniform_wrong_labels(y, 4, algo.generator))
    assert torch.allclose(algo.net.peer_mean0, 0.9 * 0.5 + 0.1 * h_pos.mean(0))

    # the cooldown runs over the second half of the budget it is given, not a fixed one
    algo.begin_stage(None, 10)
    factors = []
    for epoch in range(1, 11):
        algo.epoch = epoch
        factors.append(algo._cooldown())
    assert factors[:5] == [1.0] * 5
    assert factors[5:] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])


def mnist_shaped(n_train=200, n_eval=64, seed=0) -> DataSplits:
    info = DATASETS.get("mnist").info
    g = torch.Generator().manual_seed(seed)

    def split(n):
        return Split(torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g))

    return DataSplits(info, split(n_train), split(n_eval), split(n_eval))


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"prediction": "softmax"},
        {"negatives": "hard", "optimizer": "sgd"},
        {"init": "kaiming", "label_value": "one", "relu_grad": "standard"},
    ],
    ids=["goodness", "softmax", "hard-sgd", "other-options"],
)
def test_smoke_one_epoch_on_mnist_shaped_data(params):
    data = mnist_shaped()
    algo = build("mlp:32,32", info=data.info, **params)
    before = algo.layers[1].weight.detach().clone()
    result = fit(algo, data, EarlyStopping(max_epochs=1), seed=0)
    assert result.status == "ok" and result.epochs == 1
    assert not torch.equal(before, algo.layers[1].weight)
    assert algo.predict(data.test.x).shape == (64, 10)
    assert 0.0 <= algo.accuracy(data.test) <= 1.0
