"""What the study produces, by name: shared by the workflow planner, the tables and the
figures, without importing any of them (or torch)."""

from __future__ import annotations

from pathlib import Path

BASELINE = "bp"  # every BP-free method is compared with bp on its own architecture
# the columns every run's history.csv begins with, in this order (bpfree.engine.run writes them,
# bpfree.report.tables checks them)
HISTORY_COLUMNS = ["epoch", "stage", "train_loss", "val_loss", "val_accuracy", "epoch_time_s"]
# the columns of a study's trial table, STUDY.trials.csv: one row per trial, every state
# (bpfree.tuning.records writes it, bpfree.report.cost reads it); ``spec``: the trial's run
# specification, kept beside the table (``bpfree train --spec`` re-runs the trial)
TRIAL_COLUMNS = [
    "study",
    "algorithm",
    "arch",
    "dataset",
    "pruner",
    "number",
    "state",
    "value",
    "epochs",
    "time_s",
    "train_time_s",
    "energy_j",
    "energy_source",
    "reason",
    "params",
    "spec",
]
# the to_target table's target: this fraction of the BP twin's best validation accuracy (the
# config's target_fraction default, bpfree aggregate --target-fraction's, bpfree.report.target's)
TARGET_FRACTION = 0.99
# what a run's memory breakdown is made of, in this order (bpfree.engine.analysis counts them; each
# is a record's memory_PART_mb, a column of the hardware table and a colour of the memory figure)
MEMORY_PARTS = ("weights", "gradients", "optimizer", "activations", "cached_features", "data")
# results/tables/NAME.{csv,md,tex}
TABLE_NAMES = ["summary", "methods", "deltas", "paper", "cost", "hardware", "to_target", "claims"]
# results/figures/NAME.{svg,png,html}; each is a workflow target: fig_NAME
FIGURE_NAMES = [
    "accuracy",
    "energy",
    "time",
    "pareto",
    "val_loss",
    "memory",
    "paper",
    "cost",
    "flops",
    "memory_breakdown",
    "to_target",
    "power",
    "claims",
]

# -- where the study's files lie ----------------------------------------------------------------
# Every path under results/ written once, here: the workflow's rules (workflow/rules/*.smk), its
# planner (bpfree.progress.grid, bpfree.workflow.forecast) and the commands that read a grid's results (status,
# dashboard, figures) build them with these functions. ``arch`` is an architecture's slug
# (mlp-256-256). A value not given stays a Snakemake wildcard, so that run_dir() is the rules'
# pattern "results/runs/{dataset}/{arch}/{algorithm}/seed{seed}". ``results``: the results folder.
RESULTS = "results"
# the Snakefile's config when --configfile is not given (bpfree plan's default too)
DEFAULT_CONFIG = "config/config.yaml"


def results_folder(configfile: str | Path, configured: str | None = None) -> str:
    """A workflow config's results folder: its ``results`` key, else ``results/NAME`` with NAME
    its file's name without the extension (config/config.yaml: results/config), so that two
    configs never write into each other's. The Snakefile, ``bpfree status``, ``plan`` and
    ``dashboard`` all take it from here."""
    if configured:
        return str(configured)
    return f"{RESULTS}/{Path(configfile).stem}"


# a run folder's files (bpfree train writes them; RESULTS/runs/.../seedN/ in the workflow)
RUN_SPEC = "spec.yaml"  # its complete resolved specification: bpfree train --spec re-runs it
RUN_METRICS = "metrics.json"  # its record (bpfree.core.record.RunRecord)
RUN_HISTORY = "history.csv"  # one row per epoch (HISTORY_COLUMNS first)
RUN_CHECKPOINT = "checkpoint.pt"  # while it runs: what a killed run resumes from
RUN_FILES = (RUN_SPEC, RUN_METRICS, RUN_HISTORY, RUN_CHECKPOINT)
TABLE_EXTS = ("csv", "md", "tex")  # each table's files
FIGURE_EXTS = ("svg", "png", "html")  # each figure's files
HISTORIES = "histories.csv"  # every run's epochs, beside the tables (RESULTS/tables)
# beside the tables: what bpfree aggregate wrote as one set (each file's SHA-256), written last;
# without it, or with a file that differs, the set is incomplete and bpfree figures refuses it
TABLE_SET = "tables.set.json"
STUDY_JOURNAL = "study.journal"  # a study's Optuna journal (never a rule's output: it resumes)
STUDY_TRIALS = "study.trials.csv"  # every trial of a study, beside its journal
BEST_PARAMS = "best_params.yaml"  # the study's best trial, what a run's spec takes
WORKER_PARAMS = "worker{worker}.yaml"  # what an extra tuning worker (2, 3, ...) writes when done
_STUDY = "{dataset}/{arch}/{algorithm}"
_RUN = _STUDY + "/seed{seed}"


def within(folder: object, path: object) -> bool:
    """Whether ``path`` stays inside ``folder`` once ``..`` is resolved (links are not
    followed: what a name from a config can reach)."""
    import os

    base = os.path.normpath(os.path.abspath(str(folder)))
    return os.path.normpath(os.path.abspath(str(path))).startswith(base + os.sep)


