# One run: an algorithm on a dataset and architecture with one seed, with the tuned
# hyperparameters when tuning is configured.
rule train:
    input:
        unpack(train_inputs),
    output:
        metrics="results/runs/{dataset}/{arch}/{algorithm}/seed{seed}/metrics.json",
        history="results/runs/{dataset}/{arch}/{algorithm}/seed{seed}/history.csv",
    log:
        "logs/train/{dataset}/{arch}/{algorithm}/seed{seed}.log",
    # all local cores: one measured run at a time, so no run's time or energy is shared
    # with another's (on SLURM the profile's set-threads decides)
    threads: every_core
    params:
        arch=lambda wc: slug_to_arch(wc.arch),
        outdir=lambda wc, output: Path(output.metrics).parent,
        tuned=params_option,
        config_path=CONFIGFILE,
        device=config["device"],
        data_root=DATA_ROOT,
        # not on the command line: a changed section reruns the runs
        sections={
            k: config.get(k)
            for k in (
                "early_stopping",
                "measurement",
                "checkpoint_every_s",
                "precision",
            )
        },
    shell:
        "bpfree train --algorithm {wildcards.algorithm} --dataset {wildcards.dataset} "
        "--seed {wildcards.seed} --arch {params.arch} {params.tuned} "
        "--device {params.device} --threads {threads} --data-root {params.data_root} "
        "--config {params.config_path} --out {params.outdir} > {log} 2>&1"
