"""``bpfree bench``: the paper-style reference loops do the same math as the algorithms (same
losses on the same batches, same predictions), the FLOP accounting agrees with torch's, and
the command writes its JSON. No timing is asserted."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from bpfree.algorithms import build_algorithm
from bpfree.bench.reference import EpochSampler, PixelDataset, ReferenceFF, reference_loop, tensor_dataset
from bpfree.bench.runner import CASES, REGIMES, MatmulShapes, Ours, Reference, case_arch, synthetic_data
from bpfree.cli import main
from bpfree.core.registry import ALGORITHMS
from bpfree.data import Batches
from bpfree.engine.setup import seed_everything

SIZES = replace(REGIMES["overhead"], mlp_width=24, cnn_channels=(4, 6, 8), train_samples=0, epochs=2)


def loops_for(case, shape="digits", reference_data="pixels"):
    """Ours and the reference for ``case`` on 2.5 batches (a ragged last batch) of one data set."""
    build_params = dict(case.params)
    batch_size = ALGORITHMS.get(case.algorithm).Params().batch_size
    sizes = replace(SIZES, train_samples=batch_size * 5 // 2, test_samples=40)
    data = synthetic_data(shape, sizes.train_samples, sizes.test_samples, 3, torch.device("cpu"))
    if case.algorithm == "cafo-dfa":
        build_params["dfa_epochs"] = sizes.epochs

    def build():
        seed_everything(11)
        return build_algorithm(case.algorithm, case_arch(case, sizes), data.splits.info, build_params, seed=11)

    return Ours(build, data, sizes, 5), Reference(build, data, sizes, 5, kind=reference_data), data


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_reference_loop_does_the_same_math_on_the_same_batches(case):
    ours, reference, data = loops_for(case)
    ours.prepare()
    reference.prepare()
    ours_losses, reference_losses = ours.train(), reference.train()
    # every stage ran, for the same epochs, and training moved the loss
    assert len(ours_losses) == len(reference_losses) == len(ours.algo.stages()) * SIZES.epochs
    assert len(set(ours_losses)) == len(ours_losses)
    assert ours_losses == pytest.approx(reference_losses, rel=1e-5)
    # the trained models agree, so their predictions do
    x = data.splits.test.x
    with torch.no_grad():
        ours.algo.net.eval()
        reference.algo.net.eval()
        torch.testing.assert_close(reference.loop.scores(x), ours.algo.predict(x), rtol=1e-4, atol=1e-5)
    assert reference.infer() == ours.infer()


def test_reference_data_pipeline_delivers_our_tensors_bit_for_bit():
    data = synthetic_data("cifar", 16, 8, 0, torch.device("cpu"))
    pixels = PixelDataset(data.train_pixels, data.splits.train.y, data.splits.info.mean, data.splits.info.std)
    for i in (0, 7, 15):
        x, y = pixels[i]
        assert torch.equal(x, data.splits.train.x[i]) and int(y) == int(data.splits.train.y[i])


def test_epoch_sampler_gives_the_batches_order_epoch_after_epoch():
    split = synthetic_data("digits", 37, 4, 0, torch.device("cpu")).splits.train
    batches, sampler = Batches(split, seed=9), EpochSampler(len(split), 9)
    for _ in range(3):
        ours = torch.cat([y for _, y in batches.epoch(10)])
        assert torch.equal(ours, split.y[list(sampler)])


def test_reference_differs_when_the_batches_differ():
    """The trajectory test can fail: another batch order gives other losses."""
    case = next(c for c in CASES if c.name == "bp-mlp")
    ours, reference, data = loops_for(case)
    ours.prepare()
    reference.prepare()
    reference.loop.sampler = EpochSampler(len(data.splits.train), seed=6)  # not the run's seed
    assert ours.train() != pytest.approx(reference.train(), rel=1e-5)


def test_ff_per_label_loop_equals_the_batched_goodness_pass():
    data = synthetic_data("digits", 8, 12, 0, torch.device("cpu"))
    seed_everything(0)
    algo = build_algorithm("ff", case_arch(CASES[1], SIZES), data.splits.info, {"prediction": "goodness"})
    loop = ReferenceFF(algo, tensor_dataset(data.splits.train), 0)
    with torch.no_grad():
        torch.testing.assert_close(
            loop.goodness_per_label(data.splits.test.x), algo.goodness_per_label(data.splits.test.x)
        )


def test_reference_refuses_variants_it_does_not_implement():
    from bpfree.core.errors import BpfreeError

    data = synthetic_data("digits", 8, 4, 0, torch.device("cpu"))
    algo = build_algorithm("mf", None, data.splits.info, {"training": "simultaneous"})
    with pytest.raises(BpfreeError, match="layer by layer"):
        reference_loop(algo, tensor_dataset(data.splits.train), 0)


def test_recorded_gemm_shapes_account_for_every_flop_torch_counts():
    """MLP and CNN training steps: Σ 2·M·K·N over the recorded shapes (convolutions as im2col
    GEMMs, forward and both backward products) is what FlopCounterMode counts."""
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(20, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3, bias=False))
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 5, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(5 * 8 * 8, 3)
    )
    for model, x in ((mlp, torch.randn(7, 20)), (cnn, torch.randn(4, 3, 8, 8))):
        with FlopCounterMode(display=False) as counter, MatmulShapes() as shapes:
            F.cross_entropy(model(x), torch.tensor([0, 1, 2, 0, 1, 2, 0][: len(x)])).backward()
        assert sum(shapes.flops.values()) == counter.get_total_flops() > 0
    # the first convolution's input needs no gradient: its backward is one GEMM, not two
    assert (4 * 8 * 8, 5, 3 * 9) not in shapes.flops and (3 * 9, 4 * 8 * 8, 5) in shapes.flops


EXPECTED_RESULT_KEYS = {
    "case",
    "algorithm",
    "regime",
    "shape",
    "arch",
    "batch_size",
    "train_samples",
    "ours",
    "reference",
    "train_speedup",
    "infer_speedup",
    "max_loss_difference",
}
EXPECTED_LOOP_KEYS = {
    "train_samples_per_s",
    "infer_samples_per_s",
    "epoch_time_s",
    "train_flops",
    "train_gemm_flops_per_s",
    "train_gemm_fraction",
    "infer_gemm_fraction",
    "losses",
    "test_accuracy",
}


def test_bench_quick_writes_json_with_every_case(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--device", "cpu", "--threads", "1", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"device", "threads", "load_average_start", "load_average_end", "gemm_peak_flops_per_s"} <= set(
        report["meta"]
    )
    assert report["meta"]["threads"] == 1
    assert {r["case"] for r in report["results"]} == {c.name for c in CASES}
    for result in report["results"]:
        assert EXPECTED_RESULT_KEYS <= set(result)
        for loop in ("ours", "reference"):
            assert EXPECTED_LOOP_KEYS <= set(result[loop])
            assert result[loop]["train_samples_per_s"] > 0 and result[loop]["train_flops"] > 0
        assert result["max_loss_difference"] < 1e-3  # same math, same batches
    goodness = next(r for r in report["results"] if r["case"] == "ff-goodness")
    assert goodness["goodness_prediction"]["per_label_loop_s"] > 0
    assert "train ours" in capsys.readouterr().out  # the table


def test_bench_rejects_unknown_cases(capsys):
    assert main(["bench", "--quick", "--cases", "bp-mlp,nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_bf16_precision_still_trains_across_many_steps():
    """One autocast region spans the whole epoch: with autocast's cast cache the forward would
    keep using the first step's bfloat16 weights and the validation loss would never move."""
    from bpfree.engine.precision import precision_context

    data = synthetic_data("digits", 256, 64, 0, torch.device("cpu")).splits
    seed_everything(0)
    algo = build_algorithm("bp", case_arch(CASES[0], SIZES), data.info, {"lr": 1e-2}, seed=0)
    stage, batches = algo.stages()[0], Batches(data.train, seed=0)
    with precision_context("bf16", torch.device("cpu")):
        before = algo.evaluate(stage, data.test).loss
        for _ in range(3):
            algo.train_epoch(stage, batches)
        after = algo.evaluate(stage, data.test).loss
    assert after < before - 0.05


