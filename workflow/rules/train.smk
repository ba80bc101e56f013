# One run: an algorithm on a dataset and architecture with one seed. `spec` resolves it once
# (the config's settings, the study's best params, every default filled in) into the run's
# folder; `train` runs exactly that spec: `bpfree train --spec RUN/spec.yaml --out OTHER`
# re-runs it anywhere.
rule spec:
    input:
        unpack(spec_inputs),
    output:
        run_file(RUN_SPEC),
    log:
        f"{LOGS}/spec/{{dataset}}/{{arch}}/{{algorithm}}/seed{{seed}}.log",
    benchmark:  # its wall time, for bpfree plan's forecast
        spec_benchmark()
    localrule: True
    params:
        arch=lambda wc: slug_to_arch(wc.arch),
        tuned=params_option,
        paper=paper_values,  # not on the command line: a changed row rewrites the spec
        config_path=CONFIGFILE,
        device=CONFIG.device,
        data_root=DATA_ROOT,
        # not on the command line: a changed section rewrites the spec (and reruns the run)
        sections=RUN_SECTIONS,
    shell:
        "bpfree spec --algorithm {wildcards.algorithm:q} --dataset {wildcards.dataset:q} "
        "--seed {wildcards.seed:q} --arch {params.arch:q} {params.tuned:q} "
        "--device {params.device:q} --data-root {params.data_root:q} "
        "--config {params.config_path:q} --out {output:q} > {log:q} 2>&1"


rule train:
    input:
        unpack(dataset_ready),
        spec=rules.spec.output[0],  # the spec rule's output
    output:
        metrics=run_file(RUN_METRICS),
        history=run_file(RUN_HISTORY),
    log:
        f"{LOGS}/train/{{dataset}}/{{arch}}/{{algorithm}}/seed{{seed}}.log",
    # Snakemake's own measure of the job (wall time, max RSS): bpfree status sets it next
    # to the run's own time (metrics.json)
    benchmark:
        train_benchmark()
    # all local cores: one measured run at a time, so no run's time or energy is shared
    # with another's (on SLURM the profile's set-threads decides)
    threads: every_core
    resources:
        gpu=GPU_PER_JOB,
    params:
        outdir=lambda wc, output: Path(output.metrics).parent,
    shell:
        "bpfree train --spec {input.spec:q} --threads {threads} --out {params.outdir:q} > {log:q} 2>&1"
