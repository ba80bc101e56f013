"""The Snakemake profiles (profiles/*, .test/profiles/*) and the .test config: what each SLURM
profile asks of a cluster, read the way the SLURM executor plugin reads it, and that
Snakemake plans the .test workflow through each. .ci/slurm-test submits through them for real."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHIPPED_SLURM = ("slurm", "slurm-apptainer")
GPU_RULES = ("train", "tune", "tune_worker")


def profile(path: str) -> dict:
    return yaml.safe_load((REPO / path / "config.yaml").read_text())


def slurm_profiles() -> dict[str, dict]:
    found = {f"profiles/{p.name}": profile(f"profiles/{p.name}") for p in sorted((REPO / "profiles").iterdir())}
    found[".test/profiles/slurm"] = profile(".test/profiles/slurm")
    return {name: p for name, p in found.items() if p.get("executor") == "slurm"}


class Job:
    """What the plugin reads of a job: its resources, by attribute and with .get."""

    def __init__(self, resources: dict):
        self.resources = type("Resources", (dict,), {"__getattr__": dict.__getitem__})(resources)


def test_every_slurm_profile_is_found():
    assert set(slurm_profiles()) == {"profiles/slurm", "profiles/slurm-apptainer", ".test/profiles/slurm"}


@pytest.mark.parametrize("name", ["profiles/slurm", "profiles/slurm-apptainer", ".test/profiles/slurm"])
def test_job_status_works_without_an_accounting_database(name):
    """sacct fails without slurmdbd and the plugin then never sees a job end (Snakemake
    hangs); squeue works with or without accounting."""
    assert slurm_profiles()[name]["slurm-status-command"] == "squeue"
    assert slurm_profiles()[name]["slurm-requeue"] is True  # a requeued job resumes (README)


@pytest.mark.parametrize("name", SHIPPED_SLURM)
def test_shipped_profiles_ask_for_any_gpu_not_a_type(name):
    """A forced type (gpu_model: a100 -> --gpus=a100:1) is refused at submission by every
    cluster without that gres type; the type is the user's option, in a comment."""
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    p = slurm_profiles()[f"profiles/{name}"]
    text = (REPO / "profiles" / name / "config.yaml").read_text()
    assert re.search(r"^\s*# gpu_model: a100", text, re.M)
    for rule in GPU_RULES:
        resources = p["set-resources"][rule]
        assert "gpu_model" not in resources and "gres" not in resources, rule
        assert set_gres_string(Job(resources)).strip() == "--gpus=1", rule
        assert resources["slurm_partition"] == "gpu"
        assert p["set-threads"][rule] == resources["cpus_per_gpu"], rule  # torch threads = CPUs given
    assert "gpu" not in p["default-resources"] and "gpu_model" not in p["default-resources"]


def test_shipped_profile_requests_stay_modest():
    """The shipped requests fit a common GPU node's share: the old 8 CPUs, 32 GB and 24 h per
    job for the tiny default config were refused or queued for long on many clusters."""
    p = profile("profiles/slurm")
    for rule in GPU_RULES:
        resources = p["set-resources"][rule]
        assert resources["gpu"] == 1 and resources["cpus_per_gpu"] <= 4, rule
        assert resources["mem_mb"] <= 16000 and resources["runtime"] <= 720, rule


def test_slurm_is_the_profile_and_apptainer_an_option_on_top():
    plain, image = profile("profiles/slurm"), profile("profiles/slurm-apptainer")
    assert "software-deployment-method" not in plain and "use-singularity" not in plain
    assert image.pop("software-deployment-method") == "apptainer"
    assert image == plain  # every other setting identical: one place to edit each
    # --nv for --sdm apptainer comes from the workflow profile Snakemake always reads
    assert "--nv" in profile("profiles/default")["apptainer-args"]


@pytest.mark.parametrize("name", ["profiles/slurm", "profiles/slurm-apptainer", ".test/profiles/slurm"])
def test_train_and_tune_jobs_ask_for_sigterm_before_the_time_limit(name):
    """SLURM's SIGTERM at the limit leaves KillWait (30 s) before SIGKILL; --signal asks for it
    120 s earlier, as sbatch gets it from the plugin (which also accepts the option)."""
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    p = slurm_profiles()[name]
    for rule in GPU_RULES:
        extra = p["set-resources"][rule]["slurm_extra"]
        assert extra == "'--signal=TERM@120'", rule  # quoted: Snakemake evaluates the value
        validate_slurm_extra(Job({"slurm_extra": extra.strip("'")}))


def test_the_test_profile_is_a_cpu_only_cluster():
    p = profile(".test/profiles/slurm")
    assert "software-deployment-method" not in p
    for rule, resources in {**p["set-resources"], "default": p["default-resources"]}.items():
        assert not {"gpu", "gpu_model", "gres", "cpus_per_gpu"} & set(resources), rule
        assert Job(resources).resources.get("cpus_per_task", 1) == p["set-threads"].get(rule, 1)
    assert p["retries"] == 0  # a failing job fails CI rather than being resubmitted


def snakemake(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, **(env or {})},
    )


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1].split("total", 1)[0]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["profiles/slurm", "profiles/slurm-apptainer", ".test/profiles/slurm"])
def test_the_test_config_plans_through_each_slurm_profile(tmp_path, name):
    """Snakemake accepts every key of the profile and plans the .test workflow: both
    methods' studies and runs, the tables and every figure; GPU rules on the gpu partition."""
    bin_dir = tmp_path / "bin"  # the Apptainer profile checks for `apptainer` even in a dry run
    bin_dir.mkdir()
    (bin_dir / "apptainer").write_text('#!/bin/sh\n[ "$1" = --version ] && echo "apptainer version 1.3.4"\n')
    (bin_dir / "apptainer").chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    config = str(REPO / ".test" / "config.yaml")
    proc = snakemake("-n", "--profile", str(REPO / name), "--configfile", config, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    jobs = job_counts(out)
    assert jobs["train"] == 4 and jobs["tune"] == 2 and jobs["aggregate"] == 1  # mf + its bp twin, 2 seeds
    assert sum(n for rule, n in jobs.items() if rule.startswith("fig_")) >= 7
    blocks = {m[1]: m[2] for m in re.finditer(r"^rule (\w+):\n(.*?)(?=^\[|\Z)", out, re.M | re.S)}
    shipped = name.startswith("profiles/")
    assert ("slurm_partition=gpu" in blocks["train"]) == shipped
    assert ("gpu=1" in blocks["tune"]) == shipped and "gpu_model" not in out
