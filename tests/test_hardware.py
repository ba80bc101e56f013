"""FLOPs and memory by part (bpfree.engine.analysis), checked against closed forms.

FlopCounterMode counts a matrix product (M, K) @ (K, N) as 2·M·K·N and a convolution as its
im2col product; per sample, a Linear(in, out) costs 2·in·out forward, as much again for its
weight gradient, and as much again for its input gradient when its input needs one. Bias
additions, activations, norms and the optimiser's update are elementwise: not counted."""

from __future__ import annotations

import math

import pytest
import torch

from bpfree.algorithms import build_algorithm
from bpfree.core.outputs import MEMORY_PARTS
from bpfree.data import DatasetInfo, DataSplits, Split
from bpfree.engine.analysis import MB, Analysis, StageCount, analyse, epoch_flops, run_costs
from bpfree.models import parse_arch

C = 10
N_TRAIN, N_VAL, N_TEST = 300, 70, 50


def synthetic(shape=(1, 8, 8)) -> DataSplits:
    info = DatasetInfo("synthetic", C, shape, (0.5,) * shape[0], (0.25,) * shape[0])
    g = torch.Generator().manual_seed(0)

    def split(n):
        return Split(torch.randn(n, *shape, generator=g), torch.randint(0, C, (n,), generator=g))

    return DataSplits(info, split(N_TRAIN), split(N_VAL), split(N_TEST))


def count(algorithm: str, arch: str, data: DataSplits | None = None, **params) -> Analysis:
    data = data or synthetic()
    return analyse(
        lambda: build_algorithm(algorithm, parse_arch(arch), data.info, params, device="cpu", seed=1),
        data,
        max_epochs=5,
    )


def stage(analysis: Analysis, name: str) -> StageCount:
    return next(s for s in analysis.stages if s.stage == name)


# -- MLPs: 64 inputs, widths 32 and 16, 10 classes ---------------------------------------------
IN, H1, H2 = 64, 32, 16


def test_bp_mlp_forward_backward_of_each_linear():
    a = count("bp", "mlp:32,16")
    forward = 2 * (IN * H1 + H1 * H2 + H2 * C)
    weight_grads = forward
    input_grads = 2 * (H1 * H2 + H2 * C)  # not the first layer's: the image needs no gradient
    (train,) = a.stages
    assert train.train_flops_per_sample == forward + weight_grads + input_grads
    assert train.train_setup_flops_per_sample == 0
    assert train.eval_flops_per_sample == forward
    assert a.infer_flops_per_sample == forward


def test_ff_trains_on_positive_and_negative_passes_and_predicts_with_one_pass_per_class():
    a = count("ff", "mlp:32,16", prediction="goodness")
    per_pass = 2 * (IN * H1 + H1 * H2)  # the goodness prediction has no head
    # positives and negatives: 2 passes; each layer's input is detached, so weight grads only
    (train,) = a.stages
    assert train.train_flops_per_sample == 2 * per_pass + 2 * per_pass
    assert train.eval_flops_per_sample == C * per_pass  # every label embedded in turn
    assert a.infer_flops_per_sample == C * per_pass
    assert a.infer_flops_per_sample / count("bp", "mlp:32,16").infer_flops_per_sample == pytest.approx(
        C * per_pass / (per_pass + 2 * H2 * C)
    )


def test_ff_softmax_prediction_is_one_neutral_pass_and_the_classifier():
    a = count("ff", "mlp:32,16", prediction="softmax")
    per_pass = 2 * (IN * H1 + H1 * H2)
    classifier = 2 * H2 * C  # reads out from layer 2 only (a 2-layer net)
    (train,) = a.stages
    # + the neutral pass for the classifier's features and its forward and weight gradient
    assert train.train_flops_per_sample == 4 * per_pass + per_pass + 2 * classifier
    assert a.infer_flops_per_sample == per_pass + classifier


def test_mf_trains_each_layer_and_its_projection_and_caches_the_frozen_layers_once():
    a = count("mf", "mlp:32,16")
    layer1, layer2 = stage(a, "layer1"), stage(a, "layer2")
    # layer: forward + weight grad; projection: forward + weight grad + input grad (into a_i)
    assert layer1.train_flops_per_sample == 4 * IN * H1 + 6 * H1 * C
    assert layer2.train_flops_per_sample == 4 * H1 * H2 + 6 * H2 * C
    assert layer1.train_setup_flops_per_sample == 0
    assert layer2.train_setup_flops_per_sample == 2 * IN * H1  # layer 1's features, once per stage
    assert layer2.eval_flops_per_sample == 2 * (IN * H1 + H1 * H2 + H2 * C)  # not cached
    assert a.infer_flops_per_sample == 2 * (IN * H1 + H1 * C + H1 * H2 + H2 * C)  # every projection
    # the cache: the training split's features of layer 1, float32
    assert layer2.memory_bytes["cached_features"] == N_TRAIN * H1 * 4
    assert layer1.memory_bytes["cached_features"] == 0


