# Each figure is its own target: `snakemake --cores 1 fig_accuracy` rebuilds that one alone.
for name in FIGURES:

    rule:
        name:
            f"fig_{name}"
        input:
            tables=[f"results/tables/{t}.csv" for t in TABLES],
            histories="results/tables/histories.csv",
        output:
            svg=report(
                f"results/figures/{name}.svg",
                caption=f"../report/fig_{name}.rst",
                category="Figures",
            ),
            png=f"results/figures/{name}.png",
            html=f"results/figures/{name}.html",  # interactive; 1 MB each, kept out of the report
        log:
            f"logs/figures/{name}.log",
        localrule: True  # seconds of work: on the node that runs Snakemake, never queued
        params:
            name=name,
            tables=lambda wc, input: Path(input.histories).parent,
            out_dir=lambda wc, output: Path(output.svg).parent,
        shell:
            "bpfree figures {params.name:q} --tables {params.tables:q} "
            "--out {params.out_dir:q} > {log:q} 2>&1"


rule figures:
    input:
        all_figures(),
    localrule: True
