"""Tier 4, many runs: hyperparameter tuning with Optuna (imports core up to engine): TPE maximising validation
accuracy over the paper's search spaces, a pruner on the per-epoch validation accuracy, each
trial a run specification trained as ``bpfree train`` trains it. docs/tuning.md says how this
compares with the paper's own protocol (univariate TPE seed 42; the median pruner for BP only).

One study per algorithm x dataset x architecture lives in a journal file
(``JournalStorage`` + ``JournalFileBackend``): every ask, report and tell is appended under a
file lock, so a killed job resumes where it stopped and several workers (SLURM jobs) can share
one study. The study's size is counted in finished trials, pruned and failed ones included, as
Optuna's ``study.optimize(n_trials=N)`` counts them, across restarts and workers alike; the best
is the best COMPLETE trial.

    space = search_space("bp", overrides)             # the paper's, overridden by the config
    result = tune(TuneJob(...))                       # ask -> fit -> tell until N finished
    write_best_params("best_params.yaml", result)     # what ``bpfree train --params`` reads

A trial never kills the study: divergence (NaN loss) is recorded PRUNED, an exception (out of
memory included) FAIL, each with its reason in the trial's ``reason`` user attribute. Nor does
a stop or a kill lose one: a stop signal abandons the running trial and a dead worker's trial
is put back, both into the study's queue with their params, not counted, and run first when
the study resumes, which then ends as it would have without them (:mod:`bpfree.tuning.stop`,
:mod:`bpfree.tuning.workers`, docs/resuming.md).

Every trial is accounted for, pruned and failed ones included: its epochs, wall time and
energy (a bpfree.measure Meter window around it, with the energy's source) are user
attributes in the journal, and after each trial the worker rewrites the study's trial table,
``STUDY.trials.csv`` beside the journal (:mod:`bpfree.report.cost` reads it into the cost table).
"""
