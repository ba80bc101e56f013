"""Cost to a target accuracy (bpfree.report.target) on synthetic histories whose answers are known."""

from __future__ import annotations

import polars as pl
import pytest

from bpfree.report.target import COUNTER_PERIOD_S, to_target_display, to_target_table

ARCH, DATA = "mlp:8,8", "digits"


def history(algorithm, seed, accuracies, *, stages=None, time_s=1.0, energy=2.0, source="rapl", flops=10.0):
    n = len(accuracies)
    stages = stages or ["train"] * n
    times = time_s if isinstance(time_s, list) else [time_s] * n
    energies = energy if isinstance(energy, list) else [energy] * n
    return pl.DataFrame(
        {
            "algorithm": [algorithm] * n,
            "arch": [ARCH] * n,
            "dataset": [DATA] * n,
            "seed": [seed] * n,
            "epoch": list(range(1, n + 1)),
            "stage": stages,
            "train_loss": [1.0] * n,
            "val_loss": [1.0] * n,
            "val_accuracy": accuracies,
            "epoch_time_s": times,
            "energy_j": energies,
            "energy_source": [source] * n,
            "flops": [flops] * n,
        }
    )


def runs(*keys, status="ok"):
    return pl.DataFrame([{"algorithm": a, "arch": ARCH, "dataset": DATA, "seed": s, "status": status} for a, s in keys])


def row(table, algorithm, seed=1):
    return table.filter((pl.col("algorithm") == algorithm) & (pl.col("seed") == seed)).to_dicts()[0]


def test_first_epoch_at_the_target_and_the_cost_until_then():
    bp = history("bp", 1, [0.5, 0.8, 0.9, 0.85])  # best 0.9: target 0.891
    mf = history("mf", 1, [0.6, 0.88, 0.895, 0.92], time_s=0.5, energy=1.0, flops=4.0)
    table = to_target_table(runs(("bp", 1), ("mf", 1)), pl.concat([bp, mf]))
    method, twin = row(table, "mf"), row(table, "bp")
    assert method["target_val_accuracy"] == pytest.approx(0.99 * 0.9)
    assert method["reached"] and method["epoch"] == 3  # 0.88 < 0.891 <= 0.895
    assert (method["time_s"], method["energy_j"], method["flops"]) == (1.5, 3.0, 12.0)
    assert twin["epoch"] == 3 and (twin["time_s"], twin["energy_j"], twin["flops"]) == (3.0, 6.0, 30.0)
    assert method["time_vs_bp"] == 0.5 and method["energy_vs_bp"] == 0.5 and method["flops_vs_bp"] == 0.4
    assert method["energy_source"] == "rapl"


def test_the_fraction_is_configurable():
    bp = history("bp", 1, [0.5, 0.8, 0.9])
    mf = history("mf", 1, [0.6, 0.7, 0.8])
    table = to_target_table(runs(("bp", 1), ("mf", 1)), pl.concat([bp, mf]), fraction=0.75)
    assert row(table, "mf")["epoch"] == 2  # 0.7 >= 0.675
    assert row(table, "mf")["target_fraction"] == 0.75


def test_a_run_that_never_reaches_it_says_so():
    bp = history("bp", 1, [0.5, 0.9])
    ff = history("ff", 1, [0.3, 0.4, 0.45])
    method = row(to_target_table(runs(("bp", 1), ("ff", 1)), pl.concat([bp, ff])), "ff")
    assert method["reached"] is False
    assert method["epoch"] is None and method["energy_j"] is None and method["time_s"] is None
    assert "never reached 89.10% in 3 epochs (best 45.00%)" in method["note"]


def test_only_the_last_stage_reaches_it_but_every_stage_is_paid_for():
    bp = history("bp", 1, [0.5, 0.9])
    # layer 1's own accuracy passes the target; the delivered model (layer 2) does later
    mf = history("mf", 1, [0.95, 0.95, 0.5, 0.9], stages=["layer1", "layer1", "layer2", "layer2"])
    method = row(to_target_table(runs(("bp", 1), ("mf", 1)), pl.concat([bp, mf])), "mf")
    assert method["epoch"] == 4 and method["stage"] == "layer2"
    assert method["time_s"] == 4.0 and method["flops"] == 40.0


def test_targets_pair_by_seed():
    frames = [history("bp", 1, [0.9]), history("bp", 2, [0.5]), history("mf", 1, [0.6]), history("mf", 2, [0.6])]
    table = to_target_table(runs(("bp", 1), ("bp", 2), ("mf", 1), ("mf", 2)), pl.concat(frames))
    assert row(table, "mf", 1)["reached"] is False  # against 0.891
    assert row(table, "mf", 2)["reached"] is True  # against 0.495