def test_precision_names_what_is_valid():
    from bpfree.core.errors import BpfreeError
    from bpfree.engine.precision import precision_context

    with pytest.raises(BpfreeError, match="fp32, tf32, bf16"):
        with precision_context("fp16", torch.device("cpu")):
            pass
    with pytest.raises(BpfreeError, match="CUDA"):
        with precision_context("tf32", torch.device("cpu")):
            pass


def test_command_line_names_match_the_benchmark():
    # bpfree.bench.cli spells them out so that building the CLI parser doesn't load torch
    from bpfree.bench.cli import CASE_NAMES, SHAPE_NAMES
    from bpfree.bench.runner import CASES, SHAPES

    assert CASE_NAMES == tuple(c.name for c in CASES)
    assert SHAPE_NAMES == tuple(SHAPES)


def test_fp32_bench_runs_without_tf32_and_records_the_flags():
    """torch's cuDNN default is TF32 convolutions: an fp32 bench must turn it off for both
    loops and the plain GEMMs alike (else the CNN cases' GEMM share compares TF32 with fp32)."""
    from bpfree.bench.runner import BenchConfig, run_bench

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    try:
        cfg = BenchConfig(device=torch.device("cpu"), regimes=("overhead",), cases=("bp-mlp",), quick=True)
        report = run_bench(cfg)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (True, True)  # restored
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    flags = report["meta"]["precision_flags"]
    assert flags["cublas_allow_tf32"] is False and flags["cudnn_allow_tf32"] is False
