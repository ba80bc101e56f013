rule train:
    output:
        metrics="results/runs/{dataset}/{arch}/{algorithm}/seed{seed}/metrics.json",
        history="results/runs/{dataset}/{arch}/{algorithm}/seed{seed}/history.csv",
    log:
        "logs/train/{dataset}/{arch}/{algorithm}/seed{seed}.log",
    params:
        arch=lambda wc: slug_to_arch(wc.arch),
        outdir=lambda wc, output: Path(output.metrics).parent,
        data_root=config.get("data_root", "data"),
        device=config.get("device", "auto"),
        configfile=workflow.configfiles[0] if workflow.configfiles else "config/config.yaml",
    wildcard_constraints:
        seed=r"\d+",
    shell:
        "bpfree train --algorithm {wildcards.algorithm} --dataset {wildcards.dataset} "
        "--seed {wildcards.seed} --arch {params.arch} --device {params.device} "
        "--data-root {params.data_root} --config {params.configfile} "
        "--out {params.outdir} > {log} 2>&1"
