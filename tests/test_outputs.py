"""The study's paths, each written once (bpfree/core/outputs.py): given values they name one
run's or study's files; given none they are the workflow rules' wildcard patterns."""

from __future__ import annotations

from bpfree.core import outputs
from bpfree.workflow.grid import Run


def test_the_paths_users_rely_on():
    assert outputs.run_dir("digits", "mlp-16", "bp", 1) == "results/runs/digits/mlp-16/bp/seed1"
    assert outputs.run_file("metrics.json", "mnist", "cnn-4-8", "cafo-rand", 3, results="/x") == (
        "/x/runs/mnist/cnn-4-8/cafo-rand/seed3/metrics.json"
    )
    assert outputs.study_file(outputs.STUDY_JOURNAL, "digits", "mlp-8-8", "mf") == (
        "results/tuning/digits/mlp-8-8/mf/study.journal"
    )
    assert outputs.study_file(outputs.STUDY_TRIALS, "d", "a", "ff").endswith("/ff/study.trials.csv")
    assert outputs.study_file(outputs.BEST_PARAMS, "d", "a", "ff").endswith("/ff/best_params.yaml")
    assert outputs.table_file("cost", "csv") == "results/tables/cost.csv"
    assert outputs.figure_file("accuracy", "svg") == "results/figures/accuracy.svg"
    assert outputs.train_benchmark("d", "a", "bp", 2) == "results/benchmarks/train/d/a/bp/seed2.tsv"
    assert outputs.tune_benchmark("d", "a", "mf") == "results/benchmarks/tune/d/a/mf.tsv"
    assert outputs.tune_benchmark("d", "a", "mf", worker=2) == "results/benchmarks/tune/d/a/mf.worker2.tsv"
    assert Run("digits", "mlp:16", "bp", 1).dir == "results/runs/digits/mlp-16/bp/seed1"


def test_without_values_they_are_the_rules_wildcard_patterns():
    assert outputs.run_file("metrics.json") == "results/runs/{dataset}/{arch}/{algorithm}/seed{seed}/metrics.json"
    assert outputs.study_file(outputs.BEST_PARAMS) == "results/tuning/{dataset}/{arch}/{algorithm}/best_params.yaml"
    assert (
        outputs.study_file(outputs.WORKER_PARAMS) == "results/tuning/{dataset}/{arch}/{algorithm}/worker{worker}.yaml"
    )
    assert outputs.train_benchmark() == "results/benchmarks/train/{dataset}/{arch}/{algorithm}/seed{seed}.tsv"
    assert (
        outputs.tune_benchmark(worker=True) == "results/benchmarks/tune/{dataset}/{arch}/{algorithm}.worker{worker}.tsv"
    )
    assert outputs.run_dir("digits", seed=4) == "results/runs/digits/{arch}/{algorithm}/seed4"  # some given
