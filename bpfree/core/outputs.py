"""What the study produces, by name: shared by the workflow planner, the tables and the
figures, without importing any of them (or torch)."""

BASELINE = "bp"  # every BP-free method is compared with bp on its own architecture
# the columns every run's history.csv begins with, in this order (bpfree.engine.run writes them,
# bpfree.report.tables checks them)
HISTORY_COLUMNS = ["epoch", "stage", "train_loss", "val_loss", "val_accuracy", "epoch_time_s"]
# the to_target table's target: this fraction of the BP twin's best validation accuracy (the
# config's target_fraction default, bpfree aggregate --target-fraction's, bpfree.report.target's)
TARGET_FRACTION = 0.99
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
