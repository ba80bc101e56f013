"""Cascaded-Forward: sparsemax is the simplex projection, the ridge solve is least squares,
random blocks stay random, DFA's updates come from the fixed feedback matrices, BatchNorm is
filled from the training data and predictions do not depend on the batch; smoke runs on
CIFAR- and MNIST-shaped data."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from bpfree.algorithms import build_algorithm, params_from_mapping
from bpfree.algorithms.cafo import ridge_solve
from bpfree.algorithms.sparsemax import sparsemax, sparsemax_loss
from bpfree.core.errors import BpfreeError
from bpfree.core.spec import EarlyStopping
from bpfree.data import Batches, DatasetInfo, DataSplits, Split, load_splits
from bpfree.engine.loop import fit
from bpfree.models import parse_arch

SMALL = DatasetInfo("small", 4, (1, 8, 8), (0.5,), (0.25,))
MNIST_LIKE = DatasetInfo("mnist-like", 10, (1, 28, 28), (0.1307,), (0.3081,))
CIFAR_LIKE = DatasetInfo("cifar-like", 10, (3, 32, 32), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), augment=True)
LOSSES = ("ce", "mse", "sl")


def build(name="cafo-rand", arch="cnn:4,6,8", info=SMALL, seed=0, **params):
    return build_algorithm(name, parse_arch(arch), info, params, seed=seed)


def random_splits(info: DatasetInfo, n=64, seed=0) -> DataSplits:
    g = torch.Generator().manual_seed(seed)

    def split(m):
        x = torch.randn(m, *info.input_shape, generator=g)
        return Split(x, torch.randint(0, info.num_classes, (m,), generator=g))

    return DataSplits(info, split(n), split(n // 2), split(n // 2))


# -- sparsemax ----------------------------------------------------------------------------------
def simplex_projection_brute_force(z: torch.Tensor) -> torch.Tensor:
    """argmin_{p in simplex} ||p - z||² by trying every support S: p_S = z_S - τ with
    τ = (Σ_S z - 1)/|S|, feasible when p_S >= 0; the feasible one nearest to z wins."""
    best, best_distance = None, float("inf")
    c = z.shape[0]
    for size in range(1, c + 1):
        for support in itertools.combinations(range(c), size):
            idx = list(support)
            tau = (z[idx].sum() - 1) / size
            p = torch.zeros_like(z)
            p[idx] = z[idx] - tau
            if (p[idx] >= 0).all() and float((p - z).square().sum()) < best_distance:
                best, best_distance = p, float((p - z).square().sum())
    return best


def test_sparsemax_is_the_projection_onto_the_simplex():
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(30, 5, generator=g, dtype=torch.float64) * s for s in (0.1, 1.0, 3.0)])
    z = torch.cat([z, torch.tensor([[1.0, 1.0, 1.0, 0.0, -2.0], [0.2, 0.2, 0.2, 0.2, 0.2]], dtype=torch.float64)])
    p = sparsemax(z)
    assert torch.allclose(p.sum(1), torch.ones(len(z), dtype=torch.float64))
    assert (p >= 0).all()
    assert (p == 0).sum() > 50  # exact zeros, not tiny positives
    expected = torch.stack([simplex_projection_brute_force(row) for row in z])
    assert torch.allclose(p, expected, atol=1e-12)


def test_sparsemax_loss_gradient_is_sparsemax_minus_onehot():
    g = torch.Generator().manual_seed(1)
    z = (torch.randn(40, 6, generator=g, dtype=torch.float64) * 2).requires_grad_()
    y = torch.randint(0, 6, (40,), generator=g)
    loss = sparsemax_loss(z, y)
    loss.backward()
    expected = (sparsemax(z.detach()) - F.one_hot(y, 6)) / len(y)  # the mean over the batch
    assert torch.allclose(z.grad, expected, atol=1e-12)


def test_sparsemax_loss_is_zero_exactly_when_the_margin_is_at_least_one():
    y = torch.tensor([0, 1])
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.5, 0.0]])
    assert float(sparsemax_loss(z, y)) == pytest.approx(0.0, abs=1e-7)
    assert float(sparsemax_loss(z, torch.tensor([1, 0]))) > 0.5


# -- ridge --------------------------------------------------------------------------------------
def test_ridge_solve_matches_least_squares_on_the_augmented_system():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64)
    y = F.one_hot(torch.randint(0, 3, (50,), generator=g), 3).double()
    lam = 0.7
    w = ridge_solve(x.T @ x, x.T @ y, lam)
    # min ||XW - Y||² + λ||W||²  ==  min ||[X; √λ I] W - [Y; 0]||²
    a = torch.cat([x, lam**0.5 * torch.eye(8, dtype=torch.float64)])
    b = torch.cat([y, torch.zeros(8, 3, dtype=torch.float64)])
    assert torch.allclose(w, torch.linalg.lstsq(a, b).solution, atol=1e-10)
    assert not torch.allclose(w, torch.linalg.lstsq(x, y).solution, atol=1e-3)  # λ matters


@pytest.mark.parametrize("bias", [False, True])
def test_mse_predictors_are_the_ridge_solution_on_the_frozen_features(bias):
    data = random_splits(SMALL, n=80)
    algo = build("cafo-rand", predictor_loss="mse", ridge_lambda=0.5, predictor_bias=bias)
    (stage,) = algo.stages()
    assert (stage.max_epochs, stage.early_stopping) == (1, False)
    fit(algo, data, EarlyStopping(), seed=0)
    features = algo.block_features(data.train.x)
    y = F.one_hot(data.train.y, SMALL.num_classes).double()
    for x, predictor in zip(features, algo.net.predictors):
        x = x.double()
        if bias:  # a column of ones whose weight is the bias (penalised like the rest)
            x = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
        a = torch.cat([x, 0.5**0.5 * torch.eye(x.shape[1], dtype=torch.float64)])
        b = torch.cat([y, torch.zeros(x.shape[1], SMALL.num_classes, dtype=torch.float64)])
        expected = torch.linalg.lstsq(a, b).solution.T.float()
        if bias:
            assert torch.allclose(predictor.bias, expected[:, -1], atol=1e-4)
            expected = expected[:, :-1]
        else:
            assert predictor.bias is None
        assert torch.allclose(predictor.weight, expected, atol=1e-4)


# -- frozen random blocks and BatchNorm ---------------------------------------------------------
def test_cafo_rand_never_updates_its_blocks_but_fills_batchnorm_from_the_data():
    data = random_splits(SMALL, n=64)
    data.train.x.mul_(3).add_(1)  # statistics far from BatchNorm's initial 0/1
    algo = build("cafo-rand")
    before = {k: v.clone() for k, v in algo.net.body.state_dict().items()}
    predictors_before = [p.weight.clone() for p in algo.net.predictors]
    fit(algo, data, EarlyStopping(max_epochs=3), seed=0)
    after = algo.net.body.state_dict()
    for name, value in before.items():
        if "running" in name or "num_batches" in name:
            continue
        assert torch.equal(value, after[name]), name  # bitwise
    assert not torch.allclose(before["blocks.0.3.running_mean"], after["blocks.0.3.running_mean"])
    assert all(not torch.equal(b, p.weight) for b, p in zip(predictors_before, algo.net.predictors))


def test_batchnorm_statistics_are_those_of_the_training_data():
    data = random_splits(SMALL, n=64)
    algo = build("cafo-rand", batch_size=64)  # one batch: the cumulative average is the data's
    algo.calibrate_batchnorm(Batches(data.train, seed=0))
    block = algo.net.body.blocks[0]
    with torch.no_grad():
        pre_norm = block[2](block[1](block[0](data.train.x)))  # conv -> relu -> pool
    bn = block[3]
    assert not bn.training
    assert torch.allclose(bn.running_mean, pre_norm.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, pre_norm.var((0, 2, 3), unbiased=True), rtol=1e-4)


# -- DFA ----------------------------------------------------------------------------------------
def test_dfa_gradients_come_from_the_fixed_feedback_matrices():
    torch.manual_seed(0)
    algo = build("cafo-dfa")
    algo.net.train()
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
    blocks = algo.net.body.blocks

    # the true gradient: CE through the head, backpropagated through every block
    logits = algo.net.head(algo.net.body(x))
    true = [torch.autograd.grad(F.cross_entropy(logits, y), list(b.parameters()), retain_graph=True) for b in blocks]

    # DFA's: e B_i backpropagated through block i alone, e = (softmax - Y)/N
    hidden, h = [], x
    for b in blocks:
        h = b(h.detach())
        hidden.append(h)
    error = (torch.softmax(logits, 1) - F.one_hot(y, 4)).detach() / len(y)
    feedback = algo.feedback
    assert len(feedback) == len(blocks) - 1
    for b_i in feedback:
        assert torch.allclose(b_i.norm(dim=1), torch.ones(4))  # rows unit norm
    expected = [
        torch.autograd.grad(h_i, list(b.parameters()), grad_outputs=(error @ b_i).view_as(h_i))
        for b, h_i, b_i in zip(blocks, hidden, feedback)
    ]

    algo.net.zero_grad()
    surrogate, _ = algo.dfa_objective(x, y)
    surrogate.backward()
    for i, b in enumerate(blocks):
        got = [p.grad for p in b.parameters()]
        if i < len(blocks) - 1:
            for gp, ep in zip(got, expected[i]):
                assert torch.allclose(gp, ep, atol=1e-6)
            conv_cosine = F.cosine_similarity(got[0].flatten(), true[i][0].flatten(), dim=0)
            assert conv_cosine < 0.9  # not the true gradient
        else:  # the last block: the head's true gradient
            for gp, tp in zip(got, true[i]):
                assert torch.allclose(gp, tp, atol=1e-6)
    head_true = torch.autograd.grad(F.cross_entropy(logits, y), list(algo.net.head.parameters()))
    for p, tp in zip(algo.net.head.parameters(), head_true):
        assert torch.allclose(p.grad, tp, atol=1e-6)


def test_dfa_stage_trains_the_blocks_then_freezes_them():
    data = random_splits(SMALL, n=64)
    algo = build("cafo-dfa", dfa_epochs=2)
    stages = [(s.name, s.max_epochs, s.early_stopping) for s in algo.stages()]
    assert stages == [("dfa", 2, False), ("predictors", None, True)]
    feedback_before = [b.clone() for b in algo.feedback]
    conv_before = algo.net.body.blocks[0][0].weight.clone()
    result = fit(algo, data, EarlyStopping(max_epochs=2), seed=0)
    assert [r.stage for r in result.history] == ["dfa", "dfa", "predictors", "predictors"]
    assert not torch.equal(conv_before, algo.net.body.blocks[0][0].weight)
    assert all(torch.equal(a, b) for a, b in zip(feedback_before, algo.feedback))
    assert not any(p.requires_grad for p in algo.net.body.parameters())


# -- prediction ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cafo-rand", "cafo-dfa"])
def test_predictions_do_not_depend_on_the_test_batch_size(name):
    data = random_splits(SMALL, n=64)
    algo = build(name, dfa_epochs=1)
    fit(algo, data, EarlyStopping(max_epochs=2), seed=0)
    algo.net.train()  # predict must switch to eval mode itself
    x = data.test.x
    whole = algo.predict(x)
    one_by_one = torch.cat([algo.predict(x[i : i + 1]) for i in range(len(x))])
    assert torch.allclose(whole, one_by_one, atol=1e-5)
    probabilities = build(name, dfa_epochs=1, aggregate="probabilities")
    probabilities.load_state_dict(algo.state_dict())
    assert torch.allclose(probabilities.predict(x).sum(1), torch.full((len(x),), 3.0))  # 3 blocks'


def test_default_predicts_with_summed_logits_of_biased_predictors():
    """The paper's code: predictors with a bias, the cascade's scores are the summed logits."""
    data = random_splits(SMALL, n=64)
    algo = build("cafo-rand")
    assert all(p.bias is not None for p in algo.net.predictors)
    fit(algo, data, EarlyStopping(max_epochs=2), seed=0)
    assert any(p.bias.abs().sum() > 0 for p in algo.net.predictors)  # the bias learns
    features = algo.block_features(data.test.x)
    logits = [f @ p.weight.T + p.bias for f, p in zip(features, algo.net.predictors)]
    assert torch.allclose(algo.predict(data.test.x), sum(logits), atol=1e-5)
    unbiased = build("cafo-rand", predictor_bias=False)
    assert all(p.bias is None for p in unbiased.net.predictors)


def test_sl_predicts_with_summed_sparsemax_probabilities():
    data = random_splits(SMALL, n=64)
    algo = build("cafo-rand", predictor_loss="sl", aggregate="probabilities")
    fit(algo, data, EarlyStopping(max_epochs=2), seed=0)
    scores = algo.block_scores(algo.block_features(data.test.x))
    assert torch.allclose(algo.predict(data.test.x), sum(sparsemax(s) for s in scores))


def test_batchnorm_keep_leaves_random_blocks_statistics_as_the_papers_sizing_forward_leaves_them():
    """The paper's code never trains cafo-rand's blocks, but its CNN sizes each block by one
    train-mode forward of a zero image (CaFoBlock.get_output_shape): every running variance
    moves from 1 to 0.9 and the means stay 0. ``keep`` holds exactly that (not PyTorch's 0/1)."""
    data = random_splits(SMALL, n=64)
    data.train.x.mul_(3).add_(1)
    kept = build("cafo-rand", arch="cnn:4,6", batchnorm="keep")
    fit(kept, data, EarlyStopping(max_epochs=2), seed=0)
    paper = build("cafo-rand", arch="cnn:4,6")  # the same blocks, sized as the paper's code does
    shape = (1, *SMALL.input_shape)
    with torch.no_grad():
        for block in paper.net.body.blocks:
            block.train()
            out = block(torch.zeros(shape))
            shape = out.shape
    for ours, theirs in zip(kept.net.body.blocks, paper.net.body.blocks):
        assert torch.equal(ours[3].running_mean, theirs[3].running_mean)
        assert torch.allclose(ours[3].running_var, theirs[3].running_var)
        assert torch.allclose(ours[3].running_var, torch.full_like(ours[3].running_var, 0.9))
    recomputed = build("cafo-rand")
    fit(recomputed, data, EarlyStopping(max_epochs=2), seed=0)
    assert not torch.equal(recomputed.net.body.blocks[0][3].running_mean, kept.net.body.blocks[0][3].running_mean)


# -- parameters ---------------------------------------------------------------------------------
def test_bad_parameters_fail_with_a_clear_error():
    with pytest.raises(BpfreeError, match="predictor_loss"):
        params_from_mapping("cafo-rand", {"predictor_loss": "hinge"})
    with pytest.raises(BpfreeError, match="ridge_lambda"):
        build("cafo-rand", ridge_lambda=-1.0)
    with pytest.raises(BpfreeError, match="dfa_epochs"):
        build("cafo-dfa", dfa_epochs=0)
    with pytest.raises(BpfreeError, match="cnn"):
        build("cafo-dfa", arch="mlp:10")


# -- smoke runs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("name", ["cafo-rand", "cafo-dfa"])
def test_cifar_shaped_smoke(name, loss):
    data = random_splits(CIFAR_LIKE, n=32)
    algo = build(name, info=CIFAR_LIKE, predictor_loss=loss, dfa_epochs=1, batch_size=16)
    result = fit(algo, data, EarlyStopping(max_epochs=1), seed=0)
    assert result.status == "ok"
    expected_stages = (["dfa"] if name == "cafo-dfa" else []) + ["predictors"]
    assert [r.stage for r in result.history] == expected_stages
    assert 0.0 <= algo.accuracy(data.test) <= 1.0


@pytest.mark.parametrize("name", ["cafo-rand", "cafo-dfa"])
def test_mnist_shaped_smoke(name):
    data = random_splits(MNIST_LIKE, n=48)
    algo = build(name, info=MNIST_LIKE, dfa_epochs=1, batch_size=16)
    assert [tuple(s) for s in algo.net.body.block_shapes] == [(4, 14, 14), (6, 7, 7), (8, 3, 3)]
    result = fit(algo, data, EarlyStopping(max_epochs=1), seed=0)
    assert result.status == "ok"
    assert algo.predict(data.test.x).shape == (24, 10)


def test_cafo_rand_learns_digits():
    data = load_splits("digits", seed=1)
    algo = build("cafo-rand", arch="cnn:8,16,32", info=data.info, seed=1)
    fit(algo, data, EarlyStopping(max_epochs=15), seed=1)
    assert algo.accuracy(data.test) > 0.9


def test_per_predictor_stopping_freezes_each_predictor_when_its_own_loss_stops_improving():
    """The paper's code stops each predictor on its own validation CE; a stopped predictor keeps
    its weights while the others train on, and the stage ends when all three have stopped."""
    data = random_splits(SMALL, n=96)
    algo = build("cafo-rand", stopping="per-predictor", predictor_lr=0.05)
    (stage,) = algo.stages()
    assert stage.parts == ("predictor1", "predictor2", "predictor3") and not stage.restore_best
    frozen_at: dict[int, torch.Tensor] = {}
    real_stop = algo.stop_part

    def stop_part(stage, index):
        real_stop(stage, index)
        frozen_at[index] = algo.net.predictors[index].weight.detach().clone()

    algo.stop_part = stop_part
    result = fit(algo, data, EarlyStopping(patience=2, max_epochs=60), seed=0)
    assert set(frozen_at) == {0, 1, 2}  # every predictor stopped before the budget
    for index, weight in frozen_at.items():  # and kept the weights it stopped with
        assert torch.equal(algo.net.predictors[index].weight, weight)
    stopped = [r.extra["parts_stopped"] for r in result.history]
    assert stopped == sorted(stopped) and stopped[-1] == 3 and result.epochs < 60


def test_drop_last_trains_on_full_batches_only():
    """The paper's training loaders drop each epoch's last partial batch (drop_last=True)."""
    data = random_splits(SMALL, n=100)
    for drop_last, expected in ((False, [32, 32, 32, 4]), (True, [32, 32, 32])):
        algo = build("cafo-dfa", batch_size=32, dfa_epochs=1, drop_last=drop_last)
        sizes = []
        real = algo.dfa_objective

        def spy(x, y, real=real, sizes=sizes):
            sizes.append(len(y))
            return real(x, y)

        algo.dfa_objective = spy
        fit(algo, data, EarlyStopping(max_epochs=1), seed=0)
        assert sizes == expected
