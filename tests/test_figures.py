"""The figures: each draws from the aggregate tables, says how energy was measured, marks
diverged runs, and is written as SVG, PNG and self-contained HTML."""

from __future__ import annotations

import json

import polars as pl
import pytest
from conftest import record

from bpfree.report.figures import FIGURES, draw, pareto_front, read_tables
from bpfree.report.tables import build_tables, write_tables
from bpfree.workflow.grid import FIGURE_NAMES


def write_runs(root, energy_source="nvml-counter", energy_device="gpu", with_energy=True):
    paths = []
    for algorithm, arch in (("bp", "mlp:8,8"), ("mf", "mlp:8,8")):
        for seed in (1, 2, 3):
            d = root / "runs" / algorithm / str(seed)
            d.mkdir(parents=True)
            diverged = (algorithm, seed) == ("mf", 3)
            metrics = {
                "algorithm": algorithm,
                "arch": arch,
                "dataset": "digits",
                "seed": seed,
                "status": "diverged" if diverged else "ok",
                "test_accuracy": float("nan") if diverged else 0.9 + seed / 100,
                "train_time_s": 10.0 * seed,
                "epochs": 3,
                "peak_memory_mb": 500.0,
                "peak_memory_kind": "cuda-allocator",
            }
            if with_energy:
                metrics |= {"energy_j": 100.0 + seed, "energy_source": energy_source, "energy_device": energy_device}
            (d / "metrics.json").write_text(json.dumps(record(metrics)))
            (d / "history.csv").write_text(
                "epoch,stage,train_loss,val_loss,val_accuracy,epoch_time_s\n"
                "1,train,1.0,0.9,0.5,0.1\n2,train,0.8,0.5,0.6,0.1\n3,train,0.7,0.6,0.7,0.1\n"
            )
            paths.append(d / "metrics.json")
    write_tables(build_tables(paths), root / "tables")
    return read_tables(root / "tables")


def spec_text(chart) -> str:
    return json.dumps(chart.to_dict(), ensure_ascii=False)  # to_dict validates against the Vega-Lite schema


def test_figure_names_are_the_workflow_targets():
    assert list(FIGURES) == FIGURE_NAMES


def test_every_figure_builds_a_valid_chart(tmp_path):
    tables = write_runs(tmp_path)
    for name, figure in FIGURES.items():
        assert spec_text(figure(tables)), name


def test_energy_axis_names_its_source(tmp_path):
    gpu = write_runs(tmp_path / "gpu")
    assert "GPU energy (J, nvml-counter)" in spec_text(FIGURES["energy"](gpu))
    cpu = write_runs(tmp_path / "cpu", energy_source="estimate", energy_device="cpu")
    text = spec_text(FIGURES["energy"](cpu))
    assert "CPU energy (J, estimate)" in text and "nvml" not in text
    assert "peak memory (MiB, cuda-allocator)" in spec_text(FIGURES["memory"](gpu))  # MiB, as measured


def test_a_figure_without_its_measurement_says_so(tmp_path):
    tables = write_runs(tmp_path, with_energy=False)
    text = spec_text(FIGURES["energy"](tables))
    assert "no run measured energy" in text
    assert "training time" in spec_text(FIGURES["pareto"](tables))  # the cost axis falls back


def test_diverged_runs_are_marked_in_the_figure(tmp_path):
    tables = write_runs(tmp_path)
    assert "mlp:8,8 · mf (1 of 3 diverged)" in spec_text(FIGURES["accuracy"](tables))


def test_pareto_front_keeps_points_nothing_beats():
    points = pl.DataFrame(
        {
            "dataset": ["d"] * 4 + ["e"],
            "label": ["cheap-bad", "mid-good", "dear-best", "dear-worse", "only"],
            "cost": [1.0, 2.0, 5.0, 6.0, 3.0],
            "accuracy": [80.0, 90.0, 95.0, 85.0, 50.0],
        }
    )
    front = pareto_front(points, "cost", "accuracy")
    assert front["label"].to_list() == ["cheap-bad", "mid-good", "dear-best", "only"]


