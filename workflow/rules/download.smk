# torchvision datasets are fetched once, on the machine that runs Snakemake (a login node
# has network where compute nodes may not), or imported from a local copy where the config's
# data_from names one (bpfree download NAME --from PATH: checked against pinned digests).
# digits and mnist-5k ship with their packages: no job.
rule download:
    output:
        touch(f"{DATA_ROOT}/.bpfree/{{dataset}}.ready"),
    log:
        f"{LOGS}/download/{{dataset}}.log",
    localrule: True
    params:
        root=lambda wc, output: Path(output[0]).parent.parent,
        source=import_option,
    shell:
        "bpfree download {wildcards.dataset:q} --root {params.root:q} {params.source:q} > {log:q} 2>&1"
