"""Architectures: spec parsing, shapes on every input size the project uses, CaFo's block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bpfree.core.errors import BpfreeError
from bpfree.models import CNN, MLP, ArchSpec, ConvBlock, build_body, parse_arch


@pytest.mark.parametrize(
    "text, spec",
    [
        ("mlp:1000,1000", ArchSpec("mlp", (1000, 1000))),
        ("mlp:7", ArchSpec("mlp", (7,))),
        ("cnn:32,128,512", ArchSpec("cnn", (32, 128, 512))),
        ("  mlp:2000,2000,2000 ", ArchSpec("mlp", (2000, 2000, 2000))),
    ],
)
def test_parse_arch_valid(text, spec):
    assert parse_arch(text) == spec
    assert parse_arch(str(spec)) == spec  # str() writes the spec back


@pytest.mark.parametrize(
    "text",
    ["", "mlp", "mlp:", "mlp:a,b", "mlp:10,,10", "mlp:0", "mlp:-5", "mlp:1.5", "rnn:10", "MLP:10", ":10", "cnn:32;128"],
)
def test_parse_arch_malformed(text):
    with pytest.raises(BpfreeError, match="malformed architecture") as caught:
        parse_arch(text)
    assert "mlp:1000,1000" in str(caught.value)  # the message shows a valid spec


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_mlp_shapes(shape):
    mlp = MLP((16, 8), shape)
    assert [(layer.in_features, layer.out_features) for layer in mlp.layers] == [
        (shape[0] * shape[1] * shape[2], 16),
        (16, 8),
    ]
    out = mlp(torch.randn(5, *shape))
    assert out.shape == (5, 8) and mlp.out_features == 8
    assert bool((out >= 0).all())  # ReLU after every hidden layer


@pytest.mark.parametrize(
    "shape, block_shapes",
    [
        ((1, 8, 8), [(4, 4, 4), (8, 2, 2), (16, 1, 1)]),
        ((1, 28, 28), [(4, 14, 14), (8, 7, 7), (16, 3, 3)]),
        ((3, 32, 32), [(4, 16, 16), (8, 8, 8), (16, 4, 4)]),
    ],
)
def test_cnn_shapes(shape, block_shapes):
    cnn = CNN((4, 8, 16), shape).eval()
    assert cnn.block_shapes == block_shapes
    c, h, w = block_shapes[-1]
    assert cnn.out_features == c * h * w
    x = torch.randn(3, *shape)
    for block, expected in zip(cnn.blocks, block_shapes):  # what each block really produces
        x = block(x)
        assert tuple(x.shape[1:]) == expected
    assert cnn(torch.randn(3, *shape)).shape == (3, cnn.out_features)


@pytest.mark.parametrize("channels, shape", [((4, 4, 4, 4), (1, 8, 8)), ((2,) * 5, (1, 28, 28))])
def test_cnn_too_deep_for_the_image_is_refused(channels, shape):
    with pytest.raises(BpfreeError, match=f"{shape[1]}x{shape[2]}"):
        CNN(channels, shape)


def test_cnn_four_blocks_fit_28px():
    assert CNN((2, 2, 2, 2), (1, 28, 28)).block_shapes[-1] == (2, 1, 1)


def test_conv_block_is_cafos():
    conv, relu, pool, norm = ConvBlock(3, 5)
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (3, 3)
    assert conv.stride == (1, 1) and conv.padding == (1, 1)
    assert isinstance(relu, nn.ReLU)
    assert isinstance(pool, nn.MaxPool2d) and pool.kernel_size == 2
    assert isinstance(norm, nn.BatchNorm2d) and norm.eps == 1e-5 and norm.num_features == 5
    # the paper's code: no conv bias, Kaiming-uniform for ReLU, bound sqrt(6 / fan_in)
    assert conv.bias is None
    bound = (6 / (3 * 3 * 3)) ** 0.5
    big = ConvBlock(3, 256)[0].weight
    assert big.abs().max() <= bound and big.abs().max() > 0.95 * bound


def test_mlp_default_init_is_pytorchs_weights_with_zero_biases():
    mlp = MLP((400, 300), (1, 28, 28))
    for layer in mlp.layers:
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
        bound = 1 / layer.in_features**0.5  # PyTorch's default U(±1/sqrt(fan_in))
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.95 * bound


def test_mlp_kaiming_relu_init_is_the_papers_mf_mlp():
    """The paper's MF_MLP calls kaiming_uniform_(w, a=sqrt(5), nonlinearity="relu"): the gain is
    sqrt(2) and ``a`` is ignored, so its bound is sqrt(6/n_in), 2.45 times PyTorch's default."""
    mlp = MLP((400, 300), (1, 28, 28), init="kaiming-relu")
    for layer in mlp.layers:
        reference = nn.Linear(layer.in_features, layer.out_features)
        nn.init.kaiming_uniform_(reference.weight, a=5**0.5, nonlinearity="relu")
        bound = (6 / layer.in_features) ** 0.5
        assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.95 * bound
        assert abs(float(layer.weight.detach().std()) - float(reference.weight.detach().std())) < 0.02 * float(
            reference.weight.detach().std()
        )
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_mlp_pytorch_init_keeps_pytorchs_biases_too():
    """The paper's BP twin of FF is an nn.Sequential of default nn.Linear: biases U(±1/sqrt(n_in))."""
    torch.manual_seed(0)
    mlp = MLP((400,), (1, 28, 28), init="pytorch")
    torch.manual_seed(0)
    reference = nn.Linear(784, 400)
    assert torch.equal(mlp.layers[0].weight, reference.weight) and torch.equal(mlp.layers[0].bias, reference.bias)


def test_an_unknown_mlp_init_is_one_line():
    with pytest.raises(BpfreeError, match="unknown MLP init 'xavier'; valid: pytorch-zero-bias, pytorch, kaiming-relu"):
        MLP((4,), (1, 8, 8), init="xavier")


def test_build_body_by_spec():
    assert isinstance(build_body(parse_arch("mlp:9"), (1, 8, 8)), MLP)
    body = build_body(parse_arch("cnn:4,8"), (3, 32, 32))
    assert isinstance(body, CNN) and body.out_features == 8 * 8 * 8
