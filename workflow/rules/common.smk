# Helpers shared by the rules: the run grid from the config, and arch <-> path slugs.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir)))

from bpfree.workflow import Run, expand_runs, slug_to_arch

RUNS = expand_runs(config)


def run_dir(run):
    return f"results/runs/{run.dataset}/{run.arch_slug}/{run.algorithm}/seed{run.seed}"


def all_metrics():
    return [f"{run_dir(run)}/metrics.json" for run in RUNS]