def test_draw_writes_svg_png_and_offline_html(tmp_path):
    tables = write_runs(tmp_path)
    paths = draw("accuracy", tables, tmp_path / "figures")
    assert [p.suffix for p in paths] == [".svg", ".png", ".html"]
    svg, png, html = (p.read_bytes() for p in paths)
    assert svg.lstrip().startswith(b"<svg") and png.startswith(b"\x89PNG")
    assert b"cdn.jsdelivr" not in html and b"vega" in html  # inlined: opens offline


def test_unknown_figure_is_refused(tmp_path):
    from bpfree.core.errors import BpfreeError

    with pytest.raises(BpfreeError, match="valid: accuracy, energy"):
        draw("nope", None, tmp_path)


def write_analysed_runs(root, energy_source="nvml-counter"):
    """bp and mf runs with the hardware analysis's fields and per-epoch energy and FLOPs."""
    paths = []
    for algorithm, flops in (("bp", 3.0e4), ("mf", 1.5e4)):
        for seed in (1, 2):
            d = root / "runs" / algorithm / str(seed)
            d.mkdir(parents=True)
            metrics = {
                "algorithm": algorithm,
                "arch": "mlp:8,8",
                "dataset": "digits",
                "seed": seed,
                "status": "ok",
                "test_accuracy": 0.9,
                "train_time_s": 0.3,
                "epochs": 3,
                "energy_j": 30.0,
                "energy_source": energy_source,
                "peak_memory_mb": 500.0,
                "peak_memory_kind": "torch-allocated",
                "train_flops_per_sample": flops,
                "infer_flops_per_sample": flops / 3,
                "memory_breakdown_total_mb": 6.0,
                "memory_breakdown_stage": "train",
            }
            metrics |= {f"memory_{p}_mb": 1.0 for p in ("weights", "gradients", "optimizer", "activations")}
            metrics |= {"memory_cached_features_mb": 0.0, "memory_data_mb": 2.0}
            (d / "metrics.json").write_text(json.dumps(record(metrics)))
            (d / "history.csv").write_text(
                "epoch,stage,train_loss,val_loss,val_accuracy,epoch_time_s,energy_j,energy_source,flops\n"
                + "".join(f"{e},train,1.0,0.9,{0.5 + e / 10},0.1,10.0,{energy_source},1e6\n" for e in (1, 2, 3))
            )
            paths.append(d / "metrics.json")
    write_tables(build_tables(paths), root / "tables")
    return read_tables(root / "tables")


def test_hardware_figures_draw_flops_memory_parts_target_and_gpu_power(tmp_path):
    tables = write_analysed_runs(tmp_path / "gpu")
    assert "FLOPs per sample" in spec_text(FIGURES["flops"](tables))
    memory = spec_text(FIGURES["memory_breakdown"](tables))
    assert "optimiser state" in memory and "measured peak 500 MiB (torch-allocated)" in memory
    target = spec_text(FIGURES["to_target"](tables))
    assert "energy so far (J, nvml-counter)" in target and "99% of the BP twin" in target
    power = spec_text(FIGURES["power"](tables))
    assert "mean GPU power per epoch (W, nvml-counter)" in power and '"power_w": 100.0' in power


def test_without_gpu_energy_power_says_so_and_the_target_plots_time(tmp_path):
    tables = write_analysed_runs(tmp_path / "cpu", energy_source="estimate")
    assert "no GPU power was measured in these runs (energy sources: estimate)" in spec_text(FIGURES["power"](tables))
    assert "training time so far (s)" in spec_text(FIGURES["to_target"](tables))
    unanalysed = write_runs(tmp_path / "old")
    assert "no run was analysed" in spec_text(FIGURES["flops"](unanalysed))