# -- CNN: 1x8x8 input, blocks of 4 and 8 channels (Conv3x3 pad 1, then 2x2 pooling) --------------
CONV1 = 2 * 4 * 1 * 9 * 8 * 8  # out channels x in channels x 3x3 x output pixels
CONV2 = 2 * 8 * 4 * 9 * 4 * 4
H_1, H_2 = 4 * 4 * 4, 8 * 2 * 2  # block outputs, flattened


def test_bp_cnn_convolutions_forward_and_backward():
    a = count("bp", "cnn:4,8")
    head = 2 * H_2 * C
    forward = CONV1 + CONV2 + head
    (train,) = a.stages
    assert train.train_flops_per_sample == 2 * forward + CONV2 + head  # no input grad for conv 1
    assert a.infer_flops_per_sample == forward


def test_cafo_rand_predictors_on_cached_block_features():
    a = count("cafo-rand", "cnn:4,8")
    predictors = 2 * (H_1 + H_2) * C
    (train,) = a.stages
    assert train.train_flops_per_sample == 2 * predictors  # forward + weight grads; blocks frozen
    # once per stage: the BatchNorm refill and the feature cache, each one pass of the blocks
    assert train.train_setup_flops_per_sample == 2 * (CONV1 + CONV2)
    assert train.eval_flops_per_sample == predictors
    assert train.eval_setup_flops_per_sample == CONV1 + CONV2  # the validation features, cached
    assert a.infer_flops_per_sample == CONV1 + CONV2 + predictors
    assert train.memory_bytes["cached_features"] == (N_TRAIN + N_VAL) * (H_1 + H_2) * 4


def test_cafo_dfa_stage_trains_blocks_through_fixed_feedback():
    a = count("cafo-dfa", "cnn:4,8")
    dfa = stage(a, "dfa")
    head = 2 * H_2 * C
    feedback = 2 * C * H_1  # e B_1 for every block but the last
    # blocks forward + their weight gradients (inputs detached), head forward + both gradients
    assert dfa.train_flops_per_sample == 2 * (CONV1 + CONV2) + 3 * head + feedback
    assert stage(a, "predictors").train_flops_per_sample == 2 * 2 * (H_1 + H_2) * C


# -- memory -------------------------------------------------------------------------------------
def test_memory_parts_of_bp_add_up_from_the_tensors():
    data = synthetic()
    a = count("bp", "mlp:32,16", data)
    (train,) = a.stages
    params = (IN * H1 + H1) + (H1 * H2 + H2) + (H2 * C + C)
    parts = train.memory_bytes
    assert parts["weights"] == 4 * params
    assert parts["gradients"] == 4 * params
    # AdamW: two moments per parameter, and a step count per tensor
    assert 8 * params <= parts["optimizer"] <= 8 * params + 8 * 6
    assert parts["data"] == sum(4 * len(s) * 64 + 8 * len(s) for s in (data.train, data.val, data.test))
    assert parts["cached_features"] == 0
    # the activations of one batch of 128: at least its input and both hidden layers
    assert 4 * 128 * (IN + H1 + H2) <= parts["activations"] <= 4 * 128 * (IN + H1 + H2 + 3 * C) + 16 * 128
    assert train.memory_total == sum(parts.values())


def test_activations_grow_with_the_batch_size():
    small = count("bp", "mlp:32,16", batch_size=32).stages[0].memory_bytes["activations"]
    large = count("bp", "mlp:32,16", batch_size=128).stages[0].memory_bytes["activations"]
    assert large == pytest.approx(4 * small, rel=0.05)


def test_the_analysis_leaves_the_global_rngs_as_it_found_them():
    torch.manual_seed(3)
    expected = torch.rand(3)
    torch.manual_seed(3)
    count("ff", "mlp:32,16")
    assert torch.equal(torch.rand(3), expected)


