# One Optuna study per algorithm x dataset x architecture, in a journal beside
# best_params.yaml. The journal is not an output: Snakemake never deletes it, so an
# interrupted study resumes. With tune_workers: K, K-1 more jobs (tune_worker) join the
# same study at once (on SLURM: K jobs on K GPUs); --n-trials counts the study's complete
# trials across workers, and each worker ends only when the study has them all.
# Every trial, pruned and failed ones included, is a row of study.trials.csv beside the
# journal (its epochs, time and energy): the cost table (rule aggregate) reads it.


TUNE_SHELL = (
    "bpfree tune --algorithm {wildcards.algorithm:q} --dataset {wildcards.dataset:q} "
    "--arch {params.arch:q} --n-trials {params.n_trials} --storage {params.journal:q} "
    "--trials-out {params.trials:q} "
    "--out {output.best:q} --config {params.config_path:q} "
    "--device {params.device:q} --threads {threads} --data-root {params.data_root:q} > {log:q} 2>&1"
)


TUNE_PARAMS = dict(
    arch=lambda wc: slug_to_arch(wc.arch),
    journal=lambda wc: study_file(STUDY_JOURNAL, wc.dataset, wc.arch, wc.algorithm),
    trials=lambda wc: study_file(STUDY_TRIALS, wc.dataset, wc.arch, wc.algorithm),
    n_trials=study_n_trials,
    config_path=CONFIGFILE,
    device=CONFIG.device,
    data_root=DATA_ROOT,
    # not on the command line: a changed section reruns the study's jobs (every section a
    # study reads: bpfree.core.spec.STUDY_SECTIONS)
    sections={k: config.get(k) for k in STUDY_SECTIONS},
)


rule tune:
    input:
        unpack(dataset_ready),
    output:
        best=study_file(BEST_PARAMS),
        # rewritten from the journal after each trial by whichever worker ran it
        trials=study_file(STUDY_TRIALS),
    log:
        f"{LOGS}/tune/{{dataset}}/{{arch}}/{{algorithm}}.log",
    benchmark:  # Snakemake's measure (wall time, max RSS), beside the trials' own times
        tune_benchmark()
    threads: every_core
    resources:
        gpu=GPU_PER_JOB,
    params:
        **TUNE_PARAMS,
    shell:
        TUNE_SHELL


rule tune_worker:
    input:
        unpack(dataset_ready),
    output:
        best=study_file(WORKER_PARAMS),
    log:
        f"{LOGS}/tune/{{dataset}}/{{arch}}/{{algorithm}}.worker{{worker}}.log",
    benchmark:
        tune_benchmark(worker=True)
    threads: every_core
    resources:
        gpu=GPU_PER_JOB,
    params:
        **TUNE_PARAMS,
    shell:
        TUNE_SHELL
