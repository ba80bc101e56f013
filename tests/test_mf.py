"""Mono-Forward: local gradients equal the closed forms of docs/algorithms.md#mono-forward-mf, layers stay isolated and
frozen, stages are the layers, and a smoke run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bpfree.algorithms import build_algorithm
from bpfree.core.errors import BpfreeError
from bpfree.core.registry import DATASETS
from bpfree.core.spec import EarlyStopping
from bpfree.data import Batches, DatasetInfo, DataSplits, Split
from bpfree.engine.loop import fit
from bpfree.models import parse_arch

SMALL = DatasetInfo("small", 3, (1, 2, 2), (0.5,), (0.25,))  # 4 inputs, 3 classes


def build(arch="mlp:5,6", info=SMALL, seed=0, **params):
    return build_algorithm("mf", parse_arch(arch), info, params, seed=seed)


def small_splits(n=96, seed=0, info=SMALL) -> DataSplits:
    g = torch.Generator().manual_seed(seed)

    def split(m):
        x = torch.randn(m, *info.input_shape, generator=g)
        return Split(x, torch.randint(0, info.num_classes, (m,), generator=g))

    return DataSplits(info, split(n), split(n // 2), split(n // 2))


def test_autograd_gradients_equal_the_closed_forms():
    torch.manual_seed(0)
    algo = build("mlp:5,6")
    i = 1
    a_prev = torch.relu(torch.randn(7, 5))  # a_{i-1}: 7 samples of layer 1's width
    y = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    loss = algo.layer_loss(i, a_prev, y)  # mean CE over the batch
    loss.backward()

    W, b, M = algo.layers[i].weight, algo.layers[i].bias, algo.net.projections[i].weight
    z = a_prev @ W.T + b
    a = torch.relu(z)
    assert 0 < (z > 0).float().mean() < 1  # the ReLU mask matters in this example
    error = (torch.softmax(a @ M.T, dim=1) - F.one_hot(y, 3).float()) / len(y)  # mean CE
    grad_M = error.T @ a  # (softmax(G) − Y)ᵀ a_i
    grad_W = ((error @ M) * (z > 0)).T @ a_prev  # [(softmax(G) − Y) M ⊙ 1(z>0)]ᵀ a_{i-1}
    assert torch.allclose(M.grad, grad_M, atol=1e-6)
    assert torch.allclose(W.grad, grad_W, atol=1e-6)
    assert algo.net.projections[i].bias is None


def test_no_gradient_reaches_the_layer_below():
    algo = build("mlp:5,6,4", training="simultaneous")
    x, y = torch.randn(8, 1, 2, 2), torch.randint(0, 3, (8,))
    a1, _ = algo.layer_forward(0, x.flatten(1))
    _, g2 = algo.layer_forward(1, a1)  # a1 still carries layer 1's graph
    F.cross_entropy(g2, y).backward()
    assert algo.layers[0].weight.grad is None and algo.net.projections[0].weight.grad is None
    assert algo.layers[1].weight.grad.abs().sum() > 0


def test_stages_are_the_layers_or_one_for_simultaneous():
    assert [s.name for s in build("mlp:5,6,4").stages()] == ["layer1", "layer2", "layer3"]
    assert [s.max_epochs for s in build("mlp:5,6", epochs_per_layer=7).stages()] == [7, 7]
    assert [s.name for s in build("mlp:5,6", training="simultaneous").stages()] == ["train"]
    with pytest.raises(BpfreeError, match="epochs_per_layer"):
        build(epochs_per_layer=0)


def test_layerwise_training_freezes_the_layers_below():
    data = small_splits()
    algo = build("mlp:5,6")
    batches = Batches(data.train, seed=0)
    first, second = algo.stages()

    algo.begin_stage(first, 3)
    before_layer1 = algo.layers[0].weight.detach().clone()
    algo.train_epoch(first, batches)
    assert not torch.equal(before_layer1, algo.layers[0].weight)  # stage 1 trains layer 1
    algo.end_stage(first)
    frozen = {k: v.clone() for k, v in algo.net.state_dict().items() if k.endswith((".0.weight", ".0.bias"))}
    before_layer2 = algo.layers[1].weight.detach().clone()

    algo.begin_stage(second, 3)
    for _ in range(3):
        algo.train_epoch(second, batches)
    state = algo.net.state_dict()
    assert all(torch.equal(state[k], v) for k, v in frozen.items()) and len(frozen) == 3
    assert not torch.equal(before_layer2, algo.layers[1].weight)
    assert not any(p.requires_grad for p in algo.layers[0].parameters())


def test_evaluate_reports_the_stage_layer_own_cross_entropy():
    data = small_splits()
    algo = build("mlp:5,6")
    first, second = algo.stages()
    with torch.no_grad():
        a1 = torch.relu(algo.layers[0](data.val.x.flatten(1)))
        a2 = torch.relu(algo.layers[1](a1))
        g1, g2 = algo.net.projections[0](a1), algo.net.projections[1](a2)
    for stage, g in ((first, g1), (second, g2)):
        result = algo.evaluate(stage, data.val)
        assert result.loss == pytest.approx(F.cross_entropy(g, data.val.y).item(), rel=1e-5)
        assert result.accuracy == pytest.approx((g.argmax(1) == data.val.y).float().mean().item())
    assert torch.allclose(algo.predict(data.val.x), g2)
    summing = build("mlp:5,6", prediction="sum")
    summing.net.load_state_dict(algo.net.state_dict())
    assert torch.allclose(summing.predict(data.val.x), g1 + g2)


def test_cached_frozen_features_give_the_batches_computed_per_batch():
    data = small_splits()
    algo = build("mlp:5,6", batch_size=16)
    algo.begin_stage(algo.stages()[1], 1)
    cached = list(algo._layer_inputs(1, Batches(data.train, seed=4)))
    direct = [(algo.features(x, 1), y) for x, y in Batches(data.train, seed=4).epoch(16)]
    assert len(cached) == len(direct) == 6
    for (a, ya), (b, yb) in zip(cached, direct):
        assert torch.equal(ya, yb) and torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("training", ["layerwise", "simultaneous"])
def test_smoke_one_epoch_on_mnist_shaped_data(training):
    info = DATASETS.get("mnist").info
    data = small_splits(n=256, info=info)
    algo = build("mlp:32,32", info=info, training=training)
    result = fit(algo, data, EarlyStopping(max_epochs=1), seed=0)
    assert result.status == "ok"
    expected = ["layer1", "layer2"] if training == "layerwise" else ["train"]
    assert [r.stage for r in result.history] == expected
    assert algo.predict(data.test.x).shape == (128, 10)
    assert 0.0 <= algo.accuracy(data.test) <= 1.0


@pytest.mark.parametrize("layer_end", ["last", "best"])
def test_a_layer_ends_with_its_last_epoch_or_its_best(layer_end):
    """The paper's code keeps each layer's last epoch; ``best`` restores the epoch of lowest
    validation CE when the run's policy restores."""
    data = small_splits(n=96)
    algo = build("mlp:32,32", lr=0.05, layer_end=layer_end)  # a high rate: the CE wanders
    snapshots = []

    def snapshot(record):
        layer = algo.layers[0] if record.stage == "layer1" else algo.layers[1]
        snapshots.append((record.stage, record.val_loss, layer.weight.detach().clone()))

    fit(algo, data, EarlyStopping(max_epochs=6, patience=6, restore_best=True), seed=0, on_epoch_end=snapshot)
    for i, stage in enumerate(["layer1", "layer2"]):
        mine = [(loss, w) for s, loss, w in snapshots if s == stage]
        best = min(range(len(mine)), key=lambda k: mine[k][0])
        assert best != len(mine) - 1 or stage == "layer2"  # layer 1's best is not its last here
        expected = mine[-1][1] if layer_end == "last" else mine[best][1]
        assert torch.equal(algo.layers[i].weight, expected)
