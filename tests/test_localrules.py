"""Only train and tune jobs go to a cluster's scheduler: Snakemake's own view of the parsed
workflow (the rules it would submit under a SLURM profile; `localrule` and input-only rules
run where Snakemake runs). .ci/slurm-test checks the same on a real cluster."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_only_train_and_tune_would_be_submitted(tmp_path):
    probe = f"""
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, ResourceSettings
with SnakemakeApi() as api:
    wf = api.workflow(
        resource_settings=ResourceSettings(),
        config_settings=ConfigSettings(configfiles=[Path({str(REPO / ".test" / "config.yaml")!r})]),
        snakefile=Path({str(REPO / "Snakefile")!r}),
        workdir=Path("."),
    )
    w = wf._workflow
    print(sorted(r.name for r in w.rules if not (r.name in w._localrules or r.norun)))
    print(sorted(r.name for r in w.rules))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    submitted, every = (ast.literal_eval(line) for line in out.stdout.strip().splitlines()[-2:])
    assert submitted == ["train", "tune", "tune_worker"]
    assert {"aggregate", "spec", "download", "fig_cost", "figures", "all"} <= set(every)
