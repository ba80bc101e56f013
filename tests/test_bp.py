"""Backpropagation, the baseline every BP-free method is compared against: it must learn
digits well on both native architectures, be the BP-free model's body plus one Linear head,
and be exactly reproducible from its seed on the CPU."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import train_argv
from torch import nn

from bpfree.algorithms import build_algorithm
from bpfree.cli import main
from bpfree.core.errors import BpfreeError
from bpfree.core.registry import DATASETS
from bpfree.core.spec import EarlyStopping, Machine, RunSpec
from bpfree.data import DatasetInfo
from bpfree.engine.run import train
from bpfree.models import CNN, MLP, parse_arch

DIGITS = DATASETS.get("digits").info


def test_bp_mlp_learns_digits(bp_digits_mlp_run):
    _, _, metrics = bp_digits_mlp_run
    assert metrics["status"] == "ok"
    assert metrics["test_accuracy"] >= 0.95


def test_bp_cnn_learns_digits(tmp_path, capsys):
    # the CNN is near its best after ~5 epochs on digits (0.984 test after 6); 8 keep it quick
    code = main(train_argv(seed=7, arch="cnn:32,128,512", max_epochs=8, device="cpu", out=tmp_path))
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["arch"] == "cnn:32,128,512" and metrics["status"] == "ok"
    assert metrics["test_accuracy"] >= 0.95


def small_run(seed: int):
    cfg = RunSpec(
        algorithm="bp",
        dataset="digits",
        seed=seed,
        arch="mlp:32",
        early_stopping=EarlyStopping(max_epochs=3),
        machine=Machine(device="cpu"),
    )
    history = train(cfg).fit.history
    return [(r.epoch, r.stage, r.train_loss, r.val_loss, r.val_accuracy) for r in history]


def test_bp_is_deterministic_on_cpu():
    first, second = small_run(3), small_run(3)
    assert len(first) == 3
    assert first == second  # exact, not approximately
    assert small_run(4) != first


@pytest.mark.parametrize("spec, body_type", [("mlp:20,12", MLP), ("cnn:4,8", CNN)])
def test_bp_is_the_body_plus_one_linear_head(spec, body_type):
    algo = build_algorithm("bp", parse_arch(spec), DIGITS, seed=0)
    body, flatten, head = algo.net.model
    assert isinstance(body, body_type) and isinstance(flatten, nn.Flatten)
    assert isinstance(head, nn.Linear)
    assert (head.in_features, head.out_features) == (body.out_features, 10)
    assert algo.predict(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_bp_params_reach_the_optimizer():
    algo = build_algorithm("bp", None, DIGITS, {"lr": 0.02, "weight_decay": 0}, seed=0)
    group = algo.optimizer.param_groups[0]
    assert isinstance(algo.optimizer, torch.optim.AdamW)
    assert (group["lr"], group["weight_decay"]) == (0.02, 0.0)
    assert str(algo.arch) == "mlp:1000,1000"  # the default when no arch is given


@pytest.mark.parametrize(
    "params, match",
    [
        ({"learning_rate": 0.1}, "valid: batch_size, drop_last, lr, weight_decay"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"lr": "fast"}, "lr"),
    ],
)
def test_bp_bad_params_are_refused(params, match):
    with pytest.raises(BpfreeError, match=match):
        build_algorithm("bp", None, DIGITS, params)


def test_bp_checkpoint_round_trip():
    x = torch.randn(5, 1, 8, 8)
    a = build_algorithm("bp", parse_arch("mlp:16"), DIGITS, seed=0)
    torch.manual_seed(1)
    b = build_algorithm("bp", parse_arch("mlp:16"), DIGITS, seed=1)
    assert not torch.equal(a.predict(x), b.predict(x))
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.predict(x), b.predict(x))


def test_mfs_twin_starts_as_the_papers_mf_mlp():
    """The paper's BP twin of MF is its MF_MLP: kaiming-relu hidden layers and an N(0, 0.01)
    output layer with a zero bias (bpfree's default head is PyTorch's U(±1/sqrt(n)))."""
    info = DatasetInfo("small", 10, (1, 28, 28), (0.5,), (0.25,))
    twin = build_algorithm(
        "bp", parse_arch("mlp:1000,1000"), info, {"init": "kaiming-relu", "head_init": "normal-0.01"}
    )
    body, _, head = twin.net.model
    first = body.layers[0].weight
    assert first.abs().max() > 0.95 * (6 / 784) ** 0.5  # beyond the default's bound 1/sqrt(784)
    assert abs(float(head.weight.detach().std()) - 0.01) < 0.001 and torch.equal(head.bias, torch.zeros(10))
    default = build_algorithm("bp", parse_arch("mlp:1000,1000"), info, {})
    assert default.net.model[0].layers[0].weight.abs().max() <= 784**-0.5


def test_an_mlp_init_on_a_cnn_twin_is_refused():
    info = DatasetInfo("small", 10, (1, 28, 28), (0.5,), (0.25,))
    with pytest.raises(BpfreeError, match="bp's init 'kaiming-relu' is for an MLP body"):
        build_algorithm("bp", parse_arch("cnn:4,8"), info, {"init": "kaiming-relu"})
