# torchvision datasets are fetched once, on the machine that runs Snakemake (a login node
# has network where compute nodes may not). digits ships with scikit-learn: no job.
rule download:
    output:
        touch(f"{DATA_ROOT}/.bpfree/{{dataset}}.ready"),
    log:
        "logs/download/{dataset}.log",
    localrule: True
    params:
        root=lambda wc, output: Path(output[0]).parent.parent,
    shell:
        "bpfree download {wildcards.dataset:q} --root {params.root:q} > {log:q} 2>&1"