def folder_name(name: object, what: str) -> str:
    """``name`` (a dataset's, an algorithm's) as it becomes one folder of a path under
    results/: one path component, so that no name from a config reaches outside its folder
    (``../../outside``) or into another's (``a/b``); one BpfreeError line otherwise."""
    from bpfree.core.errors import BpfreeError

    text = str(name)
    if not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text:
        raise BpfreeError(f"{what} {text!r} cannot be a folder name (one path component, not . or ..)")
    return text


class _Wildcards(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def fill(template: str, **values: object) -> str:
    """``template`` with ``values`` put in; each name not given (or None) left as ``{name}``."""
    return template.format_map(_Wildcards({k: v for k, v in values.items() if v is not None}))


def study_dir(
    dataset: str | None = None, arch: str | None = None, algorithm: str | None = None, *, results: object = RESULTS
) -> str:
    """RESULTS/tuning/DATASET/ARCH/ALGORITHM: a tuning study's journal, trials and best params."""
    return f"{results}/tuning/" + fill(_STUDY, dataset=dataset, arch=arch, algorithm=algorithm)


def study_file(
    name: str,
    dataset: str | None = None,
    arch: str | None = None,
    algorithm: str | None = None,
    *,
    results: object = RESULTS,
) -> str:
    """A file of a study's folder: STUDY_JOURNAL, STUDY_TRIALS, BEST_PARAMS or WORKER_PARAMS."""
    return f"{study_dir(dataset, arch, algorithm, results=results)}/{name}"


def run_dir(
    dataset: str | None = None,
    arch: str | None = None,
    algorithm: str | None = None,
    seed: int | str | None = None,
    *,
    results: object = RESULTS,
) -> str:
    """RESULTS/runs/DATASET/ARCH/ALGORITHM/seedSEED: one run's spec.yaml, metrics.json, history.csv."""
    return f"{results}/runs/" + fill(_RUN, dataset=dataset, arch=arch, algorithm=algorithm, seed=seed)


def run_file(
    name: str,
    dataset: str | None = None,
    arch: str | None = None,
    algorithm: str | None = None,
    seed: int | str | None = None,
    *,
    results: object = RESULTS,
) -> str:
    return f"{run_dir(dataset, arch, algorithm, seed, results=results)}/{name}"


def tables_dir(results: object = RESULTS) -> str:
    """RESULTS/tables: bpfree aggregate's tables, NAME.{csv,md,tex} (TABLE_NAMES), and histories.csv."""
    return f"{results}/tables"


def table_file(name: str, ext: str, *, results: object = RESULTS) -> str:
    return f"{tables_dir(results)}/{name}.{ext}"


def figures_dir(results: object = RESULTS) -> str:
    """RESULTS/figures: NAME.{svg,png,html} (FIGURE_NAMES)."""
    return f"{results}/figures"


def figure_file(name: str, ext: str, *, results: object = RESULTS) -> str:
    return f"{figures_dir(results)}/{name}.{ext}"


def run_benchmark(
    rule: str,
    dataset: str | None = None,
    arch: str | None = None,
    algorithm: str | None = None,
    seed: int | str | None = None,
    *,
    results: object = RESULTS,
) -> str:
    """Snakemake's benchmark of a run's job of ``rule`` (train, spec):
    RESULTS/benchmarks/RULE/DATASET/ARCH/ALGORITHM/seedSEED.tsv."""
    return f"{results}/benchmarks/{rule}/" + fill(
        f"{_RUN}.tsv", dataset=dataset, arch=arch, algorithm=algorithm, seed=seed
    )


def train_benchmark(*where: object, results: object = RESULTS) -> str:
    """A train job's benchmark (:func:`run_benchmark`)."""
    return run_benchmark("train", *where, results=results)


def spec_benchmark(*where: object, results: object = RESULTS) -> str:
    """A spec job's benchmark (:func:`run_benchmark`)."""
    return run_benchmark("spec", *where, results=results)


def tune_benchmark(
    dataset: str | None = None,
    arch: str | None = None,
    algorithm: str | None = None,
    *,
    worker: bool | int | str = False,
    results: object = RESULTS,
) -> str:
    """Snakemake's benchmark of a tune job: RESULTS/benchmarks/tune/DATASET/ARCH/ALGORITHM.tsv, or an
    extra worker's ALGORITHM.workerK.tsv (worker: K; True: the ``{worker}`` wildcard; ``*``: a glob)."""
    tail = "" if worker is False else ".worker" + ("{worker}" if worker is True else str(worker))
    return f"{results}/benchmarks/tune/" + fill(f"{_STUDY}{tail}.tsv", dataset=dataset, arch=arch, algorithm=algorithm)


def report_benchmark(job: str, *, results: object = RESULTS) -> str:
    """Snakemake's benchmark of the aggregate job (``aggregate``) or a figure's (``fig_NAME``):
    RESULTS/benchmarks/report/JOB.tsv."""
    return f"{results}/benchmarks/report/{job}.tsv"
