"""What the study produces, by name: shared by the workflow planner, the tables and the
figures, without importing any of them (or torch)."""

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
# results/tables/NAME.{csv,md,tex}
TABLE_NAMES = ["summary", "methods", "deltas", "paper", "cost", "hardware", "to_target"]
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
]