# -- the run's costs from its history --------------------------------------------------------------
def toy_analysis() -> Analysis:
    zero = dict.fromkeys(MEMORY_PARTS, 0)
    return Analysis(
        [
            StageCount("layer1", 10.0, 0.0, 4.0, 0.0, zero | {"weights": MB}),
            StageCount("layer2", 6.0, 3.0, 5.0, 1.0, zero | {"weights": MB, "cached_features": 2 * MB}),
        ],
        infer_flops_per_sample=7.0,
        batch_rows=8,
        val_rows=4,
        test_rows=8,
        memory_source="tensor sizes",
        time_s=0.1,
    )


def test_a_stage_first_epoch_carries_its_one_off_work():
    stages = ["layer1", "layer1", "layer2", "layer2", "layer2"]
    per_epoch = epoch_flops(toy_analysis(), stages, n_train=100, n_val=10)
    assert per_epoch == [(1000, 40), (1000, 40), (900, 60), (600, 50), (600, 50)]


def test_run_costs_totals_rates_and_energy_per_flop_only_when_measured():
    stages = ["layer1", "layer2", "layer2"]
    costs = run_costs(toy_analysis(), stages, 100, 10, train_time_s=2.0, energy_j=5.0, energy_source="rapl")
    train, evals = 1000 + 900 + 600, 40 + 60 + 50
    assert costs["train_flops"] == train and costs["eval_flops"] == evals
    assert costs["run_flops"] == train + evals
    assert costs["train_flops_per_sample"] == train / 300
    assert costs["achieved_flops_per_s"] == (train + evals) / 2.0
    assert costs["energy_per_flop_j"] == 5.0 / (train + evals)
    assert costs["energy_per_flop_source"] == "rapl"
    assert costs["memory_breakdown_stage"] == "layer2"  # the stage that holds the most
    assert costs["memory_cached_features_mb"] == 2.0
    assert costs["memory_breakdown_total_mb"] == 3.0
    assert costs["flops_by_stage"]["layer2"]["epochs"] == 2
    estimated = run_costs(toy_analysis(), stages, 100, 10, 2.0, energy_j=5.0, energy_source="estimate")
    assert estimated["energy_per_flop_j"] is None  # an estimate is never presented as measured


def test_a_trained_run_records_its_flops_memory_and_time_split(tmp_path):
    from bpfree.core.record import read_record
    from bpfree.core.spec import RunSpec, parse
    from bpfree.engine.run import train

    spec = parse(
        RunSpec,
        {
            "algorithm": "mf",
            "dataset": "digits",
            "seed": 1,
            "arch": "mlp:16,16",
            "early_stopping": {"max_epochs": 2},
            "measurement": {"idle_seconds": 0, "codecarbon": False, "profile_epoch": 3},
        },
    )
    result = train(spec, tmp_path)
    record = read_record(tmp_path / "metrics.json")
    assert record.train_flops_per_sample > 0 and record.infer_flops_per_sample > 0
    assert set(record.flops_by_stage) == {"layer1", "layer2"}
    history = (tmp_path / "history.csv").read_text().splitlines()
    column = history[0].split(",").index("flops")
    assert math.isclose(sum(float(row.split(",")[column]) for row in history[1:]), record.run_flops)
    assert math.isclose(sum(getattr(record, f"memory_{p}_mb") for p in MEMORY_PARTS), record.memory_breakdown_total_mb)
    split = [record.time_data_s, record.time_compute_s, record.time_eval_s, record.time_measurement_s]
    assert all(t is not None and t >= 0 for t in split)
    assert sum(split) + record.time_checkpoint_s + record.time_other_s == pytest.approx(record.train_time_s, rel=0.05)
    assert record.energy_per_flop_j is None  # a CPU estimate here
    # the third epoch (layer2's first) was profiled, its trace beside the metrics
    assert record.profile_trace == "profile_epoch3.json" and (tmp_path / "profile_epoch3.json").stat().st_size > 0
    assert result.fit.history[2].extra.get("profiled") is True


def test_the_memory_parts_are_defined_once():
    """bpfree.core.outputs.MEMORY_PARTS: what the analysis counts, a record's memory_PART_mb
    fields, the hardware table's columns and the memory figure's labels, one each."""
    from bpfree.core.record import RunRecord
    from bpfree.engine import analysis
    from bpfree.report.figures import MEMORY_LABELS
    from bpfree.report.hardware import HARDWARE_MEANS

    assert analysis.MEMORY_PARTS is MEMORY_PARTS and tuple(MEMORY_LABELS) == MEMORY_PARTS
    assert {f"memory_{p}_mb" for p in MEMORY_PARTS} <= set(RunRecord.model_fields)
    assert {f"memory_{p}_mb" for p in MEMORY_PARTS} <= set(HARDWARE_MEANS)
