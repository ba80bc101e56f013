# Helpers shared by the rules: the run grid and tuning studies from the checked config, and paths
# (each written once, in bpfree/core/outputs.py: a value not given stays a wildcard), every one
# under the config's results folder (RESULTS_DIR).
from functools import partial

import bpfree.core.outputs as _outputs
from bpfree.core.outputs import (
    BEST_PARAMS,
    FIGURE_EXTS,
    HISTORIES,
    RUN_HISTORY,
    RUN_METRICS,
    RUN_SPEC,
    STUDY_JOURNAL,
    STUDY_TRIALS,
    TABLE_EXTS,
    TABLE_SET,
    WORKER_PARAMS,
    results_folder,
)
from bpfree.progress.grid import ARCH_SLUG_PATTERN, expand_grid, slug_to_arch
from bpfree.progress.grid import Study as _Study
from bpfree.workflow.grid import (
    FIGURE_NAMES,
    TABLE_NAMES,
    gpus_per_job,
    needs_download,
)
from bpfree.core.spec import RUN_SECTIONS as _RUN_SECTIONS, STUDY_SECTIONS

# this config's results folder (its `results` key, else results/NAME of its file): runs,
# studies, tables, figures, logs and benchmarks all lie under it, so configs never collide
RESULTS_DIR = results_folder(CONFIGFILE, CONFIG.results)
LOGS = f"{RESULTS_DIR}/logs"
(
    figure_file,
    report_benchmark,
    run_dir,
    run_file,
    study_dir,
    study_file,
    table_file,
    spec_benchmark,
    tables_dir,
    train_benchmark,
    tune_benchmark,
) = (
    partial(getattr(_outputs, name), results=RESULTS_DIR)
    for name in (
        "figure_file",
        "report_benchmark",
        "run_dir",
        "run_file",
        "study_dir",
        "study_file",
        "table_file",
        "spec_benchmark",
        "tables_dir",
        "train_benchmark",
        "tune_benchmark",
    )
)

# the grid, as bpfree plan and bpfree status expand it too (bpfree.progress.grid)
GRID = expand_grid(CONFIG)
# every run, each method's BP twin included; the tuning studies follow from them
RUNS = GRID.runs
# trials per study; 0: no tuning, every run uses the algorithm's defaults
N_TRIALS = CONFIG.tuning.n_trials
# per study: "tuned" (its study, when N_TRIALS > 0) or "paper" (the paper's values, no study)
STUDY_PARAMS = GRID.params
TUNE_WORKERS = CONFIG.tune_workers  # jobs sharing each study's journal
DATA_ROOT = CONFIG.data_root
TABLES = TABLE_NAMES
FIGURES = FIGURE_NAMES
# a measured job that computes on a GPU holds one (resources: gpu), so that two runs never
# share a board and neither's time or energy includes the other's
GPU_PER_JOB = gpus_per_job(CONFIG.device)
# what a run's spec is made of, as the spec rule's params: a change rewrites the spec
RUN_SECTIONS = {key: config.get(key) for key in _RUN_SECTIONS}


wildcard_constraints:
    dataset=r"[a-z0-9][a-z0-9-]*",
    arch=ARCH_SLUG_PATTERN,  # any registered kind: derived from bpfree.core.spec.ARCH_PATTERN
    algorithm=r"[a-z0-9][a-z0-9-]*",
    seed=r"\d+",
    worker=r"\d+",


def every_core(wildcards):
    """Threads of a measured job (train, tune): ``job_threads`` from the config, or every
    core of a local run, so that it runs alone and no other job's work lands in its time or
    energy. A callable, so that modes without --cores (--report) need none; on SLURM the
    profile's set-threads decides."""
    return CONFIG.job_threads or workflow.cores


def all_metrics():
    return [
        run_file(RUN_METRICS, run.dataset, run.arch_slug, run.algorithm, run.seed)
        for run in RUNS
    ]


def all_histories():
    return [
        run_file(RUN_HISTORY, run.dataset, run.arch_slug, run.algorithm, run.seed)
        for run in RUNS
    ]


def all_tables():
    return [table_file(name, ext) for name in TABLES for ext in TABLE_EXTS]


def figure_files(name):
    return [figure_file(name, ext) for ext in FIGURE_EXTS]


def all_figures():
    return [path for name in FIGURES for path in figure_files(name)]


def dataset_ready(wildcards):
    """The download marker for torchvision datasets; nothing for digits."""
    if needs_download(wildcards.dataset):
        return {"data": f"{DATA_ROOT}/.bpfree/{wildcards.dataset}.ready"}
    return {}


def params_mode(wildcards):
    study = _Study(wildcards.dataset, slug_to_arch(wildcards.arch), wildcards.algorithm)
    return STUDY_PARAMS.get(study, "tuned")


def study_n_trials(wildcards):
    """The study's trial count: tuning.n_trials, or the paper's for it (tuning.protocol: paper)."""
    return GRID.trials.get(
        _Study(wildcards.dataset, slug_to_arch(wildcards.arch), wildcards.algorithm), 0
    )


def is_tuned(wildcards):
    """A study runs for this run: tuning is on and its experiment does not take the paper's values."""
    return N_TRIALS > 0 and params_mode(wildcards) == "tuned"


def spec_inputs(wildcards):
    if not is_tuned(wildcards):
        return {}
    # extra workers run beside the first; the runs wait for all of them
    return {
        "params": study_file(
            BEST_PARAMS, wildcards.dataset, wildcards.arch, wildcards.algorithm
        ),
        "workers": [
            study_file(
                WORKER_PARAMS.format(worker=k),
                wildcards.dataset,
                wildcards.arch,
                wildcards.algorithm,
            )
            for k in range(2, TUNE_WORKERS + 1)
        ],
    }


def paper_values(wildcards):
    """The paper's row a run takes (its params and early stopping), or None: a spec rule
    param, so that a changed row rewrites the run's spec."""
    if params_mode(wildcards) != "paper":
        return None
    from bpfree.core.paper import paper_row

    row = paper_row(
        wildcards.algorithm, slug_to_arch(wildcards.arch), wildcards.dataset
    )
    return {"params": row.params, "early_stopping": row.early_stopping.model_dump()}


def params_option(wildcards, input):
    """``--params FILE`` as two arguments (each quoted by :q), ``--paper-params``, or nothing."""
    if params_mode(wildcards) == "paper":
        return ["--paper-params"]
    return ["--params", input.params] if is_tuned(wildcards) else []


def all_trial_tables():
    """Each tuning study's trial table (rule tune); none when tuning is off."""
    if N_TRIALS == 0:
        return []
    return sorted(
        {
            study_file(STUDY_TRIALS, r.dataset, r.arch_slug, r.algorithm)
            for r in RUNS
            if STUDY_PARAMS.get(r.study) == "tuned"
        }
    )


def import_option(wildcards):
    """``--from PATH`` where the config's data_from names a local copy of the dataset."""
    source = CONFIG.data_from.get(wildcards.dataset)
    return ["--from", source] if source else []


def trials_option(wildcards, input):
    """``--trials FILE...`` (each quoted by :q), or nothing."""
    return ["--trials", *input.trials] if input.trials else []
