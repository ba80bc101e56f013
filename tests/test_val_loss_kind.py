"""What each algorithm's validation loss is, as the tables say it (bpfree.report.runs.val_loss_kind),
held to the algorithms' own code: where the tables call it the cross-entropy, it is the
cross-entropy of the scores the model predicts with, comparable with BP's; where they do not
(FF's goodness BCE, CaFo's sum over blocks), it is not."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bpfree.algorithms import build_algorithm
from bpfree.core.registry import ALGORITHMS
from bpfree.data import DatasetInfo, Split
from bpfree.models import parse_arch
from bpfree.report.runs import CROSS_ENTROPY, val_loss_kind

SMALL = DatasetInfo("small", 3, (1, 6, 6), (0.5,), (0.25,))  # 36 inputs, 3 classes
ARCH = {"bp": "mlp:7,5", "ff": "mlp:7,5", "mf": "mlp:7,5", "cafo-rand": "cnn:4,4", "cafo-dfa": "cnn:4,4"}
CASES = [
    ("bp", {}),
    ("mf", {}),
    ("mf", {"prediction": "sum"}),
    ("mf", {"training": "simultaneous"}),
    ("ff", {}),
    ("ff", {"prediction": "softmax"}),
    ("cafo-rand", {}),
    ("cafo-rand", {"predictor_loss": "mse"}),
    ("cafo-dfa", {}),
]


def split(n: int = 48) -> Split:
    g = torch.Generator().manual_seed(3)
    return Split(torch.randn(n, *SMALL.input_shape, generator=g), torch.randint(0, 3, (n,), generator=g))


def test_every_algorithm_is_covered():
    assert {a for a, _ in CASES} == set(ALGORITHMS)


@pytest.mark.parametrize(("algorithm", "params"), CASES)
def test_the_tables_call_a_validation_loss_cross_entropy_only_where_it_is_one(algorithm, params):
    torch.manual_seed(0)
    algo = build_algorithm(algorithm, parse_arch(ARCH[algorithm]), SMALL, params, seed=0)
    data = split()
    last = algo.stages()[-1]
    algo.begin_stage(last, 1)
    loss = algo.evaluate(last, data).loss
    with torch.no_grad():
        ce = float(F.cross_entropy(algo.predict(data.x), data.y))
    kind = val_loss_kind(algorithm, algo.params.__dict__ if hasattr(algo.params, "__dict__") else params)
    if kind == CROSS_ENTROPY:
        assert loss == pytest.approx(ce, rel=1e-4), f"{algorithm} {params}: {loss} is not the CE {ce}"
    else:
        assert not math.isclose(loss, ce, rel_tol=1e-3), f"{algorithm} {params}: {kind!r}, but it is the CE"