def test_without_an_ok_twin_there_is_no_target():
    frames = [history("bp", 1, [0.9]), history("mf", 1, [0.9])]
    table = to_target_table(runs(("bp", 1), status="diverged").vstack(runs(("mf", 1))), pl.concat(frames))
    method = row(table, "mf")
    assert method["reached"] is None and method["target_val_accuracy"] is None
    assert "no ok BP twin with seed 1" in method["note"]


def test_an_epoch_shorter_than_the_counter_period_is_flagged_not_zero():
    bp = history("bp", 1, [0.5, 0.9], time_s=1.0, energy=50.0, source="nvml-counter")
    # epoch 2 lasts 50 ms, under NVML's ~100 ms counter update: its 0 J cannot be its energy
    mf = history("mf", 1, [0.6, 0.7, 0.9], time_s=[1.0, 0.05, 1.0], energy=[40.0, 0.0, 40.0], source="nvml-counter")
    method = row(to_target_table(runs(("bp", 1), ("mf", 1)), pl.concat([bp, mf])), "mf")
    assert method["reached"] and method["epoch"] == 3
    assert method["energy_j"] is None  # not 80 J: an unresolved epoch is not counted as free
    assert method["flagged_epochs"] == 1 and "update period" in method["note"]
    assert method["time_s"] == pytest.approx(2.05)


def test_the_counter_period_the_run_measured_decides_what_is_too_short():
    """A board whose counter was measured to move every 20 ms: a 50 ms epoch has its own
    reading (not flagged); one measured at 200 ms flags even a 150 ms epoch."""
    bp = history("bp", 1, [0.5, 0.9], time_s=1.0, energy=50.0, source="nvml-counter")
    mf = history("mf", 1, [0.6, 0.9], time_s=[0.05, 0.15], energy=[2.0, 6.0], source="nvml-counter")

    def method(period):
        table = runs(("bp", 1), ("mf", 1)).with_columns(pl.lit(period, dtype=pl.Float64).alias("counter_period_s"))
        return row(to_target_table(table, pl.concat([bp, mf])), "mf")

    assert method(None)["flagged_epochs"] == 1  # the usual 100 ms: the 50 ms epoch is too short
    fast = method(0.02)
    assert fast["flagged_epochs"] == 0 and fast["energy_j"] == pytest.approx(8.0)
    assert method(0.2)["flagged_epochs"] == 2 and method(0.2)["energy_j"] is None


def test_the_measured_period_comes_from_the_record():
    from bpfree.report.runs import counter_period

    measured = {"counter_update_periods": {"gpu nvml-counter": {"update_period_s": 0.025, "measured": True}}}
    assumed = {"counter_update_periods": {"gpu nvml-counter": {"update_period_s": 0.1, "measured": False}}}
    assert counter_period(measured) == 0.025
    assert counter_period(assumed) is None and counter_period(None) is None


def test_a_missing_epoch_energy_is_flagged_too():
    bp = history("bp", 1, [0.9], energy=[None], source="nvml-counter")
    twin = row(to_target_table(runs(("bp", 1)), bp), "bp")
    assert twin["reached"] and twin["energy_j"] is None and twin["flagged_epochs"] == 1


def test_an_estimate_is_labelled_as_one():
    bp = history("bp", 1, [0.9], source="estimate")
    twin = row(to_target_table(runs(("bp", 1)), bp), "bp")
    assert twin["energy_j"] == 2.0 and twin["energy_source"] == "estimate"
    shown = to_target_display(to_target_table(runs(("bp", 1)), bp)).to_dicts()[0]
    assert shown["energy (J)"] == "2.00 (estimate)" and shown["reached"] == "yes"


def test_counter_periods_agree_with_the_meter():
    from bpfree.measure.energy import NVML_COUNTER_PERIOD_S, NvmlEnergyCounter

    assert COUNTER_PERIOD_S["nvml-counter"] == NVML_COUNTER_PERIOD_S == NvmlEnergyCounter.update_period_s


def test_no_history_gives_an_empty_table_with_every_column():
    table = to_target_table(runs(("bp", 1)), pl.DataFrame())
    assert table.is_empty() and "energy_vs_bp" in table.columns


def test_the_default_fraction_is_defined_once():
    """bpfree.core.outputs.TARGET_FRACTION: the config's default (and so the schema's), bpfree
    aggregate's and the report's functions all take it from there."""
    import argparse
    import inspect

    from bpfree.cli import build_parser
    from bpfree.core.outputs import TARGET_FRACTION
    from bpfree.core.spec import WorkflowConfig
    from bpfree.report.tables import build_tables

    assert WorkflowConfig.model_fields["target_fraction"].default == TARGET_FRACTION
    assert inspect.signature(to_target_table).parameters["fraction"].default == TARGET_FRACTION
    assert inspect.signature(build_tables).parameters["target_fraction"].default == TARGET_FRACTION
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert sub.choices["aggregate"].get_default("target_fraction") == TARGET_FRACTION
