"""The workflow: the config checked in one line before any job, the grid with its BP twins,
dry runs of both configs (the paper's through the SLURM profile), and one real run on a
tiny config inside a stand-in ``apptainer`` that records how Snakemake called it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bpfree.core.errors import BpfreeError
from bpfree.workflow.grid import (
    FIGURE_NAMES,
    Run,
    check_config,
    expand_runs,
    job_config_file,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
PAPER_DATASETS = {"mnist", "fashion-mnist", "cifar10", "cifar100"}

# Records every call, answers --version, fakes `pull`, and runs exec's command on the host:
# Snakemake calls `apptainer [--quiet --silent] exec --home DIR [ARGS] IMAGE SHELL -c CMD`.
STAND_IN_APPTAINER = """#!/bin/sh
printf '%s\\n' "$*" >> "${APPTAINER_LOG:?}"
case "$1" in
  --version) echo "apptainer version 1.3.4"; exit 0 ;;
  pull) touch "$3"; exit 0 ;;
esac
shift $(($# - 3)); exec "$@"
"""


def load(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def snakemake(*args: str, cwd: Path, env: dict | None = None, timeout: float = 240):
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def job_counts(output: str) -> dict[str, int]:
    """The first "Job stats" table of a Snakemake run: rule -> number of jobs."""
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.fixture
def stand_in_apptainer(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apptainer").write_text(STAND_IN_APPTAINER)
    (bin_dir / "apptainer").chmod(0o755)
    log = tmp_path / "apptainer.log"
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "APPTAINER_LOG": str(log)}, log


# -- the config, checked in Python --------------------------------------------------------
def test_both_configs_pass_the_check():
    for name in ("config.yaml", "paper.yaml"):
        check_config(load(name))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c.update(bogus=1), r"unknown key 'bogus' at top level; valid keys: .*seeds"),
        (
            lambda c: c["experiments"][0].update(dataset="digits"),
            r"unknown key 'dataset' at experiments\[0\]; valid keys: algorithm, arch, datasets",
        ),
        (
            lambda c: c["experiments"][0].update(algorithm="nope"),
            r"experiments\[0\]: unknown algorithm 'nope'; valid: bp, ",
        ),
        (
            lambda c: c["experiments"][0].update(datasets=["imagenet"]),
            r"experiments\[0\]: unknown dataset 'imagenet'; valid: .*digits",
        ),
        (
            lambda c: c["experiments"][0].update(arch="mlp:10,x"),
            r"experiments\[0\]\.arch: expected mlp:W1,W2,\.\.\. or cnn:C1,C2,\.\.\., got 'mlp:10,x'",
        ),
        (
            lambda c: c["experiments"][0].update(algorithm="mf", arch="cnn:8,8"),
            r"experiments\[0\]: algorithm 'mf' cannot train cnn:8,8 \(its architectures: mlp",
        ),
        (lambda c: c.update(seeds=[1, 1]), r"seeds: items must be distinct"),
        (lambda c: c.update(data_root="a\nb"), r"data_root: must not contain control characters"),
    ],
)
def test_a_bad_config_is_one_clear_line(change, message):
    config = load("config.yaml")
    change(config)
    with pytest.raises(BpfreeError, match=message) as err:
        check_config(config)
    assert "\n" not in str(err.value)


def test_jobs_read_one_config_file():
    assert job_config_file(["c.yaml"], {"device": "cpu"}) == "c.yaml"
    with pytest.raises(BpfreeError, match="exactly one --configfile"):
        job_config_file(["a.yaml", "b.yaml"], {})
    with pytest.raises(BpfreeError, match="put early_stopping in the config file"):
        job_config_file(["c.yaml"], {"early_stopping": {"patience": 3}})


# -- the grid -----------------------------------------------------------------------------
def test_every_method_gets_its_bp_twin_per_dataset_and_seed():
    config = {
        "seeds": [3, 1],
        "experiments": [
            {"algorithm": "mf", "arch": "mlp:8,8", "datasets": ["digits", "mnist"]},
            {"algorithm": "cafo-rand", "arch": "cnn:4,8", "datasets": ["digits"]},
        ],
    }
    runs = expand_runs(config)
    assert len(runs) == (2 * 2 + 2) * 2
    assert Run("mnist", "mlp:8,8", "bp", 3) in runs and Run("digits", "cnn:4,8", "bp", 1) in runs
    assert runs[0].dir == "results/runs/digits/cnn-4-8/bp/seed1"


def test_an_experiment_may_name_its_own_seeds_and_a_shared_twin_trains_them_all():
    config = {
        "seeds": [1, 2],
        "experiments": [
            {"algorithm": "mf", "arch": "mlp:8,8", "datasets": ["digits"], "seeds": [1, 2, 3, 4]},
            {"algorithm": "ff", "arch": "mlp:8,8", "datasets": ["digits"], "seeds": [9]},
            {"algorithm": "cafo-rand", "arch": "cnn:4,8", "datasets": ["digits"]},
        ],
    }
    check_config(config)
    by_study = {}
    for run in expand_runs(config):
        by_study.setdefault((run.arch, run.algorithm), []).append(run.seed)
    assert by_study == {
        ("cnn:4,8", "bp"): [1, 2],
        ("cnn:4,8", "cafo-rand"): [1, 2],
        ("mlp:8,8", "bp"): [1, 2, 3, 4, 9],  # the twin of both MLP experiments
        ("mlp:8,8", "ff"): [9],
        ("mlp:8,8", "mf"): [1, 2, 3, 4],
    }
    config["experiments"][0]["seeds"] = [1, 1]
    with pytest.raises(BpfreeError, match=r"experiments\[0\]\.seeds: items must be distinct"):
        check_config(config)


def test_paper_grid_covers_every_method_and_twin_on_all_four_datasets():
    runs = expand_runs(load("paper.yaml"))
    assert {r.dataset for r in runs} == PAPER_DATASETS
    assert {r.algorithm for r in runs} == {"bp", "ff", "mf", "cafo-rand", "cafo-dfa"}
    assert len({r.seed for r in runs}) == 3
    for r in runs:  # each method's twin on the same arch and dataset
        assert Run(r.dataset, r.arch, "bp", r.seed) in runs
    assert check_config(load("paper.yaml")).tuning.n_trials >= 1


# -- Snakemake itself ---------------------------------------------------------------------
@pytest.mark.slow
def test_bad_config_stops_before_any_job(tmp_path):
    config = load("config.yaml") | {"experiments": [{"algorithm": "nope", "arch": "mlp:8", "datasets": ["digits"]}]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake("-n", "--cores", "1", "--configfile", "bad.yaml", cwd=tmp_path)
    assert proc.returncode != 0
    assert "bpfree: config error: experiments[0]: unknown algorithm 'nope'; valid: bp," in proc.stderr
    assert "Building DAG" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_default_config_dry_run_plans_every_table_and_figure(tmp_path):
    config = load("config.yaml")
    proc = snakemake("-n", "--cores", "2", "--configfile", str(REPO / "config" / "config.yaml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = job_counts(proc.stdout)
    assert jobs["train"] == jobs["spec"] == len(expand_runs(config))
    assert "gpu=1" not in proc.stdout  # no GPU here: no job waits for one
    if check_config(config).tuning.n_trials:
        assert jobs["tune"] == len({r.study for r in expand_runs(config)})
    assert jobs["aggregate"] == 1 and "download" not in jobs  # digits is offline
    assert {f"fig_{name}" for name in FIGURE_NAMES} <= set(jobs)


@pytest.mark.slow
def test_paper_config_dry_run_through_the_slurm_profile(tmp_path, stand_in_apptainer):
    env, log = stand_in_apptainer
    proc = snakemake(
        "-n",
        "--profile",
        str(REPO / "profiles" / "slurm-apptainer"),
        "--configfile",
        str(REPO / "config" / "paper.yaml"),
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    jobs = job_counts(out)
    runs = expand_runs(load("paper.yaml"))
    assert jobs["train"] == len(runs) == 78 and jobs["download"] == 4
    assert jobs["tune"] == len({r.study for r in runs}) == 26
    blocks = {m[1]: m[2] for m in re.finditer(r"^rule (\w+):\n(.*?)(?=^\[|\Z)", out, re.M | re.S)}
    for rule in ("train", "tune"):
        assert re.search(r"resources: .*slurm_partition=gpu.*gpu=1", blocks[rule]), rule
    assert "gpu=1" not in blocks["aggregate"] and "slurm_partition=cpu" in blocks["aggregate"]
    for dataset in PAPER_DATASETS:
        assert f"results/paper/runs/{dataset}/" in out
    assert log.read_text().splitlines() == ["--version"]  # checked for, nothing pulled in a dry run


def test_readme_names_every_figure_target():
    readme = (REPO / "README.md").read_text()
    for name in FIGURE_NAMES:
        assert f"fig_{name}" in readme


TINY = {
    "seeds": [1],
    "container": "docker://example.org/bpfree:test",
    "experiments": [{"algorithm": "bp", "arch": "mlp:16", "datasets": ["digits"]}],
    "early_stopping": {"max_epochs": 2},
    "measurement": {"idle_seconds": 0, "codecarbon": False},
}


@pytest.mark.slow
def test_tiny_workflow_runs_inside_the_container(tmp_path, stand_in_apptainer):
    """A real run of one figure's target: train, aggregate and that figure, each job through
    the stand-in apptainer with the configured image and the workflow profile's --nv; the
    other figures are separate targets, still to be made."""
    env, log = stand_in_apptainer
    config = dict(TINY)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    proc = snakemake(
        "fig_accuracy", "--cores", "2", "--use-singularity", "--configfile", "tiny.yaml", cwd=tmp_path, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    tables = tmp_path / "results" / "tiny" / "tables"
    for name in ("summary", "methods", "deltas", "paper"):
        for ext in ("csv", "md", "tex"):
            assert (tables / f"{name}.{ext}").stat().st_size > 0
    assert len((tables / "summary.csv").read_text().splitlines()) == 2  # header + one run
    figures = tmp_path / "results" / "tiny" / "figures"
    assert sorted(p.name for p in figures.iterdir()) == sorted(f"accuracy.{ext}" for ext in ("svg", "png", "html"))

    calls = log.read_text().splitlines()
    assert any(c.startswith("pull ") and c.endswith(" docker://example.org/bpfree:test") for c in calls)
    execs = [c for c in calls if c.startswith("exec ")]
    assert len(execs) == 4  # spec, train, aggregate, the figure
    assert all(" --nv " in c and ".snakemake/singularity/" in c for c in execs)
    assert any("bpfree train --spec results/tiny/runs/digits/mlp-16/bp/seed1/spec.yaml" in c for c in execs)

    rest = snakemake("-n", "--cores", "2", "--use-singularity", "--configfile", "tiny.yaml", cwd=tmp_path, env=env)
    assert rest.returncode == 0, rest.stderr[-2000:]
    assert set(job_counts(rest.stdout)) == {f"fig_{n}" for n in FIGURE_NAMES} - {"fig_accuracy"} | {"all"}


@pytest.mark.slow
def test_the_workflow_is_formatted_and_lints_clean():
    """Conventions of the Snakemake catalog: snakefmt's layout and `snakemake --lint`."""
    fmt = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "Snakefile", "workflow"], cwd=REPO, capture_output=True, text=True
    )
    assert fmt.returncode == 0, fmt.stderr + fmt.stdout
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    assert lint.returncode == 0 and "Congratulations" in lint.stdout + lint.stderr, lint.stdout + lint.stderr


@pytest.mark.slow
def test_config_values_and_paths_never_reach_the_shell_as_commands(tmp_path):
    """Issue 18: a data root, a config path and a working directory with spaces and shell
    metacharacters are passed as single arguments; nothing they say is run."""
    work = tmp_path / "my work dir"
    work.mkdir()
    config = dict(TINY, data_root="my data;touch INJECTED_DATA", device="cpu")
    config.pop("container")
    path = work / "conf $(touch INJECTED_SUB);touch INJECTED_CFG.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = snakemake("aggregate", "--cores", "2", "--configfile", path.name, cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (work / "results" / path.stem / "tables" / "summary.csv").exists()
    assert not [p.name for p in tmp_path.rglob("INJECTED*")]
    spec = yaml.safe_load((work / "results" / path.stem / "runs/digits/mlp-16/bp/seed1/spec.yaml").read_text())
    assert spec["machine"]["data_root"] == "my data;touch INJECTED_DATA"
